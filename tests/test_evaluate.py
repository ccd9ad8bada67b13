"""``brainxl evaluate`` on a finished run and a checkpoint; early stopping on validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from brainxl.launch.cmd_evaluate import evaluate, locate
from train_fixtures import overrides, write_shards

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-eval")
    shards = write_shards(root / "shards")
    # lr 0: validation never improves after the first check, so patience 1 stops at step 6
    ov = overrides(
        shards,
        root / "runs",
        train__lr=0.0,
        train__steps=30,
        train__patience=1,
        train__zero_stage=1,
    )
    return _train(ov, root / "runs")


def _train(ov: list[str], runs: Path) -> Path:
    """``brainxl train`` with overrides ``ov``; the run folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch.cli", "train", *ov],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (folder,) = (runs / "default").iterdir()
    return folder


def test_early_stopping_on_validation(trained: Path) -> None:
    final = json.loads((trained / "final_metrics.json").read_text())
    assert final["stopped_early"] is True
    assert (final["step"], final["best_step"]) == (6, 3)
    assert final["test"]["subject"] == "04"


def test_evaluate_reproduces_the_training_test_score(trained: Path) -> None:
    final = json.loads((trained / "final_metrics.json").read_text())
    result = evaluate(trained, "test", report=True)
    assert result["subjects"] == ["04"] and result["weights"] == "best"
    assert final["test"]["weights"] == "best (step 3)"
    assert result["per_subject"]["04"] == pytest.approx(final["test"]["mean_r"], abs=1e-6)
    assert isinstance(result["baseline_mean_r"], float)  # ridge on band power, same subject
    assert result["fraction_of_ceiling"] is None  # no simulated BIDS dataset given
    assert "ridge" in (trained / "report" / "report.md").read_text()
    assert (trained / "report" / "report.html").is_file()
    assert (trained / "evaluation" / "best" / "predictions-04.npz").is_file()


def test_evaluate_a_checkpoint_and_bad_targets(trained: Path, tmp_path: Path) -> None:
    tag = trained / "checkpoints" / "step00000006"
    assert locate(tag) == (trained, trained / "checkpoints", "step00000006")
    result = evaluate(tag, "val", report=False)
    # lr 0: the checkpoint holds the initial weights, like the final model
    final = evaluate(trained, "val", report=False)
    assert result["per_subject"]["03"] == pytest.approx(final["per_subject"]["03"], abs=1e-6)
    with pytest.raises(ValueError, match="neither a run folder"):
        locate(tmp_path)


def test_best_validation_weights_are_kept_and_tested(tmp_path: Path) -> None:
    """best_model.pt = the weights at the best validation step; test and evaluate use them."""
    import torch
    from brainxl.launch.cmd_evaluate import load_weights

    shards = write_shards(tmp_path / "shards")
    ov = overrides(
        shards,
        tmp_path / "runs",
        train__lr=3e-2,
        train__steps=8,
        train__val_every=1,
        train__ckpt_every=1,
        train__keep_last=8,
        train__schedule="constant",
    )
    run = _train(ov, tmp_path / "runs")
    final = json.loads((run / "final_metrics.json").read_text())
    best_step = final["best_step"]
    vals = [
        json.loads(line)
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"split": "val"' in line
    ]
    assert best_step == min(vals, key=lambda m: m["loss"])["step"]
    assert json.loads((run / "best_model.json").read_text())["step"] == best_step
    best = torch.load(run / "best_model.pt", weights_only=True)
    at_best = load_weights(run, run / "checkpoints", f"step{best_step:08d}")
    assert all(torch.equal(best[k].float(), at_best[k]) for k in at_best)
    assert final["test"]["weights"] == f"best (step {best_step})"
    by_best = evaluate(run, "test", report=False, baseline=False)
    by_final = evaluate(run, "test", report=False, baseline=False, weights="final")
    assert (by_best["weights"], by_final["weights"]) == ("best", "final")
    assert by_best["mean_r"] == pytest.approx(final["test"]["mean_r"], abs=1e-6)
    if best_step != final["step"]:
        assert by_final["mean_r"] != pytest.approx(by_best["mean_r"], abs=1e-6)


def test_evaluate_reads_no_training_data(trained: Path) -> None:
    """Shapes, normalisation and split come from the run folder (data_info.json): with the
    training and validation subjects' shard files gone, evaluation scores the same. An
    older run folder without data_info.json falls back to the manifest's statistics."""
    import shutil

    from brainxl.distrib.config import load_config
    from brainxl.distrib.rundir import RunDir
    from brainxl.shards.manifest import read_manifest

    run = RunDir(trained)
    before = evaluate(trained, "test", report=False, baseline=False)
    info = json.loads(run.data_info_path.read_text())
    assert info["split"] == {"train": ["01", "02"], "val": ["03"], "test": ["04"]}
    assert info["norm"]["subjects"] == ["01", "02"]
    shards = Path(load_config(run.config_path).data.shards)
    manifest = read_manifest(shards)
    hidden = shards / "hidden"
    hidden.mkdir()
    moved = []
    try:
        for s in ("01", "02", "03"):
            for entry in manifest["subjects"][s]["shards"]:
                (hidden / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(shards / entry["path"], hidden / entry["path"])
                moved.append(entry["path"])
        after = evaluate(trained, "test", report=False, baseline=False)
        assert after["per_subject"] == before["per_subject"]
        kept = run.data_info_path.read_text()
        run.data_info_path.unlink()  # a run folder from before data_info.json
        try:
            old = evaluate(trained, "test", report=False, baseline=False)
        finally:
            run.data_info_path.write_text(kept)
        assert old["per_subject"]["04"] == pytest.approx(before["per_subject"]["04"], abs=1e-6)
    finally:
        for p in moved:
            shutil.move(hidden / p, shards / p)
        shutil.rmtree(hidden)
