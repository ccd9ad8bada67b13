"""A small simulated EEG-fMRI dataset, its shards and two short runs for the predict tests.

Four subjects x 1 min (TR 2 s, 200 Hz, biosemi32, 4 parcels); NeuroBOLT debug (EEG ->
fMRI, 2 s windows, channel readout, ZeRO-3) and SAMBA fMRI -> EEG debug (3 frames, 6 s
windows, sensors), each trained for a few steps with subject 04 held out.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIM = dict(
    n_subjects=4, minutes=1.0, seed=5, montage="biosemi32", n_parcels=4, sfreq=200.0, lead_in=6.0
)
ATLAS = "derivatives/brainxl-sim/atlas/atlas-brainxlsim_dseg"


@dataclass
class World:
    bids: Path
    shards: Path
    neurobolt: Path  # run folder
    samba: Path  # run folder


COMMON = [
    "data.test_subject=04",
    "data.val_subjects=[03]",
    "data.reader.shuffle_buffer=8",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "logging.wandb=disabled",
    "logging.console=false",
]


def train(config: str, shards: Path, runs: Path, *overrides: str) -> Path:
    """``brainxl train`` in a subprocess; the run folder."""
    ov = [f"data.shards={shards}", f"run.root={runs}", *COMMON, *overrides]
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch.cli", "train", config, *ov],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (folder,) = (p for p in runs.glob("*/*") if p.is_dir())
    return folder


def make_world(root: Path) -> World:
    """Simulate, shard and train both runs under ``root``."""
    from brainxl.shards.config import ShardingConfig
    from brainxl.shards.writer import shard_bids

    from brainxl.simulator import simulate_dataset

    bids, shards = root / "bids", root / "shards"
    simulate_dataset(bids, **SIM)
    cfg = ShardingConfig(
        segment_trs=8, lead_in_s=6.0, bold_lead_trs=2, workers=1, max_shard_bytes=2_000_000
    )
    shard_bids(bids, shards, cfg=cfg, progress=False)
    nb = train(
        "neurobolt-debug",
        shards,
        root / "runs-nb",
        "data.reader.window_s=2.0",
        "train.steps=6",
        "train.val_every=3",
        "train.ckpt_every=3",
        "train.zero_stage=3",
        "model.overrides={drop_path: 0.0, scales: [0.5, 1.0], readout: channel, readout_rank: 2}",
    )
    samba = train(
        "samba-fmri2eeg-debug",
        shards,
        root / "runs-samba",
        "data.reader.window_s=6.0",
        "data.reader.n_targets=3",
        "data.reader.modality=sensors",
        "train.steps=4",
        "train.val_every=2",
        "train.ckpt_every=2",
    )
    return World(bids, shards, nb, samba)
