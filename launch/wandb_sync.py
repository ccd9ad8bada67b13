"""Tell the user how to upload W&B runs that ran offline (the default on compute nodes).

``train``, ``evaluate`` and ``quickstart`` end with :func:`print_sync_hint`: when the run
folder holds offline W&B runs that were never synced, the last lines give the exact
``wandb sync`` command.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path


def unsynced_offline_runs(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Offline W&B run folders under ``<run_dir>/wandb`` that ``wandb sync`` has not marked.

    ``wandb sync`` leaves a ``run-<id>.wandb.synced`` file beside the run's data once it
    uploaded it.
    """
    root = Path(run_dir) / "wandb"
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob("offline-run-*")):
        data = list(d.glob("*.wandb"))
        if d.is_dir() and data and not all(Path(f"{f}.synced").exists() for f in data):
            out.append(d)
    return out


def sync_hint(run_dirs: Iterable[str | os.PathLike[str]]) -> str | None:
    """The ``wandb sync`` lines for ``run_dirs``, None when nothing waits to be uploaded."""
    runs = [p for d in run_dirs for p in unsynced_offline_runs(d)]
    if not runs:
        return None
    args = " ".join(shlex.quote(str(p)) for p in runs)
    return f"W&B ran offline; upload with (where there is network):\n  wandb sync {args}"


def print_sync_hint(*run_dirs: str | os.PathLike[str]) -> None:
    """Print :func:`sync_hint` when there is something to sync."""
    hint = sync_hint(run_dirs)
    if hint:
        print(hint)
