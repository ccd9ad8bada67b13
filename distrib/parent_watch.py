"""Processes that end with the process that started them (``kill -9`` of a launcher).

``brainxl train --nproc N`` starts its ranks as child processes, and a sweep trial runs
in a Ray worker that the node's raylet started. When the parent is killed outright
(``kill -9``, the OOM killer) nothing tells the children: they would train on, write into
the run folder and hold its lock while the user's rerun resumes the same run. A child
that calls :func:`exit_with_parent` watches its parent and kills itself (SIGKILL, as its
parent was) as soon as it is re-parented; its checkpoints are written atomically, so the
rerun resumes from the last complete one.

Polling ``getppid`` (rather than Linux's ``PR_SET_PDEATHSIG``) fires on the death of the
parent *process*, not of the thread that started the child, and works on macOS too.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

#: Set by the local launcher in every rank's environment: the launcher's pid.
LAUNCHER_PID_ENV = "BRAINXL_LAUNCHER_PID"

_watched: int | None = None
_lock = threading.Lock()


def _forget_in_child() -> None:  # a forked child has no watch thread
    global _watched
    _watched = None


os.register_at_fork(after_in_child=_forget_in_child)


def exit_with_parent(parent: int | None = None, *, interval_s: float = 0.2) -> bool:
    """Kill this process when ``parent`` (default: the current parent) is gone.

    A daemon thread compares ``os.getppid()`` with ``parent`` every ``interval_s``. One
    watch per process: later calls return False and change nothing.

    Parameters
    ----------
    parent : int, optional
        The pid this process must outlive no longer than ``interval_s``. If it is not the
        parent any more when called (it died already), the process is killed at once.
    interval_s : float
        Polling period in seconds.

    Returns
    -------
    started : bool
        True when this call started the watch.
    """
    global _watched
    parent = os.getppid() if parent is None else parent
    with _lock:
        if _watched is not None:
            return False
        _watched = parent
    if os.getppid() != parent:
        _exit_orphaned(parent)

    def _watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                _exit_orphaned(parent)

    threading.Thread(target=_watch, name="brainxl-parent-watch", daemon=True).start()
    return True


def _exit_orphaned(parent: int) -> None:
    print(
        f"brainxl: parent process {parent} is gone; process {os.getpid()} exits "
        "(the same command resumes from the last checkpoint)",
        file=sys.stderr,
        flush=True,
    )
    os.kill(os.getpid(), signal.SIGKILL)


def watch_launcher() -> bool:
    """In a rank started by the local launcher: exit with it (no-op elsewhere).

    Reads (and removes, so processes this rank starts do not inherit it) the launcher's
    pid from ``BRAINXL_LAUNCHER_PID``.

    Returns
    -------
    started : bool
        True when a watch was started.
    """
    pid = os.environ.pop(LAUNCHER_PID_ENV, "")
    return exit_with_parent(int(pid)) if pid.isdigit() else False
