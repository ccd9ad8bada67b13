"""The in-memory contract between BIDS ingest and sharding.

Ingest (``shards.ingest.bids`` + ``shards.ingest.preprocess``) turns one BIDS run into a
:class:`Recording`; the shard writer cuts it into contiguous segments. Nothing
downstream reads BIDS files again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _check_ephys_rows(ephys: np.ndarray, ch_names: list[str], src: str) -> None:
    """Raise ValueError (naming ``src``) unless ``ephys`` is 2-D with a row per channel."""
    if ephys.ndim != 2 or ephys.shape[0] != len(ch_names):
        raise ValueError(f"{src}: ephys has shape {ephys.shape} but {len(ch_names)} channel names")


def _check_finite(data: np.ndarray, src: str, what: str) -> None:
    """Raise ValueError (naming ``src`` and ``what``) if ``data`` holds NaN or inf."""
    if not np.isfinite(data).all():
        raise ValueError(f"{src}: {what} contains NaN or infinite values")


@dataclass
class Recording:
    """One synchronised electrophysiology + BOLD run of one subject.

    Attributes
    ----------
    subject, session, task, run : str
        BIDS entities without prefixes (``"01"``, ``"1"``, ``"rest"``, ``"1"``);
        session/run may be ``""`` when the dataset has none.
    ephys : ndarray, shape (n_channels, n_times), float32
        Preprocessed sensor data in microvolts (EEG) or femtotesla (MEG), time zero at
        the onset of the first BOLD volume.
    sfreq : float
        Sampling rate of ``ephys`` in Hz.
    ch_names : list of str
        Canonical channel names (see :mod:`brainxl.channels`), one per row of ``ephys``.
    ch_types : list of str
        ``"eeg"`` or ``"mag"``/``"grad"`` per channel.
    bold : ndarray, shape (n_rois, n_trs), float32
        BOLD per ROI/parcel; column k is the volume acquired at ``k * tr`` seconds.
    tr : float
        Repetition time in seconds.
    roi_names : list of str
        One name per row of ``bold``.
    lead_in : float
        Seconds of ``ephys`` available before the first volume (may be 0); ``ephys``
        then starts at ``-lead_in`` seconds, i.e. sample ``i`` is at
        ``i / sfreq - lead_in``.
    parcels : ndarray, shape (n_parcels, n_times), float32 or None
        Source-reconstructed parcel time series on the same time grid as ``ephys``.
    parcel_names : list of str
        One name per row of ``parcels``.
    source_files : dict of str to str
        Which files this recording came from (``{"ephys": path, "bold": path}``).
    assumptions : list of str
        Everything inferred rather than read (e.g. "synchronised at run start: no
        volume triggers found").
    extra : dict
        Anything else worth carrying into the sample metadata (JSON-serialisable).
    """

    subject: str
    session: str
    task: str
    run: str
    ephys: np.ndarray
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    bold: np.ndarray
    tr: float
    roi_names: list[str]
    lead_in: float = 0.0
    parcels: np.ndarray | None = None
    parcel_names: list[str] = field(default_factory=list)
    source_files: dict[str, str] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Dot-free identifier ``sub-01_ses-1_task-rest_run-1`` (empty entities omitted)."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        parts.append(f"task-{self.task}")
        if self.run:
            parts.append(f"run-{self.run}")
        return "_".join(parts).replace(".", "")

    def validate(self) -> None:
        """Check shapes, dtypes and finiteness; raise ValueError naming the source file."""
        src = self.source_files.get("ephys", self.key)
        _check_ephys_rows(self.ephys, self.ch_names, src)
        if self.bold.ndim != 2 or self.bold.shape[0] != len(self.roi_names):
            raise ValueError(
                f"{self.source_files.get('bold', self.key)}: bold has shape {self.bold.shape} "
                f"but {len(self.roi_names)} ROI names"
            )
        _check_finite(self.ephys, src, "electrophysiology")
        _check_finite(self.bold, self.source_files.get("bold", self.key), "BOLD")
        needed = (self.bold.shape[1] - 1) * self.tr + self.lead_in
        have = self.ephys.shape[1] / self.sfreq
        if have + 1.0 / self.sfreq < needed:
            raise ValueError(
                f"{src}: electrophysiology covers {have:.1f} s but the BOLD run needs "
                f"{needed:.1f} s; trim the BOLD run or supply the full recording"
            )


@dataclass
class EEGRecording:
    """One preprocessed electrophysiology recording without BOLD (EEG-only shards).

    Attributes
    ----------
    subject, session, task, run : str
        Entities without prefixes (``""`` when absent; a file listed by a glob gets its
        subject from its path, see :mod:`shards.ingest.eeg_only`).
    dataset : str
        The dataset the recording belongs to (one name per ``brainxl shard`` call).
    ephys : ndarray, shape (n_channels, n_times), float32
        Preprocessed data in microvolts (EEG) or femtotesla (MEG).
    sfreq : float
        Sampling rate of ``ephys`` in Hz (after resampling).
    ch_names : list of str
        Canonical channel names, one per row of ``ephys`` (the montage).
    ch_types : list of str
    native_sfreq : float
        Sampling rate of the file as recorded.
    native_n_times : int
        Samples in the file as recorded.
    dropped_channels : list of str
        Recorded names of the channels dropped because they have no vocabulary entry.
    source_files : dict of str to str
        ``{"ephys": path}``.
    assumptions : list of str
        Everything inferred or dropped while reading.
    """

    subject: str
    session: str
    task: str
    run: str
    dataset: str
    ephys: np.ndarray
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    native_sfreq: float
    native_n_times: int
    dropped_channels: list[str] = field(default_factory=list)
    source_files: dict[str, str] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Dot-free identifier ``sub-01_ses-1_task-rest_run-1`` (empty entities omitted)."""
        parts = [f"sub-{self.subject}"]
        for prefix, value in (("ses", self.session), ("task", self.task), ("run", self.run)):
            if value:
                parts.append(f"{prefix}-{value}")
        return "_".join(parts).replace(".", "")

    def validate(self) -> None:
        """Check shapes and finiteness; raise ValueError naming the source file."""
        src = self.source_files.get("ephys", self.key)
        _check_ephys_rows(self.ephys, self.ch_names, src)
        if self.ephys.shape[1] == 0:
            raise ValueError(f"{src}: the recording holds no samples")
        _check_finite(self.ephys, src, "electrophysiology")
