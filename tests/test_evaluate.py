"""``brainxl evaluate`` on a finished run and a checkpoint; early stopping on validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from train_fixtures import overrides, write_shards

from launch.cmd_evaluate import evaluate, locate

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
    proc = subprocess.run(
        [sys.executable, "-m", "launch.cli", "train", *ov],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (folder,) = (root / "runs" / "default").iterdir()
    return folder


def test_early_stopping_on_validation(trained: Path) -> None:
    final = json.loads((trained / "final_metrics.json").read_text())
    assert final["stopped_early"] is True
    assert (final["step"], final["best_step"]) == (6, 3)
    assert final["test"]["subject"] == "04"


def test_evaluate_reproduces_the_training_test_score(trained: Path) -> None:
    final = json.loads((trained / "final_metrics.json").read_text())
    result = evaluate(trained, "test", report=True)
    assert result["subjects"] == ["04"] and result["weights"] == "final"
    assert result["per_subject"]["04"] == pytest.approx(final["test"]["mean_r"], abs=1e-6)
    assert isinstance(result["baseline_mean_r"], float)  # ridge on band power, same subject
    assert result["fraction_of_ceiling"] is None  # no simulated BIDS dataset given
    assert "ridge" in (trained / "report" / "report.md").read_text()
    assert (trained / "report" / "report.html").is_file()
    assert (trained / "evaluation" / "final" / "predictions-04.npz").is_file()


def test_evaluate_a_checkpoint_and_bad_targets(trained: Path, tmp_path: Path) -> None:
    tag = trained / "checkpoints" / "step00000006"
    assert locate(tag) == (trained, trained / "checkpoints", "step00000006")
    result = evaluate(tag, "val", report=False)
    # lr 0: the checkpoint holds the initial weights, like the final model
    final = evaluate(trained, "val", report=False)
    assert result["per_subject"]["03"] == pytest.approx(final["per_subject"]["03"], abs=1e-6)
    with pytest.raises(ValueError, match="neither a run folder"):
        locate(tmp_path)
