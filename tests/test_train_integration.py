"""End-to-end training in 2 CPU processes (gloo): ZeRO 0/2/3, exact resume after kill -9,
resume on another world size, checkpoint retention and the report files."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_parent_watch import wait_gone
from train_fixtures import overrides, write_shards

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("train-int") / "shards")


def _cmd(shards: Path, runs: Path, nproc: int, **kw: object) -> list[str]:
    return [
        sys.executable,
        "-m",
        "brainxl.launch.cli",
        "train",
        *overrides(shards, runs, **kw),
        "--nproc",
        str(nproc),
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    env.update(extra)
    return env


def _train(cmd: list[str], timeout: int = 900, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _run_dir(runs: Path) -> Path:
    (folder,) = [p for p in (runs / "default").iterdir() if p.is_dir()]
    return folder


def _records(folder: Path, split: str) -> list[dict]:
    recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    drop = {"time", "samples_per_s", "eta_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in recs if r["split"] == split]


def test_zero3_resume_after_kill_matches_uninterrupted(shards: Path, tmp_path: Path) -> None:
    kw = {"train__zero_stage": 3, "train__steps": 8}
    _train(_cmd(shards, tmp_path / "a", 2, **kw))
    ref = _run_dir(tmp_path / "a")

    cmd = _cmd(shards, tmp_path / "b", 2, **kw)
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 200
    latest = None
    while time.time() < deadline and proc.poll() is None:
        runs = tmp_path / "b" / "default"
        found = list(runs.glob("*/checkpoints/latest")) if runs.exists() else []
        if found and found[0].read_text().strip() == "step00000002":
            latest = found[0]
            break
        time.sleep(0.05)
    ranks = [c.pid for c in psutil.Process(proc.pid).children()]
    os.kill(proc.pid, signal.SIGKILL)  # the launcher only, mid-training: its ranks follow
    proc.wait()
    try:
        assert len(ranks) == 2
        assert wait_gone(ranks, 60.0) == [], "ranks trained on after their launcher died"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert latest is not None, "the run ended before its first checkpoint could be killed"
    folder = latest.parent.parent
    assert not (folder / "final_metrics.json").exists()
    saved = int(latest.read_text().strip().removeprefix("step"))  # 2, or 3 saved meanwhile

    _train(cmd)  # the same command again resumes
    assert [r["step"] for r in _records(folder, "resume")] == [saved]
    a = torch.load(ref / "final_model.pt")
    b = torch.load(folder / "final_model.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _records(ref, "train") == _records(folder, "train")
    assert _records(ref, "val") == _records(folder, "val")
    fa = json.loads((ref / "final_metrics.json").read_text())
    fb = json.loads((folder / "final_metrics.json").read_text())
    assert fa["test"] == fb["test"] and fb["step"] == 8


def test_zero2_resumes_on_another_world_size(shards: Path, tmp_path: Path) -> None:
    kw = {"train__zero_stage": 2, "train__steps": 4, "train__val_every": 0}
    _train(_cmd(shards, tmp_path, 2, **kw))
    folder = _run_dir(tmp_path)
    ckpts = folder / "checkpoints"
    # as if the job had died after the step-2 checkpoint
    (folder / "final_metrics.json").unlink()
    (ckpts / "latest").write_text("step00000002")

    _train(_cmd(shards, tmp_path, 1, **kw))
    (resume,) = _records(folder, "resume")
    assert (resume["step"], resume["from_world_size"], resume["world_size"]) == (2, 2, 1)
    assert (ckpts / "step00000002_universal" / "zero").is_dir()
    assert json.loads((folder / "final_metrics.json").read_text())["step"] == 4
    assert [r["step"] for r in _records(folder, "train")] == [1, 2, 3, 4]

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    saved = get_fp32_state_dict_from_zero_checkpoint(str(ckpts), tag="step00000002")
    name = next(iter(saved))
    uni = torch.load(ckpts / "step00000002_universal" / "zero" / name / "fp32.pt")
    assert torch.equal(uni["param"].reshape(saved[name].shape), saved[name])


def test_zero0_checkpoints_reports_and_rerun(shards: Path, tmp_path: Path) -> None:
    kw = {
        "train__zero_stage": 0,
        "train__steps": 6,
        "logging__console": True,
        "logging__wandb": "offline",
        "train__keep_last": 2,
    }
    out = _train(_cmd(shards, tmp_path, 2, **kw), WANDB_MODE="offline").stdout
    assert "[train] step 6/6" in out and "samples/s" in out and "ETA" in out
    folder = _run_dir(tmp_path)
    ckpts = folder / "checkpoints"
    assert (ckpts / "latest").read_text() == "step00000006"
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step00000004", "step00000006"]
    tag = ckpts / "step00000006"
    for name in (
        "config.yaml",
        "version.json",
        "brainxl_meta.json",
        "brainxl_rank000.pt",
        "brainxl_rank001.pt",
    ):
        assert (tag / name).is_file(), name
    meta = json.loads((tag / "brainxl_meta.json").read_text())
    assert (meta["world_size"], meta["zero_stage"], meta["step"]) == (2, 0, 6)
    assert (folder / "config.yaml").is_file() and (folder / "version.json").is_file()
    train = _records(folder, "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all("loss" in r and "lr" in r for r in train)
    assert [r["step"] for r in _records(folder, "val")] == [3, 6]
    (test,) = _records(folder, "test")
    assert -1 <= test["mean_r"] <= 1
    assert list((folder / "wandb").glob("offline-run-*"))
    final = json.loads((folder / "final_metrics.json").read_text())
    assert final["split"] == {"train": ["01", "02"], "val": ["03"], "test": ["04"]}

    again = _train(_cmd(shards, tmp_path, 2, **kw))  # same command: nothing left to do
    assert "already complete" in again.stdout


def test_usr2_saves_on_every_rank_stops_and_the_same_command_resumes(
    shards: Path, tmp_path: Path
) -> None:
    kw = {"train__steps": 40, "train__ckpt_every": 1000, "train__val_every": 1000}
    cmd = _cmd(shards, tmp_path, 2, **kw)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 200
    jsonl = None
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "default").glob("*/metrics.jsonl"))
        if runs and '"split": "train"' in runs[0].read_text():
            jsonl = runs[0]
            break
        time.sleep(0.2)
    assert jsonl is not None, "training never reported a step"
    proc.send_signal(signal.SIGUSR2)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    folder = jsonl.parent
    tag = (folder / "checkpoints" / "latest").read_text().strip()
    step = json.loads((folder / "checkpoints" / tag / "brainxl_meta.json").read_text())["step"]
    assert 0 < step < 40, "the signal must save the step it arrived at, not a periodic one"
    assert not (folder / "final_metrics.json").exists()
    ranks = sorted(p.name for p in (folder / "checkpoints" / tag).iterdir())
    assert any("rank_00" in r or "mp_rank_00" in r for r in ranks)

    again = _train(cmd)
    final = json.loads((folder / "final_metrics.json").read_text())
    assert final["step"] == 40, again.stdout[-2000:]
    first = [r for r in _records(folder, "train") if r["step"] == step + 1]
    assert len(first) == 1, "the resumed run continues after the saved step, redoing none"


def test_a_run_refuses_to_resume_on_changed_shards(shards: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    kw = {"train__steps": 2, "train__val_every": 0}
    _train(_cmd(data, tmp_path / "runs", 1, **kw))
    folder = _run_dir(tmp_path / "runs")
    before = json.loads((folder / "data.json").read_text())
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["created"] = "2000-01-01T00:00:00+00:00"  # a new creation time alone is fine
    (data / "manifest.json").write_text(json.dumps(manifest))
    again = _train(_cmd(data, tmp_path / "runs", 1, **kw))
    assert "already complete" in again.stdout
    manifest["subjects"].pop("02")  # other data under the same path
    (data / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run(
        _cmd(data, tmp_path / "runs", 1, **kw), cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "changed since it started" in proc.stderr and "run.resume=false" in proc.stderr
    assert json.loads((folder / "data.json").read_text()) == before  # nothing overwritten


def test_a_named_run_refuses_to_resume_under_other_settings(shards: Path, tmp_path: Path) -> None:
    kw = {"train__steps": 2, "train__val_every": 0, "run__name": "named"}
    _train(_cmd(shards, tmp_path, 1, **kw))
    folder = tmp_path / "default" / "named"
    saved = {p: (folder / p).read_text() for p in ("config.yaml", "final_metrics.json")}
    again = _train(_cmd(shards, tmp_path, 1, train__ckpt_every=7, **kw))  # bookkeeping only
    assert "already complete" in again.stdout
    proc = subprocess.run(
        _cmd(shards, tmp_path, 1, train__lr=5e-4, **kw),
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "other settings (train.lr: " in proc.stderr and "run.resume=false" in proc.stderr
    assert {p: (folder / p).read_text() for p in saved} == saved  # nothing overwritten


def test_layer_decay_gives_each_depth_its_learning_rate(shards: Path, tmp_path: Path) -> None:
    from brainxl.distrib.engine import param_groups

    from brainxl.models.neurobolt import NeuroBOLT

    model = NeuroBOLT.from_flavor("debug", window_s=4, n_rois=3)
    groups = param_groups(model, 1e-3, 0.5)
    assert [g["lr"] for g in groups] == pytest.approx([1.25e-4, 2.5e-4, 5e-4, 1e-3])
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert groups[-1]["params"][-1] is model.head.bias  # the head learns at the full rate
    assert len(param_groups(model, 1e-3, 1.0)) == len(list(model.parameters()))

    kw = {"train__layer_decay": 0.5, "train__steps": 2, "train__schedule": "constant"}
    _train(_cmd(shards, tmp_path, 1, **kw, train__warmup_steps=0))
    state = torch.load(
        _run_dir(tmp_path) / "checkpoints" / "step00000002" / "mp_rank_00_model_states.pt",
        weights_only=False,
    )
    lrs = sorted(g["lr"] for g in state["optimizer"]["param_groups"])
    assert lrs == pytest.approx([1.25e-4, 2.5e-4, 5e-4, 1e-3])


def test_encoder_frozen_steps_hold_the_encoder_under_zero2(shards: Path, tmp_path: Path) -> None:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    kw = {"train__zero_stage": 2, "train__steps": 3, "train__val_every": 0}
    kw |= {"train__ckpt_every": 1, "train__keep_last": 3, "train__warmup_steps": 0}
    _train(_cmd(shards, tmp_path, 1, **kw, train__encoder_frozen_steps=2))
    ckpts = _run_dir(tmp_path) / "checkpoints"
    w = {
        s: get_fp32_state_dict_from_zero_checkpoint(str(ckpts), tag=f"step0000000{s}")
        for s in (1, 2, 3)
    }
    enc = [k for k in w[1] if k.startswith("encoder.")]
    assert enc and all(torch.equal(w[1][k], w[2][k]) for k in enc)  # LR 0 for two steps
    assert any(not torch.equal(w[2][k], w[3][k]) for k in enc)  # then it learns
    assert not torch.equal(w[1]["head.weight"], w[2]["head.weight"])  # the head never stops
