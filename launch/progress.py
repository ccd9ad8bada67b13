"""Progress bars for long command steps: tqdm on stderr, quiet when stderr is not a tty.

Commands print their results on stdout; the bar lives on stderr so that piping a
command's output (or a log file) never captures bar redraws.
"""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(
    total: int | None, desc: str, *, unit: str = "it", disable: bool | None = None
) -> Any:
    """A ``tqdm`` bar on stderr.

    Parameters
    ----------
    total : int or None
        Number of steps (None: a counter without a known end).
    desc : str
        Label in front of the bar.
    unit : str
        What one step is (``"subject"``, ``"shard"``).
    disable : bool or None
        True: no bar; None (default): a bar only when stderr is a terminal.

    Returns
    -------
    bar : tqdm.tqdm
        Use as a context manager; ``bar.update()`` per step.
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, leave=False)


def say(bar: Any, message: str) -> None:
    """Print ``message`` on stdout above ``bar`` (the bar is redrawn below it)."""
    bar.write(message, file=sys.stdout)
