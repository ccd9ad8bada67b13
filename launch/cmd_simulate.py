"""``brainxl simulate OUT``: write the simulated EEG-fMRI BIDS dataset."""

from __future__ import annotations

import argparse

HELP = "simulate a physically grounded EEG-fMRI dataset and write it as BIDS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to ``parser``."""
    parser.add_argument("out", help="BIDS root to create (must be empty or missing)")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects (4)")
    parser.add_argument("--minutes", type=float, default=10.0, help="BOLD run length (10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--montage", default="biosemi64", help="MNE montage name (biosemi64)")
    parser.add_argument("--parcels", type=int, default=64, help="number of parcels (64)")
    parser.add_argument("--sfreq", type=float, default=250.0, help="EEG sampling rate (250)")
    parser.add_argument("--tr", type=float, default=2.0, help="repetition time in s (2.0)")
    parser.add_argument("--lead-in", type=float, default=20.0, help="EEG s before volume 1 (20)")
    parser.add_argument("--task", default="rest", help="BIDS task label (rest)")
    parser.add_argument(
        "--format", dest="fmt", choices=("BrainVision", "EDF"), default="BrainVision"
    )
    parser.add_argument(
        "--channel-style",
        choices=("standard", "legacy"),
        default="standard",
        help="legacy = clinical labels such as 'EEG T3-REF'",
    )
    parser.add_argument("--meg", action="store_true", help="also simulate 306-channel MEG")
    parser.add_argument(
        "--overwrite", action="store_true", help="allow writing into a non-empty OUT"
    )


def run(args: argparse.Namespace) -> int:
    """Run the simulation; return 0 on success, 2 on a user mistake."""
    from brainxl.launch.progress import progress_bar, say

    from brainxl.simulator import simulate_dataset

    bar = progress_bar(args.subjects + 1, "simulate", unit="step")  # head model + subjects

    def progress(message: str) -> None:
        say(bar, message)
        bar.update()

    with bar:
        summary = simulate_dataset(  # a ValueError is a user mistake: one line from cli.main
            args.out,
            args.subjects,
            args.minutes,
            args.seed,
            montage=args.montage,
            n_parcels=args.parcels,
            sfreq=args.sfreq,
            tr=args.tr,
            fmt=args.fmt,
            channel_style=args.channel_style,
            meg=args.meg,
            lead_in=args.lead_in,
            task=args.task,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(summary.format())
    return 0
