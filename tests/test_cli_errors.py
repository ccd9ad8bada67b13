"""Every command speaks the same way: a user mistake is one line on stderr, exit code 2.

``cli.main`` turns the project's user errors (``ValueError`` and kin: ``ConfigError``,
``ProfileError``, ``RunLockedError``, a missing file) into ``brainxl CMD: error: ...``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from brainxl.launch.cli import main


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    bad_profile = tmp / "bad-profile.yaml"
    bad_profile.write_text("partition: debug\nnodez: 2\n")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("train: [unclosed\n")
    missing = str(tmp / "missing")
    return [
        (["train", "nope"], "config file 'nope' not found"),
        (["train", "neurobolt-debug", "train.lrr=1"], "did you mean 'train.lr'?"),
        (["train", "neurobolt-debug", "train.lr=abc"], "wrong type for config key 'train.lr'"),
        (["train", "neurobolt-debug", "nokeyvalue"], "must look like key=value"),
        (["train", str(bad_yaml)], "cannot parse"),
        (["train", "neurobolt-debug", f"data.shards={missing}"], "manifest.json not found"),
        (
            ["submit", "neurobolt-debug", "--cluster", "nope", "--dry-run"],
            "cluster profile 'nope' not found",
        ),
        (
            ["submit", "neurobolt-debug", "--cluster", str(bad_profile), "--dry-run"],
            "unknown cluster profile key 'nodez' (did you mean 'nodes'?)",
        ),
        (["submit", "nope", "--dry-run"], "config file 'nope' not found"),
        (["submit", "neurobolt-debug", "train.lrr=3", "--dry-run"], "did you mean 'train.lr'?"),
        (
            ["submit", "neurobolt-debug", f"data.shards={missing}", "--loso", "--dry-run"],
            "--loso needs the subject list",
        ),
        (["logs", "zzz", "--root", missing], "no submitted run matches 'zzz'"),
        (["collect", missing], "does not exist"),
        (["shard", missing, str(tmp / "out")], "dataset_description.json"),
        (["shard", missing], "need BIDS_DIR OUT"),
        (["simulate", "/proc/brainxl-cannot-write-here"], "/proc/brainxl-cannot-write-here"),
        (["evaluate", missing], "neither a run folder"),
        (["predict", missing, missing, str(tmp / "pred")], "neither a run folder"),
        (["sweep", "neurobolt-debug", "no-such-search"], "search file 'no-such-search' not found"),
        (["sweep", "--status", missing], "is not a sweep folder"),
    ]


@pytest.mark.parametrize("index", range(20))
def test_user_mistake_is_one_line(index: int, tmp_path: Path, capsys) -> None:
    argv, fragment = _cases(tmp_path)[index]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"brainxl {argv[0]}: error: "), lines[0]
    assert fragment in lines[0]
    assert "Traceback" not in captured.out + captured.err


def test_submit_bad_cluster_from_the_console_script(tmp_path: Path) -> None:
    """The reported case: a traceback before, one line now (a real process)."""
    env = {k: v for k, v in os.environ.items() if k != "BRAINXL_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch", "submit", "neurobolt-debug"]
        + ["--cluster", "nope", "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("brainxl submit: error: cluster profile 'nope' not found")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from brainxl.distrib.config import ConfigError

    monkeypatch.setenv("BRAINXL_DEBUG", "1")
    with pytest.raises(ConfigError, match="not found"):
        main(["train", "nope"])


@contextlib.contextmanager
def _lock_held_elsewhere(path: Path) -> Iterator[subprocess.Popen]:
    """Another live process holding the run lock ``path``."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from brainxl.distrib.runlock import RunLock\n"
            "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_run_locked_is_one_line(tmp_path: Path, capsys) -> None:
    from brainxl.distrib.config import load_config, run_dir
    from brainxl.distrib.rundir import RunDir
    from train_fixtures import overrides, write_shards

    shards = write_shards(tmp_path / "shards")
    args = overrides(shards, tmp_path / "runs")
    folder = run_dir(load_config(None, args))
    folder.mkdir(parents=True)
    with _lock_held_elsewhere(RunDir(folder).lock_path) as holder:
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("brainxl train: error: run folder")
        assert f"pid {holder.pid}" in err[0]
        plain = tmp_path / "default.yaml"
        plain.write_text("experiment: default\n")  # the same run as the schema defaults
        assert main(["submit", str(plain), *args, "--cluster", "local"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0]


def test_second_driver_of_a_live_sweep_is_refused(tmp_path: Path, capsys) -> None:
    from brainxl.launch.sweep import SWEEP_LOCK
    from train_fixtures import overrides, write_shards

    shards = write_shards(tmp_path / "shards")
    args = [a for a in overrides(shards, tmp_path / "runs") if not a.startswith("data.test")]
    search = tmp_path / "search.yaml"
    search.write_text("space:\n  train.lr: {grid: [0.001, 0.003]}\ninner_folds: 2\n")
    out = tmp_path / "sweep"
    with _lock_held_elsewhere(out / SWEEP_LOCK) as holder:
        cmd = ["sweep", "neurobolt-debug", str(search), *args, "--out", str(out)]
        assert main([*cmd, "--search-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"brainxl sweep: error: sweep folder {out} is in use by pid")
    assert f"pid {holder.pid}" in err[-1] and "pass another --out" in err[-1]
    assert not (out / "outer-05").exists()  # nothing was started
