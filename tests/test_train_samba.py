"""SAMBA in the training loop: FC graphs from the fold's training subjects only, the model's
own loss, and a 1-process run through ``brainxl train``.

The synthetic subjects are built so that the graph gives the split away: in the training
subjects (01, 02) the channels/ROIs correlate weakly within one grouping, in the validation
(03) and test (04) subjects strongly within another. A graph built with the held-out
subjects' data therefore differs from the one of the training subjects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brainxl.shards.config import ShardingConfig
from brainxl.shards.ingest.recording import Recording
from brainxl.shards.writer import shard_dataset

from brainxl.models.graph import fc_graph

REPO = Path(__file__).resolve().parent.parent
SFREQ, TR, LEAD_IN, N_TRS = 32.0, 2.0, 6.0, 40
N_CH, N_ROI, K = 9, 6, 2
CHANNELS = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "Oz"]
TRAIN, VAL, TEST = ("01", "02"), "03", "04"
# node groups: within a group every pair is correlated, so top-2 = the group mates
EEG_GROUPS = {
    "train": [[0, 1, 2], [3, 4, 5], [6, 7, 8]],
    "held_out": [[0, 3, 6], [1, 4, 7], [2, 5, 8]],
}
BOLD_GROUPS = {"train": [[0, 1, 2], [3, 4, 5]], "held_out": [[0, 2, 4], [1, 3, 5]]}


def _grouped(rng: np.random.Generator, groups: list[list[int]], rho: float, n: int) -> np.ndarray:
    """Rows with correlation ``rho`` inside each group, independent across groups."""
    rows = sum(len(g) for g in groups)
    x = np.sqrt(1 - rho) * rng.standard_normal((rows, n))
    for g in groups:
        x[g] += np.sqrt(rho) * rng.standard_normal(n)
    return x


def runs(subject: str) -> list[str]:
    """Held-out subjects have more runs: fc_graph weighs each array equally, so their
    strong correlations would dominate a graph that included them."""
    return ["1"] if subject in TRAIN else ["1", "2", "3"]


def make_recording(subject: str, run: str = "1") -> Recording:
    """One run; weaker correlations in training subjects, strong (0.95) held out."""
    rng = np.random.default_rng(int(subject) * 10 + int(run))
    train = subject in TRAIN
    kind = "train" if train else "held_out"
    n_times = int(round((LEAD_IN + (N_TRS - 1) * TR) * SFREQ)) + 1
    ephys = 10.0 * _grouped(rng, EEG_GROUPS[kind], 0.3 if train else 0.95, n_times) + 5.0
    bold = 100.0 + _grouped(rng, BOLD_GROUPS[kind], 0.8 if train else 0.95, N_TRS)
    return Recording(
        subject=subject,
        session="",
        task="rest",
        run=run,
        ephys=ephys.astype(np.float32),
        sfreq=SFREQ,
        ch_names=list(CHANNELS),
        ch_types=["eeg"] * N_CH,
        bold=bold.astype(np.float32),
        tr=TR,
        roi_names=[f"roi{r}" for r in range(N_ROI)],
        lead_in=LEAD_IN,
        source_files={"ephys": f"synthetic/sub-{subject}_eeg.vhdr"},
    )


def _load(subject: str) -> list[Recording]:
    return [make_recording(subject, run) for run in runs(subject)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samba") / "shards"
    cfg = ShardingConfig(
        segment_trs=8, max_shard_bytes=100_000, workers=1, lead_in_s=6.0, bold_lead_trs=2
    )
    shard_dataset(out, [*TRAIN, VAL, TEST], _load, cfg, source="synthetic", progress=False)
    return out


def _overrides(shards: Path, runs: Path, **extra: object) -> list[str]:
    base = {
        "data.shards": str(shards),
        "data.test_subject": TEST,
        "data.val_subjects": f"[{VAL}]",
        "data.reader.window_s": 6.0,
        "data.reader.n_targets": 3,
        "data.reader.modality": "sensors",
        "data.reader.shuffle_buffer": 8,
        "train.batch_size": 4,
        "train.steps": 3,
        "train.warmup_steps": 1,
        "train.val_every": 3,
        "train.ckpt_every": 0,
        "train.log_every": 1,
        "run.root": str(runs),
        "logging.wandb": "disabled",
        "logging.console": False,
        "model.overrides": f"{{graph_k: {K}}}",
    }
    base.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in base.items()]


def _cfg(shards: Path, tmp_path: Path, name: str = "samba-eeg2fmri-debug", **extra: object):
    from brainxl.distrib.config import load_config

    return load_config(name, _overrides(shards, tmp_path, **extra))


def _normalised(subjects, modality: str, norm) -> list[np.ndarray]:
    """The subjects' full recordings, normalised with ``norm``, straight from the simulator."""
    out = []
    mean, std = norm.get(modality)
    for subject, run in [(s, r) for s in subjects for r in runs(s)]:
        rec = make_recording(subject, run)
        x = rec.ephys if modality == "ephys" else rec.bold
        if modality == "ephys":  # the shards keep samples up to the last TR
            x = x[:, : int(round((LEAD_IN + (N_TRS - 1) * TR) * SFREQ))]
        out.append((x - mean[:, None]) / std[:, None])
    return out


