"""The ``brainxl`` command line: one subcommand per module, imported lazily.

Each subcommand lives in ``launch/cmd_<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch, mne, ray)
belong inside ``run`` so that ``brainxl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, str] = {
    "quickstart": "brainxl.launch.cmd_quickstart",
    "simulate": "brainxl.launch.cmd_simulate",
    "shard": "brainxl.launch.cmd_shard",
    "models": "brainxl.launch.cmd_models",
    "train": "brainxl.launch.cmd_train",
    "evaluate": "brainxl.launch.cmd_evaluate",
    "predict": "brainxl.launch.cmd_predict",
    "submit": "brainxl.launch.cmd_submit",
    "status": "brainxl.launch.cmd_status",
    "logs": "brainxl.launch.cmd_logs",
    "collect": "brainxl.launch.cmd_collect",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, modname in SUBCOMMANDS.items():
        try:
            mods[name] = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name != modname:
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="brainxl",
        description="Translate brain activity between EEG/MEG and fMRI BOLD, from a laptop "
        "to a SLURM cluster.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in _available().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainxl`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
