"""``brainxl simulate OUT``: write the simulated EEG-fMRI BIDS dataset.

``brainxl simulate OUT --eeg-only --subjects N --minutes M [--montages ...] [--rates ...]``
writes an EEG-only pretraining corpus instead (:mod:`brainxl.simulator.eeg_corpus`):
subjects cycle through montages and native sampling rates, no BOLD. ``--brain-of BIDS``
records the population of brains of a simulated EEG-fMRI dataset.
"""

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
        "--eeg-only",
        action="store_true",
        help="EEG without BOLD for pretraining: many subjects over --montages and --rates",
    )
    parser.add_argument(
        "--montages",
        default="biosemi32,biosemi64,easycap-M1,clinical19",
        help="--eeg-only: montages subjects cycle through (biosemi32,biosemi64,easycap-M1,"
        "clinical19)",
    )
    parser.add_argument(
        "--rates",
        default="250,500,512,1000",
        help="--eeg-only: native sampling rates in Hz subjects cycle through (250,500,512,1000)",
    )
    parser.add_argument(
        "--brain-of",
        metavar="BIDS",
        default="",
        help="--eeg-only: record the brains of this `brainxl simulate` dataset's population "
        "(its sources and parcels) with every montage, as real corpora share human anatomy; "
        "by default each montage gets a brain of its own",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="allow writing into a non-empty OUT"
    )


def run(args: argparse.Namespace) -> int:
    """Run the simulation; return 0 on success, 2 on a user mistake."""
    from brainxl.launch.progress import progress_bar, say

    if args.eeg_only:
        return _run_eeg_only(args)
    if args.brain_of:
        raise ValueError("--brain-of goes with --eeg-only (a pretraining corpus); add or drop it")
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


def _run_eeg_only(args: argparse.Namespace) -> int:
    from brainxl.launch.progress import progress_bar, say

    from brainxl.simulator.eeg_corpus import simulate_eeg_corpus

    if args.meg:
        raise ValueError("--meg is not available with --eeg-only; drop one of them")
    brain = brain_name = None
    if args.brain_of:
        from brainxl.simulator.truth import dataset_brain

        brain = dataset_brain(args.brain_of)
        brain_name = f"those of {args.brain_of}"
    n_models = len(dict.fromkeys(m for m in args.montages.split(",") if m.strip()))
    bar = progress_bar(args.subjects + n_models, "simulate", unit="step")

    def progress(message: str) -> None:
        say(bar, message)
        bar.update()

    with bar:
        summary = simulate_eeg_corpus(  # a ValueError is a user mistake: one line from cli.main
            args.out,
            args.subjects,
            args.minutes,
            args.seed,
            montages=args.montages,
            rates=args.rates,
            brain=brain,
            brain_name=brain_name,
            task=args.task,
            overwrite=args.overwrite,
            progress=progress,
        )
    print(summary.format())
    if brain_name:
        print(f"brains: {brain_name} (its sources and parcels) for every montage")
    return 0
