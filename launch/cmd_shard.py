"""``brainxl shard``: BIDS dataset -> per-subject WebDataset shards + manifest, or verify them.

Usage::

    brainxl shard BIDS_DIR OUT [--workers N] [--config data.yaml] [--segment-trs K]
                  [--source-recon] [--verify]
    brainxl shard SRC OUT --eeg-only [--dataset NAME] [--segment-s S] [--workers N]
                  [--config data.yaml] [--verify]
    brainxl shard --verify OUT

``--eeg-only`` writes pretraining shards without BOLD (``shards.eeg_writer``): SRC is a
BIDS folder with EEG (or MEG, with ``preprocess.ch_types``), BOLD or not, or a quoted glob
of EDF/BDF/BrainVision/EEGLAB/FIF recordings (``'recs/**/*.edf'``). Channels without a
vocabulary entry are reported on stderr (one line per file and channel) and dropped.

The YAML config holds ``ingest:`` (``shards.config.IngestConfig``) and ``sharding:``
(``shards.config.ShardingConfig``) blocks, optionally under a top-level ``data:`` key.
Unknown keys fail, naming the key; a ``reader:`` block fails too (how windows are read is
the run config's ``data.reader``, read by ``brainxl train``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainxl.shards.config import IngestConfig, ShardingConfig

HELP = (
    "Cut a BIDS dataset (or, with --eeg-only, EEG recordings) into WebDataset shards with a "
    "manifest (or --verify them)."
)


@dataclass
class ShardFileConfig:
    """The parts of a data YAML that ``brainxl shard`` reads."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``shard`` arguments."""
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="BIDS_DIR OUT; with --eeg-only SRC OUT (SRC: BIDS folder or quoted glob of "
        "recordings); OUT alone with --verify",
    )
    parser.add_argument(
        "--eeg-only",
        action="store_true",
        help="pretraining shards without BOLD from a BIDS folder or a glob of recordings",
    )
    parser.add_argument(
        "--dataset", default="", help="dataset name in an EEG-only manifest (default: folder)"
    )
    parser.add_argument(
        "--segment-s", type=float, default=None, help="EEG-only: seconds per stored segment"
    )
    parser.add_argument("--workers", type=int, default=None, help="parallel subjects")
    parser.add_argument("--config", type=Path, default=None, help="data YAML (ingest/sharding)")
    parser.add_argument("--segment-trs", type=int, default=None, help="TRs per stored segment")
    parser.add_argument(
        "--source-recon", action="store_true", help="also store source-reconstructed parcels"
    )
    parser.add_argument(
        "--verify", action="store_true", help="re-read every shard against the manifest"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_config(path: Path | None) -> ShardFileConfig:
    """Merge a data YAML onto the defaults (OmegaConf structured config).

    Raises
    ------
    ValueError
        Naming the file and the unknown or mistyped key.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    base = OmegaConf.structured(ShardFileConfig)
    if path is None:
        return OmegaConf.to_object(base)  # type: ignore[return-value]
    if not path.is_file():
        raise ValueError(f"{path}: config file not found; fix --config")
    try:
        loaded = OmegaConf.load(path)
        if "data" in loaded and len(loaded) == 1:
            loaded = loaded.data
        for k in list(loaded.keys()):  # keys owned by other commands (model/train) are not ours
            if k == "reader":
                raise ValueError(
                    f"{path}: a 'reader:' block is not a sharding setting (the shards do not "
                    "depend on it); move it to the run config as data.reader (e.g. "
                    "configs/neurobolt-debug.yaml) and remove it here"
                )
            if k not in ("ingest", "sharding"):
                raise ValueError(
                    f"{path}: unknown key '{k}'; valid top-level keys are ingest, sharding"
                )
        merged = OmegaConf.merge(base, loaded)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or ""
        raise ValueError(
            f"{path}: invalid key '{key}': {err.msg if hasattr(err, 'msg') else err}"
        ) from None
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def print_summary(manifest: dict[str, Any], out: Any = None) -> None:
    """Print one row per subject plus the total: runs, samples, TRs, hours, bytes."""
    out = out or sys.stdout
    head = f"{'subject':<10}{'runs':>6}{'samples':>9}{'TRs':>8}{'hours':>8}{'shards':>8}{'MB':>10}"
    print(head, file=out)
    for s, f in sorted(manifest["subjects"].items()):
        mb = sum(x["bytes"] for x in f["shards"]) / 1e6
        print(
            f"{'sub-' + s:<10}{len(f['runs']):>6}{f['n_samples']:>9}{f['n_trs']:>8}"
            f"{f['hours']:>8.2f}{len(f['shards']):>8}{mb:>10.1f}",
            file=out,
        )
    t = manifest["totals"]
    print(
        f"{'total':<10}{t['n_runs']:>6}{t['n_samples']:>9}{t['n_trs']:>8}{t['hours']:>8.2f}"
        f"{t['n_shards']:>8}{t['bytes'] / 1e6:>10.1f}",
        file=out,
    )
    print(
        f"sfreq {manifest['sfreq']} Hz, TR {manifest['tr'] or manifest['trs']} s, "
        f"{len(manifest['ch_names'] or [])} channels, {len(manifest['roi_names'])} ROIs, "
        f"{len(manifest['parcel_names'])} parcels",
        file=out,
    )


def print_eeg_summary(manifest: dict[str, Any], out: Any = None) -> None:
    """EEG-only shards: one row per dataset and montage size, then the total."""
    out = out or sys.stdout
    head = f"{'dataset':<16}{'subjects':>9}{'runs':>6}{'hours':>8}{'montages':>9}  native Hz"
    print(head, file=out)
    for name, d in sorted(manifest["datasets"].items()):
        runs = sum(len(manifest["subjects"][s]["runs"]) for s in d["subjects"])
        rates = ",".join(f"{r:g}" for r in d["native_sfreqs"])
        print(
            f"{name:<16}{len(d['subjects']):>9}{runs:>6}{d['hours']:>8.2f}"
            f"{len(d['montages']):>9}  {rates}",
            file=out,
        )
    t = manifest["totals"]
    sizes = sorted({len(m["ch_names"]) for m in manifest["montages"]})
    print(
        f"total: {t['n_subjects']} subjects, {t['n_samples']} segments, {t['hours']:.2f} h, "
        f"{t['n_shards']} shards, {t['bytes'] / 1e6:.1f} MB; {len(manifest['montages'])} "
        f"montage(s) of {sizes} channels, stored at {manifest['sfreq']:g} Hz",
        file=out,
    )


def _verify(out: Path, quiet: bool = False) -> int:
    from brainxl.launch.progress import progress_bar
    from brainxl.shards.verify import verify_shards

    with progress_bar(None, "verify", unit="shard", disable=True if quiet else None) as bar:

        def tick(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        problems = verify_shards(out, on_shard=tick)
    if problems:
        for p in problems:
            print(f"BAD {p}", file=sys.stderr)
        print(
            f"{len(problems)} bad file(s) under {out}; re-run `brainxl shard` to rewrite them",
            file=sys.stderr,
        )
        return 1
    print(f"{out}: all shards match the manifest")
    return 0


def run(args: argparse.Namespace) -> int:
    """Shard (and optionally verify) or only verify; return the exit code."""
    from dataclasses import asdict

    if len(args.paths) == 1:
        if not args.verify:
            raise ValueError("need BIDS_DIR OUT (or --verify OUT)")
        return _verify(Path(args.paths[0]), quiet=args.quiet)
    if len(args.paths) != 2:
        hint = (
            " (quote the glob so the shell does not expand it)"
            if args.eeg_only and len(args.paths) > 2
            else ""
        )
        raise ValueError(f"expected SRC OUT, got {len(args.paths)} paths{hint}")
    bids, out = Path(args.paths[0]), Path(args.paths[1])
    conf = load_config(args.config)  # a mistake: one line from cli.main
    if args.workers is not None:
        conf.sharding.workers = args.workers
    if args.segment_trs is not None:
        conf.sharding.segment_trs = args.segment_trs
    if args.segment_s is not None:
        conf.sharding.segment_s = args.segment_s
    if args.source_recon:
        conf.ingest.source.enabled = True
    if args.eeg_only:
        from brainxl.shards.eeg_writer import shard_eeg

        manifest = shard_eeg(
            args.paths[0],
            out,
            conf.ingest,
            conf.sharding,
            dataset=args.dataset,
            progress=not args.quiet,
        )
        print_eeg_summary(manifest)
        print(f"wrote {out / 'manifest.json'}  (EEG-only, {conf.sharding.segment_s:g} s segments)")
        return _verify(out, quiet=args.quiet) if args.verify else 0
    if bids.is_file() or any(c in args.paths[0] for c in "*?["):
        raise ValueError(
            f"{bids}: not a folder; give a BIDS dataset, or pass --eeg-only to shard "
            "recordings listed by a glob (without BOLD)"
        )
    from brainxl.shards.writer import shard_bids

    manifest = shard_bids(bids, out, conf.ingest, conf.sharding, progress=not args.quiet)
    print_summary(manifest)
    print(f"wrote {out / 'manifest.json'}  (sharding: {asdict(conf.sharding)})")
    if args.verify:
        return _verify(out, quiet=args.quiet)
    return 0
