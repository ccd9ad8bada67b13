"""Installed package versions: the one place they are collected.

Read from package metadata (nothing is imported), so asking is cheap and never fails.
Run folders (``version.json``), reports and the simulator's BIDS descriptions all call
:func:`package_versions` or :func:`package_version`.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence

#: What every run and checkpoint records (``version.json``).
RUNTIME_PACKAGES: tuple[str, ...] = ("brainxl", "torch", "deepspeed", "numpy")

#: What an evaluation report lists.
REPORT_PACKAGES: tuple[str, ...] = (
    "brainxl",
    "numpy",
    "scipy",
    "torch",
    "deepspeed",
    "mne",
    "matplotlib",
    "webdataset",
    "ray",
)


def package_version(name: str = "brainxl", missing: str = "unknown") -> str:
    """The installed version of distribution ``name``, or ``missing`` when absent.

    Parameters
    ----------
    name : str
        Distribution name as pip knows it.
    missing : str
        Returned when ``name`` is not installed.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return missing


def package_versions(
    packages: Sequence[str] = RUNTIME_PACKAGES,
    *,
    with_platform: bool = False,
    missing: str = "unknown",
) -> dict[str, str]:
    """Python's version, optionally the platform, then each package's version.

    Parameters
    ----------
    packages : sequence of str
        Distributions to look up (default :data:`RUNTIME_PACKAGES`).
    with_platform : bool
        Add ``platform`` (``platform.platform()``) after ``python``.
    missing : str
        Text for a package that is not installed.

    Returns
    -------
    versions : dict of str to str
        ``{"python": ..., ["platform": ...,] name: version, ...}`` in that order.
    """
    out = {"python": platform.python_version()}
    if with_platform:
        out["platform"] = platform.platform()
    for name in packages:
        out[name] = package_version(name, missing)
    return out
