"""Stable run identity: a key added to the schema with a default renames no run folder.

The run id hashes only the semantic keys that differ from the schema defaults. The
integration test trains with today's schema, then runs the same ``brainxl train`` command
with a schema extended by two new keys (one top-level, one nested) and checks that it
finds and resumes the same run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from brainxl.distrib import config
from brainxl.distrib.config import RunConfig, TrainConfig, changed_keys, load_config, run_id
from train_fixtures import overrides, write_shards

REPO = Path(__file__).resolve().parent.parent


@dataclass
class TrainConfigV2(TrainConfig):
    """Today's train section plus a key a later version might add."""

    ema_decay: float = 0.0


@dataclass
class RunConfigV2(RunConfig):
    """Today's schema plus a new top-level key and the extended train section."""

    train: TrainConfigV2 = field(default_factory=TrainConfigV2)
    notes_level: int = 0


EXTENDED_SCHEMA = textwrap.dedent(
    '''
    """`brainxl` with a schema that has two more keys (as after an upgrade)."""
    import sys
    from dataclasses import dataclass, field

    from brainxl.distrib import config


    @dataclass
    class TrainConfigV2(config.TrainConfig):
        ema_decay: float = 0.0


    @dataclass
    class RunConfigV2(config.RunConfig):
        train: TrainConfigV2 = field(default_factory=TrainConfigV2)
        notes_level: int = 0


    config.RunConfig = RunConfigV2
    from brainxl.launch.cli import main

    sys.exit(main(sys.argv[1:]))
    '''
)


def test_only_changed_keys_count() -> None:
    cfg = load_config("neurobolt-debug", ["train.lr=1e-2", "run.root=/x", "train.log_every=3"])
    changed = changed_keys(cfg)
    assert changed["train.lr"] == 1e-2
    assert "run.root" not in changed and "train.log_every" not in changed
    assert "train.weight_decay" not in changed  # at its default


def test_new_key_with_default_keeps_the_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("neurobolt-debug", ["train.lr=1e-2", "data.test_subject=03"])
    before = load_config(*args)
    monkeypatch.setattr(config, "RunConfig", RunConfigV2)
    after = load_config(*args)
    assert isinstance(after, RunConfigV2) and after.train.ema_decay == 0.0
    assert run_id(after) == run_id(before)
    assert config.run_dir(after) == config.run_dir(before)
    # ... but a value off the new default is a different run
    tuned = load_config(args[0], [*args[1], "train.ema_decay=0.99"])
    noted = load_config(args[0], [*args[1], "notes_level=2"])
    assert len({run_id(before), run_id(tuned), run_id(noted)}) == 3


def test_scheme_version_is_part_of_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config("neurobolt-debug")
    before = run_id(cfg)
    monkeypatch.setattr(config, "RUN_ID_SCHEME", config.RUN_ID_SCHEME + 1)
    assert run_id(cfg) != before


@pytest.mark.integration
def test_extended_schema_resumes_the_existing_run_folder(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "shards")
    runs = tmp_path / "runs"
    args = ["train", *overrides(shards, runs, train__steps=4, train__val_every=0)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}

    def brainxl(*cmd: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    brainxl("-m", "brainxl.launch.cli", *args)  # today's schema
    (folder,) = [p for p in (runs / "default").iterdir() if p.is_dir()]
    # as if the job had died after its step-2 checkpoint
    (folder / "final_metrics.json").unlink()
    (folder / "checkpoints" / "latest").write_text("step00000002")

    script = tmp_path / "brainxl_v2.py"
    script.write_text(EXTENDED_SCHEMA)
    brainxl(str(script), *args)  # the same command after the schema grew

    assert [p for p in (runs / "default").iterdir() if p.is_dir()] == [folder]
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "resume"] == [2]
    final = json.loads((folder / "final_metrics.json").read_text())
    assert final["step"] == 4
    saved = (folder / "config.yaml").read_text()
    assert "ema_decay" in saved and "notes_level" in saved  # it really ran the new schema
