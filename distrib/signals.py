"""Stop requests from outside the loop: the one owner of SIGUSR2 (and SLURM's SIGTERM).

SLURM sends USR2 ``signal_delay_s`` before a time limit or a preemption. Whoever started
the ranks installs the handler from here: the entry point (:func:`ensure_stop_handler`)
when nothing else did, the local launcher (:class:`StopSignals` with ``forward=``, so every
rank hears it) and the SLURM job (:class:`StopSignals` with ``watch_term=True``, which
later hands the signal to submitit's own handler to checkpoint and requeue).

In a SLURM job, SIGTERM (a requeue, a preemption, a cancel: SLURM sends SIGKILL
``KillWait`` seconds later) is a stop request as well: the trainer saves at its next step
instead of training on into the kill and losing the steps since the last periodic save.
It is not handed to submitit (SLURM is already requeueing or cancelling the job).

The handler only records the request (:func:`request_stop`, signal-safe); the trainer
polls :func:`stop_requested` after every optimizer step, agrees across ranks (the signal
may reach only rank 0), saves a checkpoint on every rank and returns early, so the
requeued job resumes from the step the signal arrived at instead of the last periodic save.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

#: The signal that asks a run to save and stop (SLURM: ``--signal=USR2@N``).
STOP_SIGNAL = signal.SIGUSR2

_REQUESTS: list[str] = []
_KILLS: list[str] = []


def request_stop(reason: str = "signal") -> None:
    """Ask the running trainer to checkpoint and return at its next step (signal-safe)."""
    _REQUESTS.append(reason)


def stop_requested() -> bool:
    """True once :func:`request_stop` was called in this process."""
    return bool(_REQUESTS)


def stop_reason() -> str | None:
    """Why the first stop was requested (``"SIGUSR2"``...), None when none was."""
    return _REQUESTS[0] if _REQUESTS else None


def kill_seen() -> bool:
    """True once a :class:`StopSignals` with ``watch_term=True`` saw SIGTERM (SLURM is
    requeueing or cancelling the job)."""
    return bool(_KILLS)


def record_kill(reason: str = "SIGTERM") -> None:
    """Note that the job is being killed (what the SIGTERM handler calls)."""
    _KILLS.append(reason)


def clear() -> None:
    """Forget earlier stop and kill notes (a new job attempt in the same process)."""
    _REQUESTS.clear()
    _KILLS.clear()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _on_stop(signum: int, frame: FrameType | None) -> None:
    request_stop(signal.Signals(signum).name)


def ensure_stop_handler() -> bool:
    """Save-and-stop on USR2 unless something (a launcher, submitit) already handles it.

    Returns
    -------
    installed : bool
        True when this call installed the handler.
    """
    if not _in_main_thread():
        return False
    if signal.getsignal(STOP_SIGNAL) not in (signal.SIG_DFL, None):
        return False
    signal.signal(STOP_SIGNAL, _on_stop)
    return True


class StopSignals:
    """Own USR2 (and optionally SIGTERM) while a launcher or a SLURM job runs.

    On USR2 the request is recorded (:func:`stop_requested`) and ``forward(signum)`` is
    called (a launcher passes the signal on to its rank processes). The handlers that
    were there before come back on exit. Outside the main thread this does nothing.

    Parameters
    ----------
    forward : callable, optional
        Called with the signal number after the request is recorded.
    watch_term : bool
        Also take SIGTERM as a stop request, record it (:func:`kill_seen`) and pass it on
        to the previous handler (submitit logs and ignores it; the default action
        terminates the process).

    Attributes
    ----------
    previous : handler
        The USR2 handler installed before (submitit's checkpoint-and-requeue in a job).
    """

    def __init__(
        self, *, forward: Callable[[int], None] | None = None, watch_term: bool = False
    ) -> None:
        self.forward = forward
        self.watch_term = watch_term
        self.previous: Any = None
        self._previous_term: Any = None
        self._installed = False

    def _on_usr2(self, signum: int, frame: FrameType | None) -> None:
        request_stop(signal.Signals(signum).name)
        if self.forward is not None:
            self.forward(signum)

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        record_kill(signal.Signals(signum).name)
        request_stop(signal.Signals(signum).name)
        prev = self._previous_term
        if callable(prev):
            prev(signum, frame)
        elif prev != signal.SIG_IGN:  # the default action: terminate as if not caught
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def __enter__(self) -> StopSignals:
        if not _in_main_thread():
            return self
        self.previous = signal.signal(STOP_SIGNAL, self._on_usr2)
        if self.watch_term:
            self._previous_term = signal.signal(signal.SIGTERM, self._on_term)
        self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._installed:
            return
        signal.signal(STOP_SIGNAL, self.previous if self.previous is not None else signal.SIG_DFL)
        if self.watch_term:
            prev = self._previous_term
            signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)
        self._installed = False

    def call_previous(self) -> bool:
        """Hand a USR2 stop to the previous USR2 handler (submitit: checkpoint and
        requeue). Returns False when there was none, or the first stop was not USR2."""
        if stop_reason() != STOP_SIGNAL.name or not callable(self.previous):
            return False
        self.previous(STOP_SIGNAL, None)
        return True
