"""Synthetic recordings whose sample values encode their own time index.

``ephys[c, i] = i + CH_STRIDE * c`` (i = recording sample) and
``bold[r, k] = k + ROI_STRIDE * r`` (k = TR), so a window or target can be checked
exactly against the indices it should hold. All values are exact in float32.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from brainxl.shards.config import ShardingConfig
from brainxl.shards.ingest.recording import Recording
from brainxl.shards.writer import shard_dataset

CH_STRIDE = 100_000.0
ROI_STRIDE = 1_000.0
SFREQ = 50.0
TR = 2.0
LEAD_IN = 20.0

# subject -> list of (run, n_trs): unequal amounts of data per subject
SPEC: dict[str, list[tuple[str, int]]] = {
    "01": [("1", 40), ("2", 33)],
    "02": [("1", 25)],
    "03": [("1", 40), ("2", 40), ("3", 17)],
}


def make_recording(
    subject: str,
    run: str,
    n_trs: int,
    *,
    n_ch: int = 4,
    n_roi: int = 3,
    n_parcels: int = 0,
    sfreq: float = SFREQ,
    tr: float = TR,
    lead_in: float = LEAD_IN,
    ch_names: list[str] | None = None,
) -> Recording:
    """A recording covering ``lead_in`` s before TR 0 up to the last TR (inclusive)."""
    n_times = int(round((lead_in + (n_trs - 1) * tr) * sfreq)) + 1
    idx = np.arange(n_times, dtype=np.float64)
    ephys = (idx[None, :] + CH_STRIDE * np.arange(n_ch)[:, None]).astype(np.float32)
    bold = (np.arange(n_trs)[None, :] + ROI_STRIDE * np.arange(n_roi)[:, None]).astype(np.float32)
    parcels = None
    if n_parcels:
        parcels = (-idx[None, :] - CH_STRIDE * np.arange(n_parcels)[:, None]).astype(np.float32)
    names = ch_names or ["Fp1", "Fp2", "Cz", "Pz", "O1", "O2", "C3", "C4"][:n_ch]
    return Recording(
        subject=subject,
        session="",
        task="rest",
        run=run,
        ephys=ephys,
        sfreq=sfreq,
        ch_names=names,
        ch_types=["eeg"] * n_ch,
        bold=bold,
        tr=tr,
        roi_names=[f"roi{r}" for r in range(n_roi)],
        lead_in=lead_in,
        parcels=parcels,
        parcel_names=[f"parcel{p}" for p in range(n_parcels)],
        source_files={"ephys": f"synthetic/sub-{subject}_run-{run}_eeg.vhdr"},
    )


def load_spec(
    subject: str, spec: dict[str, list[tuple[str, int]]] | None = None, n_parcels: int = 0
) -> list[Recording]:
    """Loader for :func:`shards.writer.shard_dataset` (picklable via ``partial``)."""
    return [
        make_recording(subject, run, n, n_parcels=n_parcels) for run, n in (spec or SPEC)[subject]
    ]


def fail_on_02(subject: str) -> list[Recording]:
    """A loader that fails for subject 02 (tests that other subjects survive)."""
    if subject == "02":
        raise ValueError("synthetic/sub-02: broken on purpose")
    return load_spec(subject)


def write_synthetic(
    out: Path,
    *,
    segment_trs: int = 8,
    max_shard_bytes: int = 60_000,
    workers: int = 1,
    n_parcels: int = 0,
    spec: dict[str, list[tuple[str, int]]] | None = None,
) -> dict:
    """Shard the synthetic SPEC dataset into ``out`` (small shards: several per subject)."""
    cfg = ShardingConfig(
        segment_trs=segment_trs,
        max_shard_bytes=max_shard_bytes,
        workers=workers,
        lead_in_s=16.0,
        bold_lead_trs=3,
    )
    spec = spec or SPEC
    return shard_dataset(
        out,
        sorted(spec),
        partial(load_spec, spec=spec, n_parcels=n_parcels),
        cfg,
        source="synthetic",
        progress=False,
    )
