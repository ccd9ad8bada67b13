"""Run the BIDS validator (PyPI ``bids-validator-deno``) on a dataset."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def find_validator() -> str | None:
    """Path of the ``bids-validator-deno`` executable (beside Python first), or None."""
    beside = Path(sys.executable).parent / "bids-validator-deno"
    if beside.exists():
        return str(beside)
    return shutil.which("bids-validator-deno")


def validate_bids(root: str | Path, timeout: float = 300.0) -> dict[str, Any]:
    """Validate ``root`` and return the validator's JSON report.

    Parameters
    ----------
    root : str or Path
        BIDS dataset root (``derivatives/`` is skipped by the validator).
    timeout : float
        Seconds before the validator is killed.

    Returns
    -------
    report : dict
        ``report["issues"]["issues"]`` lists issues with a ``"severity"`` of
        ``"error"`` or ``"warning"``; ``report["summary"]`` describes the dataset.

    Raises
    ------
    FileNotFoundError
        When ``bids-validator-deno`` is not installed (``pip install bids-validator-deno``).
    """
    exe = find_validator()
    if exe is None:
        raise FileNotFoundError(
            "bids-validator-deno is not installed: pip install bids-validator-deno "
            "(part of the dev extras)"
        )
    proc = subprocess.run(
        [exe, "--format", "json", str(root)], capture_output=True, text=True, timeout=timeout
    )
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as err:
        raise RuntimeError(
            f"bids-validator-deno gave no JSON report for {root} (exit {proc.returncode}): "
            f"{proc.stderr[-2000:]}"
        ) from err


def validation_errors(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issues of severity "error" in a :func:`validate_bids` report."""
    return [i for i in report["issues"]["issues"] if i.get("severity") == "error"]