def _edges(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {(a, b) for g in groups for a in g for b in g if a != b}


def _as_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edge_index.T}


def test_timeseries_are_the_recordings_stitched_once(shards: Path, tmp_path: Path) -> None:
    from brainxl.distrib.data import build_fold, recording_timeseries

    fold = build_fold(_cfg(shards, tmp_path), 0, 1)
    got = recording_timeseries(shards, TRAIN, ("ephys", "bold"), norm=fold.norm, ephys_hz=8.0)
    want_e = _normalised(TRAIN, "ephys", fold.norm)
    want_b = _normalised(TRAIN, "bold", fold.norm)
    assert len(got["ephys"]) == len(got["bold"]) == 2  # one contiguous array per run
    for g, w in zip(got["ephys"], want_e):
        # 32 Hz -> every 4th run sample; run sample 0 is recording sample LEAD_IN * SFREQ
        np.testing.assert_allclose(g, w[:, ::4], rtol=1e-5, atol=1e-5)
    for g, w in zip(got["bold"], want_b):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["samba-eeg2fmri-debug", "samba-fmri2eeg-debug"])
def test_graphs_come_from_training_subjects_only(shards: Path, tmp_path: Path, name: str) -> None:
    from brainxl.distrib.data import build_fold
    from brainxl.distrib.tasks import (
        build_model_and_adapter,
        data_shapes,
        prepare_fold,
        resolve_spec,
    )

    cfg = _cfg(shards, tmp_path, name)
    fold = build_fold(cfg, 0, 1)
    assert fold.split.train == TRAIN
    shapes = data_shapes(fold.train, cfg)
    model, _ = build_model_and_adapter(cfg.model, shapes)
    info = prepare_fold(resolve_spec(cfg.model), model, cfg, fold, shapes)
    assert info is not None and info["graph_subjects"] == list(TRAIN)

    eeg = fc_graph(_normalised(TRAIN, "ephys", fold.norm), K)
    bold = fc_graph(_normalised(TRAIN, "bold", fold.norm), K)
    src, tgt = (eeg, bold) if name.startswith("samba-eeg2fmri") else (bold, eeg)
    assert torch.equal(model.src_edge_index, src)
    assert torch.equal(model.tgt_edge_index, tgt)
    assert (info["graph_src_edges"], info["graph_tgt_edges"]) == (src.shape[1], tgt.shape[1])
    assert info["graph_src_k"] == info["graph_tgt_k"] == K
    # the data's design: training-subject groups, not the held-out subjects' ones
    assert _as_set(eeg) == _edges(EEG_GROUPS["train"])
    assert _as_set(bold) == _edges(BOLD_GROUPS["train"])
    for held_out in ([TEST], [VAL]):
        subjects = [*TRAIN, *held_out]
        leaky_eeg = fc_graph(_normalised(subjects, "ephys", fold.norm), K)
        leaky_bold = fc_graph(_normalised(subjects, "bold", fold.norm), K)
        assert not torch.equal(leaky_eeg, eeg) and not torch.equal(leaky_bold, bold)


