"""The ``brainxl`` command line: one subcommand per module, imported lazily.

Each subcommand lives in ``launch/cmd_<name>.py`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports (torch, mne, ray)
belong inside ``run`` so that ``brainxl --help`` stays fast.

Every command speaks the same way: a user mistake raises one of :data:`USER_ERRORS`
(``ValueError`` and its kin: ``ConfigError``, ``ProfileError``, ``RunLockedError``, a
missing file) and :func:`main` prints it as one line, ``brainxl CMD: error: ...``, on
stderr with exit code 2. ``BRAINXL_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

#: Exceptions that mean "the user asked for something that cannot be done as asked".
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    PermissionError,
)

SUBCOMMANDS: dict[str, str] = {
    "quickstart": "brainxl.launch.cmd_quickstart",
    "simulate": "brainxl.launch.cmd_simulate",
    "shard": "brainxl.launch.cmd_shard",
    "models": "brainxl.launch.cmd_models",
    "train": "brainxl.launch.cmd_train",
    "pretrain": "brainxl.launch.cmd_pretrain",
    "convert-labram": "brainxl.launch.cmd_convert_labram",
    "evaluate": "brainxl.launch.cmd_evaluate",
    "predict": "brainxl.launch.cmd_predict",
    "submit": "brainxl.launch.cmd_submit",
    "status": "brainxl.launch.cmd_status",
    "logs": "brainxl.launch.cmd_logs",
    "collect": "brainxl.launch.cmd_collect",
    "sweep": "brainxl.launch.cmd_sweep",
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


def error_line(err: BaseException) -> str:
    """One line for a user mistake: the message, or an OS error's reason and path."""
    if isinstance(err, OSError) and err.strerror:
        where = f": {err.filename}" if err.filename else ""
        text = f"{err.strerror}{where}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``brainxl`` console script; returns the exit code.

    A user mistake in any command becomes one line on stderr and exit code 2; a local
    rank that failed, its log's tail and exit code 1; Ctrl-C exit code 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    prog = f"brainxl {args.command}"
    debug = os.environ.get("BRAINXL_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        from brainxl.launch.local import RankFailedError

        if isinstance(err, RankFailedError):
            print(f"{prog}: error: {err}", file=sys.stderr)
            return 1
        if not isinstance(err, USER_ERRORS):
            raise
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
