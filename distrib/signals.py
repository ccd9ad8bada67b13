"""Stop requests from outside the loop (SLURM's USR2 before a time limit or preemption).

A launcher's signal handler calls :func:`request_stop`; the trainer polls
:func:`stop_requested` after every optimizer step, agrees across ranks (the signal may
reach only rank 0), saves a checkpoint on every rank and returns early, so the requeued
job resumes from the step the signal arrived at instead of the last periodic save.
"""

from __future__ import annotations

_REQUESTS: list[str] = []


def request_stop(reason: str = "signal") -> None:
    """Ask the running trainer to checkpoint and return at its next step (signal-safe)."""
    _REQUESTS.append(reason)


def stop_requested() -> bool:
    """True once :func:`request_stop` was called in this process."""
    return bool(_REQUESTS)


def clear() -> None:
    """Forget earlier requests (a new job attempt in the same process)."""
    _REQUESTS.clear()
