"""`brainxl train ... model.pretrained=RUN`: NeuroBOLT starts from a pretraining run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import overrides, write_shards

from brainxl.models.registry import build_model

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def test_train_starts_from_a_pretraining_run(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "shards")
    pre = tmp_path / "pretrain-run"
    pre.mkdir()
    torch.manual_seed(5)
    mem = build_model("labram", "debug")
    torch.save(mem.state_dict(), pre / "final_model.pt")
    (pre / "config.yaml").write_text("pretrain:\n  stage: mem\n")  # microvolts, as before
    cmd = [sys.executable, "-m", "brainxl.launch.cli", "train",
           *overrides(shards, tmp_path / "runs", model__pretrained=str(pre), train__steps=2,
                      train__warmup_steps=0, train__lr=0.0, train__schedule="constant"),
           "--nproc", "1"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "model.pretrained: loaded 51 encoder tensors" in out, out[-3000:]
    # the fixture reads z-scored channels (data.reader.ephys_norm=fold)
    assert "model.pretrained: warning: the encoder was pretrained on microvolts" in out
    (run,) = [p for p in (tmp_path / "runs" / "default").iterdir() if p.is_dir()]
    final = torch.load(run / "final_model.pt", weights_only=True)
    enc = {k: v for k, v in mem.encoder.state_dict().items() if k != "mask_token"}
    for k, v in enc.items():  # lr 0: the fine-tuned encoder is still the pretrained one
        torch.testing.assert_close(final[f"encoder.{k}"], v, msg=k)
