"""SAMBA end to end on the project's simulator: fMRI -> EEG runs finish with their LOSO
test (parcel and sensor targets, waveform and band-envelope targets), ``brainxl evaluate``
reports the multi-frame ridge for SAMBA runs, and (slow) EEG -> fMRI learns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
N_PARCELS = 8


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cli(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "brainxl.launch.cli", *args]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _simulate(root: Path, subjects: int, minutes: float, seed: int) -> tuple[Path, Path]:
    from brainxl.simulator import simulate_dataset

    bids, shards = root / "bids", root / "shards"
    simulate_dataset(
        bids, n_subjects=subjects, minutes=minutes, seed=seed, n_parcels=N_PARCELS, sfreq=200.0
    )
    cfg = root / "data.yaml"
    cfg.write_text("sharding:\n  bold_lead_trs: 14\n  lead_in_s: 30.0\n")
    _cli("shard", str(bids), str(shards), "--config", str(cfg), "--source-recon")
    return bids, shards


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3 subjects x 3 min, 8 parcels, EEG at 200 Hz, sharded with source parcels."""
    return _simulate(tmp_path_factory.mktemp("samba_sim"), 3, 3.0, 5)


def _train(name: str, shards: Path, runs: Path, modality: str, *extra: str) -> Path:
    _cli(
        "train", name, f"data.shards={shards}", "data.test_subject=01",
        "data.val_subjects=[02]", f"data.reader.modality={modality}", "train.steps=3",
        "train.batch_size=4", "train.warmup_steps=1", "train.val_every=3", "train.ckpt_every=0",
        f"run.root={runs}", "logging.wandb=disabled", "logging.console=false", *extra,
        "--nproc", "1",
    )  # fmt: skip
    (folder,) = [p for p in (runs / name).iterdir() if p.is_dir()]
    return folder


@pytest.mark.integration
@pytest.mark.parametrize(
    "modality,target",
    [("parcels", "waveform"), ("parcels", "envelopes"), ("sensors", "envelopes")],
)
def test_fmri2eeg_end_to_end(
    sim: tuple[Path, Path], tmp_path: Path, modality: str, target: str
) -> None:
    """The run keeps its LOSO test whatever the target rows are (the issue-13 crash:
    ``64 ROI names for 16 ROI columns`` with parcel targets), and ``brainxl evaluate``
    reports the BOLD -> envelope ridge on the same rows for envelope targets."""
    from brainxl.shards.manifest import read_manifest

    bids, shards = sim
    folder = _train(
        "samba-fmri2eeg-debug", shards, tmp_path, modality, f"model.overrides={{target: {target}}}"
    )
    final = json.loads((folder / "final_metrics.json").read_text())
    assert np.isfinite(final["test"]["mean_r"])
    m = read_manifest(shards)
    rows = m["parcel_names"] if modality == "parcels" else m["ch_names"]
    if target == "envelopes":
        rows = [f"{r}:{b}" for r in rows for b in ("alpha", "beta", "gamma")]
    (npz,) = folder.rglob("predictions-01.npz")
    pred = np.load(npz)
    assert list(pred["names"]) == rows and pred["pred"].shape[1] == len(rows)
    if target == "envelopes":
        assert pred["pred"].shape == pred["true"].shape and pred["pred"].shape[2] == 15
        from brainxl.launch.cmd_evaluate import evaluate

        res = evaluate(folder, report=False, bids_root=bids)
        assert res["baseline_mean_r"] is not None and -1 <= res["baseline_mean_r"] <= 1
        assert res["mean_r"] == pytest.approx(final["test"]["mean_r"], abs=1e-6)


@pytest.mark.integration
def test_eeg2fmri_evaluate_reports_multiframe_ridge(sim: tuple[Path, Path], tmp_path: Path):
    from brainxl.launch.cmd_evaluate import evaluate

    bids, shards = sim
    folder = _train("samba-eeg2fmri-debug", shards, tmp_path, "parcels")
    res = evaluate(folder, report=False, bids_root=bids)
    assert res["baseline_mean_r"] is not None and -1 <= res["baseline_mean_r"] <= 1


# ------------------------------------------------------------------------- learnability
#: Thresholds set from measurement (issue 13) on the issue's dataset (8 subjects x 8 min,
#: seed 3, 16 parcels, biosemi64), held-out subject 01, the shipped recipe (400 steps,
#: residual linear path, --nproc 2): training loss 0.86 (first logged steps) -> 0.52 (last),
#: held-out r 0.340 against the multi-frame ridge's 0.338 on the same rows. Before the
#: direct path: r 0.21-0.27 on folds 01-04; before the issue-13 fixes the loss stayed at
#: 0.95-0.97 and held-out r was 0.008.
LOSS_DROP_MIN = 0.20
#: Measured on this fold with the shipped recipe: held-out r 0.422, ridge 0.338.
R_MIN = 0.36
#: SAMBA must beat the ridge by at least this much (measured: +0.084 on this fold).
RIDGE_MARGIN = 0.04


@pytest.fixture(scope="module")
def sim_learn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The issue's dataset, simulated and sharded with source parcels through the CLI:
    ``(bids, shards)``."""
    root = tmp_path_factory.mktemp("samba_learn")
    _cli(
        "simulate", str(root / "bids"), "--subjects", "8", "--minutes", "8", "--seed", "3",
        "--parcels", "16", "--montage", "biosemi64",
    )  # fmt: skip
    (root / "data.yaml").write_text("sharding:\n  bold_lead_trs: 14\n  lead_in_s: 30.0\n")
    _cli(
        "shard", str(root / "bids"), str(root / "shards"), "--config", str(root / "data.yaml"),
        "--source-recon",
    )  # fmt: skip
    return root / "bids", root / "shards"


@pytest.mark.slow
def test_samba_eeg2fmri_learns_on_simulated_data(
    sim_learn: tuple[Path, Path], tmp_path: Path
) -> None:
    """The shipped CPU recipe reduces its training loss by a clear margin, predicts the
    held-out subject's BOLD (would have caught issue 13) and beats the multi-frame
    ridge that ``brainxl evaluate`` fits on the same training subjects."""
    from brainxl.launch.cmd_evaluate import evaluate

    bids, shards = sim_learn
    _cli(
        "train", "samba-eeg2fmri-cpu", f"data.shards={shards}", "data.test_subject=01",
        "data.reader.modality=parcels", f"run.root={tmp_path}", "logging.wandb=disabled",
        "logging.console=false", "--nproc", "2",
        timeout=3600,
    )  # fmt: skip
    (folder,) = [p for p in (tmp_path / "samba-eeg2fmri-cpu").iterdir() if p.is_dir()]
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    final = json.loads((folder / "final_metrics.json").read_text())
    print(f"train loss {first:.3f} -> {last:.3f}, held-out r {final['test']['mean_r']:.3f}")
    assert first - last >= LOSS_DROP_MIN, (first, last)
    assert final["test"]["mean_r"] >= R_MIN, final["test"]
    ridge = evaluate(folder, report=False, bids_root=bids)["baseline_mean_r"]
    print(f"multi-frame ridge r {ridge:.3f}")
    assert final["test"]["mean_r"] >= ridge + RIDGE_MARGIN, (final["test"]["mean_r"], ridge)
