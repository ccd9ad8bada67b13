"""The whole pretraining chain from the command line, tiny (slow; ``pytest -m slow``):
``brainxl simulate --eeg-only`` -> ``brainxl shard --eeg-only`` -> tokenizer stage ->
masked-modeling stage -> ``brainxl train`` NeuroBOLT with ``model.pretrained=<mem run>`` (and
its spatial filters from ICA of the same shards, ``model.spatial_init``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import overrides, write_shards

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _brainxl(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    env["WANDB_MODE"] = "disabled"
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "brainxl.launch.cli", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args[:2])} failed:\n{out[-4000:]}"
    return out


def _final(out: str) -> dict:
    """``final_metrics.json`` of the run folder the command printed."""
    (line,) = [ln for ln in out.splitlines() if ln.startswith("run folder: ")]
    return json.loads((Path(line.removeprefix("run folder: ")) / "final_metrics.json").read_text())


def test_simulate_shard_pretrain_and_finetune_neurobolt(tmp_path: Path) -> None:
    bids, shards, runs = tmp_path / "eeg", tmp_path / "shards", tmp_path / "runs"
    _brainxl("simulate", str(bids), "--eeg-only", "--subjects", "2", "--minutes", "0.5",
             "--montages", "clinical19,biosemi32", "--rates", "250,500")  # fmt: skip
    _brainxl("shard", str(bids), str(shards), "--eeg-only", "--segment-s", "10", "--quiet")
    assert json.loads((shards / "manifest.json").read_text())["kind"] == "eeg-only"

    common = {
        "data": {"sources": [{"path": str(shards)}], "window_s": 2, "token_budget": 256},
        "train": {"steps": 4, "warmup_steps": 1, "ckpt_every": 0, "log_every": 2},
        "run": {"root": str(runs)},
        "logging": {"wandb": "disabled"},
    }
    for stage in ("tokenizer", "mem"):
        cfg = {**common, "base": str(REPO / "configs" / "pretrain" / f"{stage}-debug.yaml")}
        (tmp_path / f"{stage}.yaml").write_text(yaml.safe_dump(cfg))
    tok = _final(_brainxl("pretrain", str(tmp_path / "tokenizer.yaml"), "--nproc", "1"))
    assert tok["stage"] == "tokenizer" and tok["step"] == 4
    tok_run = Path(tok["run_dir"])
    assert (tok_run / "tokenizer.json").is_file()
    mem = _final(_brainxl("pretrain", str(tmp_path / "mem.yaml"), f"pretrain.tokenizer={tok_run}",
                          "--nproc", "1"))  # fmt: skip
    assert mem["stage"] == "mem" and mem["step"] == 4 and mem["datasets"] == ["eeg"]
    mem_run = Path(mem["run_dir"])

    translation = write_shards(tmp_path / "translation")
    # the spatial filters start from ICA of the same EEG-only shards (model.spatial_init)
    ft = overrides(translation, tmp_path / "ft", model__pretrained=str(mem_run), train__steps=3,
                   train__val_every=3, model__spatial_init=str(shards),
                   model__overrides="{drop_path: 0.0, scales: [0.5, 1.0], spatial_filters: 3}",
                   data__reader__ephys_norm="subject")  # fmt: skip
    out = _brainxl("train", *ft, "--nproc", "1")
    assert "model.pretrained: loaded 51 encoder tensors" in out, out[-3000:]
    assert "model.spatial_init: ICA of 4 channels -> 3 filters from" in out, out[-3000:]
    assert "3 filters initialised" in out
    (run,) = [p for p in (tmp_path / "ft" / "default").iterdir() if p.is_dir()]
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == 3
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (test,) = [r for r in recs if r["split"] == "test"]
    assert -1.0 <= test["mean_r"] <= 1.0
    # the fine-tuned model holds every pretrained encoder tensor
    pre = torch.load(mem_run / "final_model.pt", weights_only=True)
    tuned = torch.load(run / "final_model.pt", weights_only=True)
    enc = [k for k in pre if k.startswith("encoder.") and k != "encoder.mask_token"]
    assert len(enc) == 51 and all(k in tuned for k in enc)
