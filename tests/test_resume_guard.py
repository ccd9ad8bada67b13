"""distrib/resume_guard.py: a named run folder resumes only under the config it was trained with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from brainxl.distrib.config import ConfigError, load_config, save_run_config
from brainxl.distrib.pretrain_config import load_pretrain_config, save_pretrain_config
from brainxl.distrib.resume_guard import check_same_config, resume_conflicts
from brainxl.distrib.rundir import RunDir

BASE = ["data.shards=/data/a", "data.test_subject=01", "run.name=named"]


def _train_cfg(*extra: str):
    return load_config("quickstart-small", [*BASE, *extra])


def _saved_run(folder: Path, cfg, save=save_run_config, finished: bool = True) -> RunDir:
    save(cfg, folder)
    run = RunDir(folder)
    if finished:
        run.final_metrics.write_text(json.dumps({"step": 2}))
    return run


def test_the_same_settings_conflict_nowhere_and_other_science_names_its_keys() -> None:
    cfg = _train_cfg()
    assert resume_conflicts(cfg, _train_cfg()) == {}
    other = _train_cfg("train.lr=5e-4", "model.overrides.filters=4", "model.pretrained=/enc")
    conflicts = resume_conflicts(cfg, other)
    assert list(conflicts) == ["model.overrides", "model.pretrained", "train.lr"]
    assert conflicts["train.lr"] == (cfg.train.lr, 5e-4)
    assert repr(conflicts["model.pretrained"][0]) == "(default)"  # unset on the saved side
    assert conflicts["model.overrides"][1]["filters"] == 4
    # bookkeeping keys are free when named, and run/logging keys never count
    moved = _train_cfg("data.shards=/data/b", "train.ckpt_every=7", "logging.wandb=disabled")
    assert list(resume_conflicts(cfg, moved)) == ["data.shards", "train.ckpt_every"]
    assert resume_conflicts(cfg, moved, free=("data.shards", "train.ckpt_every")) == {}


def test_a_finished_or_checkpointed_run_refuses_other_settings(tmp_path: Path) -> None:
    folder = tmp_path / "named"
    run = _saved_run(folder, _train_cfg())
    saved = run.config_path.read_text()
    check_same_config(folder, _train_cfg())  # the same command resumes
    check_same_config(folder, _train_cfg("data.shards=/data/moved", "train.keep_last=5"))
    with pytest.raises(ConfigError) as err:
        check_same_config(folder, _train_cfg("train.lr=5e-4"))
    message = str(err.value)
    assert str(folder) in message and "train.lr: 0.001 -> 0.0005" in message
    assert "run.resume=false" in message and "run.name=<new name>" in message
    assert run.config_path.read_text() == saved  # nothing rewritten

    run.final_metrics.unlink()  # interrupted after a checkpoint: still something to mix
    run.checkpoints.mkdir()
    run.latest_path.write_text("step00000004")
    with pytest.raises(ConfigError, match="model.pretrained"):
        check_same_config(folder, _train_cfg("model.pretrained=/enc"))


def test_a_folder_with_nothing_to_resume_starts_over_under_the_new_settings(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "named"
    _saved_run(folder, _train_cfg(), finished=False)  # first attempt died before a checkpoint
    check_same_config(folder, _train_cfg("train.lr=5e-4"))
    check_same_config(tmp_path / "never-started", _train_cfg("train.lr=5e-4"))


def test_a_saved_config_this_brainxl_cannot_load_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "named"
    run = _saved_run(folder, _train_cfg())
    run.config_path.write_text(run.config_path.read_text() + "retired_key: 1\n")
    with pytest.raises(ConfigError, match="does not load with this brainxl"):
        check_same_config(folder, _train_cfg())


def test_pretraining_runs_compare_their_own_schema(tmp_path: Path) -> None:
    def tok(*extra: str):
        return load_pretrain_config(
            "pretrain/tokenizer-debug", ["data.sources=[{path: /corpus/a}]", *extra]
        )

    folder = tmp_path / "tokenizer"
    _saved_run(folder, tok(), save=save_pretrain_config)
    check_same_config(folder, tok())
    # moved sources are checked by content (data.json), not by path
    check_same_config(folder, tok("data.sources=[{path: /corpus/moved}]", "train.ckpt_every=9"))
    with pytest.raises(ConfigError, match=r"train.steps: .* -> 7"):
        check_same_config(folder, tok("train.steps=7"))
    with pytest.raises(ConfigError, match="model.overrides"):
        check_same_config(folder, tok("model.overrides.filters=8"))


def test_submit_refuses_before_it_rewrites_the_run_folder(tmp_path: Path) -> None:
    from brainxl.distrib.config import run_dir
    from brainxl.launch.slurm import load_profile, submit_run

    cfg = _train_cfg(f"run.root={tmp_path}")
    run = _saved_run(run_dir(cfg), cfg)
    saved = run.config_path.read_text()
    with pytest.raises(ConfigError, match="train.lr"):  # refused before any job exists
        submit_run(_train_cfg(f"run.root={tmp_path}", "train.lr=5e-4"), load_profile("local"))
    assert run.config_path.read_text() == saved
    assert not (run.path / RunDir.JOB_RECORD).exists()
