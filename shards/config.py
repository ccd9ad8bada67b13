"""Typed settings of the data side: ingest/preprocessing, sharding and reading.

These dataclasses are the ``data`` part of the run schema (``distrib.config``) and the
settings of ``brainxl shard``; YAML files in ``configs/data/`` are merged onto them.
Owners: ingest settings (``PreprocessConfig``, ``BoldConfig``, ``SyncConfig``,
``SourceConfig``) are read by ``shards.bids``/``shards.preprocess``/``shards.source``;
``ShardingConfig`` by ``shards.writer``; ``ReaderConfig`` by ``shards.reader``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PreprocessConfig:
    """MNE preprocessing applied to the electrophysiology of every run."""

    notch_freqs: list[float] = field(default_factory=list)  # e.g. [50, 100]; empty = off
    l_freq: float | None = 0.5
    h_freq: float | None = 75.0
    sfreq: float = 200.0  # resample target (LaBraM uses 200 Hz)
    ch_types: list[str] = field(default_factory=lambda: ["eeg"])  # or ["mag", "grad"]
    rename_channels: dict[str, str] = field(default_factory=dict)
    drop_channels: list[str] = field(default_factory=list)
    on_bad_channel: str = "error"  # "error" | "drop": NaN or flat channels


@dataclass
class BoldConfig:
    """Where the BOLD target comes from."""

    source: str = "auto"  # "auto" | "roi_tsv" | "nifti"
    derivatives: str = ""  # derivatives pipeline folder holding *_timeseries.tsv ("" = any)
    atlas: str = ""  # atlas NIfTI for source="nifti" (labels 1..R)
    atlas_labels: str = ""  # optional TSV: index, name


@dataclass
class SyncConfig:
    """How electrophysiology is aligned to the BOLD volumes."""

    volume_marker: str = r"(?i)^(volume|v|r128|response/r128|tr|mri)\b.*"
    lead_in: float = 16.0  # seconds of electrophysiology kept before the first volume


@dataclass
class SourceConfig:
    """Optional source reconstruction onto atlas parcels."""

    enabled: bool = False
    keep_sensors: bool = True  # store sensor data beside the parcels
    method: str = "eLORETA"  # "MNE" | "dSPM" | "sLORETA" | "eLORETA"
    snr: float = 3.0
    forward: str = ""  # forward solution file pattern; "" = simulator's derivatives
    parcellation: str = ""  # TSV mapping source index -> parcel; "" = simulator's


@dataclass
class IngestConfig:
    """Everything that turns one BIDS run into a :class:`shards.recording.Recording`."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    bold: BoldConfig = field(default_factory=BoldConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    subjects: list[str] = field(default_factory=list)  # empty = all
    tasks: list[str] = field(default_factory=list)  # empty = all


@dataclass
class ShardingConfig:
    """How recordings are cut into segments and packed into tar shards."""

    segment_trs: int = 32  # TRs per stored segment
    max_shard_bytes: int = 256 * 1024 * 1024
    workers: int = 2


@dataclass
class ReaderConfig:
    """The streaming window reader."""

    window_s: float = 16.0  # electrophysiology window length
    lag_s: float = 0.0  # window ends at (TR time - lag)
    n_targets: int = 1  # BOLD frames per window (1 = the TR at the end of the window)
    modality: str = "sensors"  # "sensors" | "parcels"
    shuffle_buffer: int = 256
    batch_size: int = 16
    on_error: str = "fail"  # "fail" | "skip": corrupt/truncated shards
    include_subjects: list[str] = field(default_factory=list)
    exclude_subjects: list[str] = field(default_factory=list)
