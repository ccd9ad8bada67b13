"""Typed settings of the data side: ingest/preprocessing, sharding and reading.

``IngestConfig`` and ``ShardingConfig`` are what ``brainxl shard --config`` reads (its
``ingest:`` and ``sharding:`` blocks); :class:`WindowConfig` is the run schema's
``data.reader`` (``distrib.config``). Owners: ingest settings (``PreprocessConfig``,
``BoldConfig``, ``SyncConfig``, ``SourceConfig``) are read by ``shards.ingest``;
``ShardingConfig`` by ``shards.writer``; ``ReaderConfig`` (a ``WindowConfig`` plus the
batch size) by ``shards.reader``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


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
    reference: str = ""  # "" = as recorded | "average" (EEG only)


@dataclass
class BoldConfig:
    """Where the BOLD target comes from."""

    source: str = "auto"  # "auto" | "roi_tsv" | "nifti"
    derivatives: str = ""  # derivatives pipeline folder holding *_timeseries.tsv ("" = any)
    # atlas NIfTI (labels 1..R) on the BOLD grid; relative to the BIDS root, may hold
    # {subject}/{session}/{task}/{run}
    atlas: str = ""
    atlas_labels: str = ""  # optional TSV: index, name
    desc: str = ""  # desc- entity of the ROI TSV to use ("" = the one without a known
    # ground-truth desc such as noisefree/clean/true)
    roi_atlas: str = ""  # atlas- entity of the ROI TSV to use ("" = any)


@dataclass
class SyncConfig:
    """How electrophysiology is aligned to the BOLD volumes."""

    volume_marker: str = r"(?i)^(volume|v|r128|response/r128|tr|mri)\b.*"
    lead_in: float = 16.0  # seconds of electrophysiology kept before the first volume
    tolerance: float = 0.05  # allowed relative deviation of trigger spacing from the TR


@dataclass
class SourceConfig:
    """Optional source reconstruction onto atlas parcels."""

    enabled: bool = False
    keep_sensors: bool = True  # store sensor data beside the parcels
    method: str = "eLORETA"  # "MNE" | "dSPM" | "sLORETA" | "eLORETA"
    snr: float = 3.0
    # forward solution (*-fwd.fif), relative to the BIDS root, may hold {subject} etc.;
    # "" = the simulator's derivatives/brainxl-sim/sub-XX/eeg/sub-XX_desc-headmodel_fwd.fif
    forward: str = ""
    parcellation: str = ""  # TSV mapping source index -> parcel; "" = simulator's
    parcel_names: str = ""  # TSV index,name naming a parcel_index table; "" = simulator's
    noise_cov: str = "adhoc"  # "adhoc" | "empirical" (from the run itself)
    parcel_mode: str = "auto"  # "auto" | "mean_flip" (fixed orientation) | "pca"


@dataclass
class IngestConfig:
    """Everything that turns one BIDS run into a :class:`shards.ingest.recording.Recording`."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    bold: BoldConfig = field(default_factory=BoldConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    subjects: list[str] = field(default_factory=list)  # empty = all
    tasks: list[str] = field(default_factory=list)  # empty = all
    # BLAS threads per ingest process: the shard writer runs subjects in parallel worker
    # processes, and oversubscribed BLAS made source reconstruction 5-10x slower here
    blas_threads: int = 1


@dataclass
class ShardingConfig:
    """How recordings are cut into segments and packed into tar shards."""

    segment_trs: int = 32  # TRs per stored segment
    max_shard_bytes: int = 256 * 1024 * 1024
    workers: int = 2
    # seconds of electrophysiology kept before each segment's first TR: >= window_s + lag_s
    lead_in_s: float = 20.0
    bold_lead_trs: int = 7  # earlier BOLD frames kept per segment: >= n_targets - 1
    # EEG-only shards (``brainxl shard --eeg-only``): seconds of EEG per stored segment
    # (recordings are cut end to end; the last segment of a recording may be shorter)
    segment_s: float = 60.0


@dataclass
class WindowConfig:
    """How training windows are cut, normalised and streamed: the run config's ``data.reader``.

    ``include_subjects``/``exclude_subjects`` narrow the subjects a run draws its LOSO fold
    from (labels with or without ``sub-``); the batch size of a run is ``train.batch_size``.
    """

    window_s: float = 16.0  # electrophysiology window length
    lag_s: float = 0.0  # window ends at (TR time - lag)
    n_targets: int = 1  # BOLD frames per window (1 = the TR at the end of the window)
    modality: str = "sensors"  # "sensors" | "parcels"
    shuffle_buffer: int = 256
    on_error: str = "fail"  # "fail" | "skip": corrupt/truncated shards and altered samples
    # Normalisation scope per modality: "fold" = statistics of the fold's training
    # subjects; "subject" = each subject's own statistics (per-scan z-scoring, the usual
    # treatment of BOLD: scanner baselines differ between subjects and sessions, and
    # Pearson r is invariant to it); "none" = raw values.
    ephys_norm: str = "fold"
    bold_norm: str = "subject"

    include_subjects: list[str] = field(default_factory=list)
    exclude_subjects: list[str] = field(default_factory=list)
    # glibc only: keep freed memory in the malloc heap (brainxl.heap), so batches and
    # training steps reuse pages instead of faulting in fresh ones; process-wide (reader
    # and trainer), off = libc defaults; ZeRO-3 runs give memory back either way
    heap_reuse: bool = True


@dataclass
class ReaderConfig(WindowConfig):
    """The streaming window reader on its own: :class:`WindowConfig` plus the batch size."""

    batch_size: int = 16

    @classmethod
    def from_windows(cls, windows: WindowConfig, **changes: object) -> ReaderConfig:
        """A reader config with the settings of ``windows`` and the given ``changes``."""
        values = {f.name: getattr(windows, f.name) for f in fields(WindowConfig)}
        return cls(**{**values, **changes})  # type: ignore[arg-type]
