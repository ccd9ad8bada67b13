"""Tiny learnable synthetic shards for the training tests (200 Hz, 2 s windows).

The BOLD of ROI ``r`` is the smoothed power of channel ``r`` over the last seconds, so a
model can learn it; four subjects, so one LOSO fold has train, validation and test.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from brainxl.shards.config import ShardingConfig
from brainxl.shards.ingest.recording import Recording
from brainxl.shards.writer import shard_dataset

SFREQ = 200.0
TR = 1.0
LEAD_IN = 2.0
CHANNELS = ["Fp1", "Fp2", "Cz", "O1"]
SUBJECTS = ("01", "02", "03", "04")


def make_recording(subject: str, n_trs: int = 24, n_roi: int = 3) -> Recording:
    """One run of ``subject``: noise EEG in µV, BOLD = lagged band power per channel."""
    rng = np.random.default_rng(int(subject))
    n_times = int(round((LEAD_IN + (n_trs - 1) * TR) * SFREQ)) + 1
    gain = 1.0 + rng.random((len(CHANNELS), 1)) * np.sin(np.arange(n_times) / 300.0)
    ephys = (20.0 * gain * rng.standard_normal((len(CHANNELS), n_times))).astype(np.float32)
    bold = np.zeros((n_roi, n_trs), np.float32)
    for k in range(n_trs):
        end = int(round((LEAD_IN + k * TR) * SFREQ))
        seg = ephys[:n_roi, max(end - int(SFREQ), 0) : end]
        bold[:, k] = (seg**2).mean(1) / 400.0
    return Recording(
        subject=subject,
        session="",
        task="rest",
        run="1",
        ephys=ephys,
        sfreq=SFREQ,
        ch_names=list(CHANNELS),
        ch_types=["eeg"] * len(CHANNELS),
        bold=bold,
        tr=TR,
        roi_names=[f"roi{r}" for r in range(n_roi)],
        lead_in=LEAD_IN,
        source_files={"ephys": f"synthetic/sub-{subject}_eeg.vhdr"},
    )


def _load(subject: str, n_trs: int) -> list[Recording]:
    return [make_recording(subject, n_trs)]


def write_shards(out: Path, subjects=SUBJECTS, n_trs: int = 24) -> Path:
    """Shard the synthetic subjects into ``out`` and return it."""
    cfg = ShardingConfig(
        segment_trs=8, max_shard_bytes=200_000, workers=1, lead_in_s=2.0, bold_lead_trs=1
    )
    shard_dataset(
        out, list(subjects), partial(_load, n_trs=n_trs), cfg, source="synthetic", progress=False
    )
    return out


def overrides(shards: Path, runs: Path, **extra: object) -> list[str]:
    """Dotted overrides of a tiny neurobolt-debug run on the synthetic shards."""
    base = {
        "data.shards": str(shards),
        "data.test_subject": "04",
        "data.val_subjects": "[03]",
        "data.reader.window_s": 2.0,
        "data.reader.shuffle_buffer": 8,
        "train.batch_size": 4,
        "train.steps": 6,
        "train.warmup_steps": 2,
        "train.lr": 1e-3,
        "train.val_every": 3,
        "train.ckpt_every": 2,
        "train.log_every": 1,
        "run.root": str(runs),
        "logging.wandb": "disabled",
        "logging.console": False,
        "model.overrides": "{drop_path: 0.0, scales: [0.5, 1.0]}",
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]