def test_samba_uses_its_own_loss(shards: Path, tmp_path: Path) -> None:
    from brainxl.distrib.data import build_fold
    from brainxl.distrib.tasks import build_model_and_adapter
    from brainxl.distrib.tasks import data_shapes as data_info

    from brainxl.objectives import uses_model_loss

    cfg = _cfg(shards, tmp_path, "samba-fmri2eeg-debug")
    assert cfg.train.loss.name == "samba"
    fold = build_fold(cfg, 0, 1)
    model, adapter = build_model_and_adapter(cfg.model, data_info(fold.train, cfg))
    assert uses_model_loss("samba", model) and not uses_model_loss("mse", model)
    assert not uses_model_loss("samba", torch.nn.Linear(2, 2))
    batch = next(iter(fold.train))
    pred, aux = model(**adapter.inputs(batch, torch.float32, "cpu"), return_aux=True)
    loss, parts = model.loss(pred, adapter.target(batch, "cpu"), **aux)
    assert set(parts) == {"cosine", "skip"} and parts["skip"] > 0
    assert torch.isclose(loss, parts["cosine"] + model.skip_weight * parts["skip"])


def test_train_run_holds_the_training_subject_graph(shards: Path, tmp_path: Path) -> None:
    from brainxl.distrib.data import build_fold
    from brainxl.distrib.tasks import build_model_and_adapter
    from brainxl.distrib.tasks import data_shapes as data_info

    cmd = [sys.executable, "-m", "brainxl.launch.cli", "train", "samba-eeg2fmri-debug"]
    cmd += [*_overrides(shards, tmp_path), "--nproc", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (folder,) = [p for p in (tmp_path / "samba-eeg2fmri-debug").iterdir() if p.is_dir()]

    cfg = _cfg(shards, tmp_path)
    fold = build_fold(cfg, 0, 1)
    norm = fold.norm
    src = fc_graph(_normalised(TRAIN, "ephys", norm), K)
    tgt = fc_graph(_normalised(TRAIN, "bold", norm), K)
    weights = torch.load(folder / "final_model.pt")
    assert torch.equal(weights["src_edge_index"], src)
    assert torch.equal(weights["tgt_edge_index"], tgt)

    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    (graph,) = [r for r in records if r["split"] == "graph"]
    assert (graph["graph_k"], graph["graph_src_edges"]) == (K, src.shape[1])
    assert graph["graph_tgt_edges"] == tgt.shape[1]
    final = json.loads((folder / "final_metrics.json").read_text())
    assert final["graphs"]["graph_subjects"] == list(TRAIN) and final["step"] == 3
    assert -1 <= final["test"]["mean_r"] <= 1
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]

    # the validation loss (step 3 = the final weights) is the model's own (cosine) loss,
    # not the generic MSE + (1 - r) + wavelet composite that train.loss.name=samba means
    # for other models
    model, adapter = build_model_and_adapter(cfg.model, data_info(fold.train, cfg))
    model.load_state_dict(weights)
    model.eval()
    total = count = 0.0
    fold.val.set_epoch(0)
    with torch.no_grad():
        for batch in fold.val:
            pred = model(**adapter.inputs(batch, torch.float32, "cpu"))
            loss, _ = model.loss(pred, adapter.target(batch, "cpu"))
            total, count = total + float(loss) * len(pred), count + len(pred)
    (val,) = [r for r in records if r["split"] == "val"]
    assert val["loss"] == pytest.approx(total / count, rel=1e-5)

    # the report: learned HRFs and wavelet attention, figures logged to W&B (offline)
    from brainxl.launch.cmd_evaluate import evaluate

    os.environ["WANDB_MODE"] = "offline"
    try:
        result = evaluate(folder, "test", report=True, baseline=False)
    finally:
        del os.environ["WANDB_MODE"]
    assert result["subjects"] == [TEST]
    report = folder / "report"
    for name in ("roi_r_vs_ceiling", "per_subject", "hrfs", "wavelet_attention"):
        assert (report / f"{name}.png").stat().st_size > 5_000, name
    assert "hrfs.png" in (report / "report.md").read_text()
    images = list((folder / "wandb").glob("offline-run-*/files/media/images/evaluation/*.png"))
    assert {p.name.split("_")[0] for p in images} >= {"hrfs", "wavelet"}
