"""``brainxl convert-labram SRC DST``: an official LaBraM checkpoint -> brainxl encoder weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = (
    "Convert an official LaBraM checkpoint (.pth) into brainxl encoder weights for "
    "model.pretrained=DST."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``src``, ``dst``, ``--max-patches`` and ``--overwrite``."""
    parser.add_argument("src", type=Path, help="official checkpoint ({'model': state_dict})")
    parser.add_argument("dst", type=Path, help="output .pt file (brainxl weights)")
    parser.add_argument(
        "--max-patches", type=int, default=None, help="temporal rows (default: the file's)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")


def run(args: argparse.Namespace) -> int:
    """Convert, print what was mapped and what was not; returns the exit code."""
    from brainxl.models.labram_convert import convert_official_checkpoint

    if args.dst.exists() and not args.overwrite:
        print(
            f"brainxl convert-labram: {args.dst} exists; pass --overwrite to replace it",
            file=sys.stderr,
        )
        return 2
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        report = convert_official_checkpoint(args.src, args.dst, args.max_patches)
    except ValueError as err:
        print(f"brainxl convert-labram: {err}", file=sys.stderr)
        return 2
    print(f"{args.src} -> {args.dst}: {report}")
    print(f"use it with: brainxl train CONFIG model.pretrained={args.dst}")
    return 0
