"""End-to-end sweeps on tiny synthetic shards, through the ``brainxl sweep`` command.

One sweep (module fixture) over five subjects, outer subject 05, two grouped inner folds:
its search runs while the outer subject's shard folder is moved away, then the same
command finishes it. Its grid holds a good learning rate, a useless one (ASHA stops it
after one fold) and a negative one, which the optimizer refuses: the trial fails for real
(retried once, then reported). A second sweep is killed with SIGKILL mid-search and resumed
by repeating the command.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import overrides, write_shards

pytestmark = pytest.mark.integration

SUBJECTS = ("01", "02", "03", "04", "05")
GOOD, USELESS, CRASH = 3e-3, 1e-9, -2e-3  # CRASH: torch AdamW refuses lr < 0
SEARCH = f"""
space:
  train.lr: {{grid: [{GOOD}, {USELESS}, {CRASH}]}}
searcher: random
scheduler: asha
asha: {{grace_period: 1, reduction_factor: 2}}
num_samples: 1
max_concurrent: 1
inner_folds: 2
resources: {{ranks: 1, cpus: 1}}
max_failures: 1
"""
TIMEOUT_S = 1500  # generous: the machine is shared


def _overrides(shards: Path, root: Path) -> list[str]:
    skip = ("data.test_subject", "data.val_subjects", "logging.wandb")
    return [o for o in overrides(shards, root / "runs") if not o.startswith(skip)]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("WANDB_MODE", "RAY_ADDRESS"):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    # DeepSpeed JIT-builds its CPU comm op into a cache shared by every checkout on this
    # machine, under a lock; a cache of this checkout's own is built once, then reused
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    return env


def _sweep_cmd(search: Path, shards: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "brainxl.launch",
        "sweep",
        "neurobolt-debug",
        str(search),
        *_overrides(shards, root),
        "logging.wandb=offline",
        "--outer",
        "05",
        "--out",
        str(out),
        "--cpus",
        "2",
        *extra,
    ]


def _run(cmd: list[str], env: dict[str, str], log: Path) -> int:
    with open(log, "a") as f:
        proc = subprocess.Popen(
            cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=TIMEOUT_S)
        finally:
            _reap(proc)


def _reap(proc: subprocess.Popen) -> None:
    """Stop what is left of the process group this test started (Ray's helper processes)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sweep")
    shards = write_shards(root / "shards", subjects=SUBJECTS)
    search = root / "search.yaml"
    search.write_text(SEARCH)
    out = root / "sweep"
    # a W&B "server" that records every connection: offline logging must never connect
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    seen: list[str] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(2.0)
            try:
                data = conn.recv(300)
            except OSError:
                data = b""
            conn.close()
            seen.append(f"{peer}: {data!r}")

    listener = threading.Thread(target=accept, daemon=True)
    listener.start()
    env = _env(WANDB_BASE_URL=f"http://127.0.0.1:{server.getsockname()[1]}")
    log = root / "sweep.log"
    cmd = _sweep_cmd(search, shards, root, out)
    hidden = root / "hidden-sub-05"
    (shards / "sub-05").rename(hidden)  # the outer subject's shards are gone during its search
    try:
        rc_search = _run([*cmd, "--search-only"], env, log)
    finally:
        hidden.rename(shards / "sub-05")
    finals_after_search = (out / "outer-05" / "final").exists()
    rc_full = _run(cmd, env, log) if rc_search == 0 else None
    stop.set()
    listener.join()
    server.close()
    return {
        "root": root,
        "out": out,
        "shards": shards,
        "log": log,
        "rc_search": rc_search,
        "rc_full": rc_full,
        "finals_after_search": finals_after_search,
        "connections": seen,
        "search": search,
    }


def _ok(s: dict[str, Any]) -> None:
    assert s["rc_search"] == 0 and s["rc_full"] == 0, s["log"].read_text()[-4000:]


def _trials(out: Path) -> dict[float, dict[str, Any]]:
    data = json.loads((out / "outer-05" / "search.json").read_text())
    return {t["params"]["train.lr"]: t for t in data["trials"]}


def test_outer_subject_is_never_opened_during_its_search(sweep: dict[str, Any]) -> None:
    _ok(sweep)  # the search ran to the end with sub-05's shards moved away
    assert not sweep["finals_after_search"]
    od = sweep["out"] / "outer-05"
    view = json.loads((od / "shards" / "manifest.json").read_text())
    assert sorted(view["subjects"]) == ["01", "02", "03", "04"]
    runs = sorted((od / "runs").glob("*/*/final_metrics.json"))
    assert runs
    for final in runs:
        folder = final.parent
        split = json.loads(final.read_text())["split"]
        assert "05" not in split["train"] + split["val"] + split["test"]
        assert json.loads((folder / "data.json").read_text())["shards"] == str(od / "shards")
    # the retrain is the only run that sees the outer subject, as its test subject
    final_runs = sorted((od / "final").glob("*/*/final_metrics.json"))
    assert final_runs
    for final in final_runs:
        m = json.loads(final.read_text())
        assert m["split"]["test"] == ["05"] and m["test"]["subject"] in ("05", "sub-05")


def test_asha_stops_the_weak_config_and_a_crashing_trial_is_retried_then_reported(
    sweep: dict[str, Any],
) -> None:
    _ok(sweep)
    trials = _trials(sweep["out"])
    good, useless, crash = trials[GOOD], trials[USELESS], trials[CRASH]
    assert good["state"] == "done" and len(good["folds"]) == 2
    # ASHA (reduction factor 2) stops a trial whose first-fold score is below the good one's
    assert useless["folds"][0]["val_pearson_r"] < good["folds"][0]["val_pearson_r"]
    assert useless["state"] == "stopped" and len(useless["folds"]) == 1
    assert crash["state"] == "error" and crash["folds"] == []
    assert crash["attempts"] == 2  # max_failures: 1 -> one retry, then reported
    assert "learning rate" in crash["error"] and str(CRASH) in crash["error"], crash["error"]
    result = json.loads((sweep["out"] / "outer-05" / "result.json").read_text())
    assert result["params"] == {"train.lr": GOOD}
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch", "sweep", "--status", str(sweep["out"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    for word in ("done", "stopped", "error", "2/2", "1/2", "0/2", "outer subject 05"):
        assert word in proc.stdout


def test_report_numbers_match_the_per_fold_metrics_files(sweep: dict[str, Any]) -> None:
    from brainxl.launch.sweep_trial import fold_score

    _ok(sweep)
    out = sweep["out"]
    report = json.loads((out / "report.json").read_text())
    (r,) = report["outer"]
    good = _trials(out)[GOOD]
    scores = [fold_score(f["run_dir"])["val_pearson_r"] for f in good["folds"]]
    assert r["inner_score"] == pytest.approx(sum(scores) / len(scores), abs=1e-12)
    for key, run in (("tuned_r", "tuned_run"), ("default_r", "default_run")):
        m = json.loads((Path(r[run]) / "final_metrics.json").read_text())
        assert r[key] == pytest.approx(m["test"]["mean_r"], abs=1e-12)
        per_subject = json.loads(next((Path(r[run]) / "test").glob("metrics-*.json")).read_text())
        assert r[key] == pytest.approx(per_subject["mean_r"], abs=1e-9)
    assert r["tuned_run"] != r["default_run"]
    assert r["ridge_r"] is not None and -1 <= r["ridge_r"] <= 1
    assert report["summary"]["tuned_r"]["mean"] == pytest.approx(r["tuned_r"])
    md = (out / "report.md").read_text()
    for value in (r["inner_score"], r["tuned_r"], r["default_r"], r["ridge_r"]):
        assert f"{value:.4g}" in md
    for fig in ("search_progress.png", "per_subject_r.png"):
        assert (out / "figures" / fig).stat().st_size > 1000


def _offline_runs(folder: Path) -> dict[str, Path]:
    return {p.name.rsplit("-", 1)[1]: p for p in folder.glob("wandb/offline-run-*")}


def test_wandb_offline_runs_per_trial_and_fold_and_no_network(sweep: dict[str, Any]) -> None:
    _ok(sweep)
    assert sweep["connections"] == []
    out = sweep["out"]
    name = json.loads((out / "sweep.json").read_text())["name"]
    od = out / "outer-05"
    runs = _offline_runs(od)
    expected = 0
    for t in _trials(out).values():
        for f in t["folds"]:
            k = f["fold"] + 1
            rid = hashlib.sha256(f"{name}/05/{t['trial_id']}/{k}".encode()).hexdigest()[:16]
            assert rid in runs, (rid, sorted(runs))
            blob = (runs[rid] / f"run-{rid}.wandb").read_bytes()
            assert f"{name}/outer-05".encode() in blob  # group: sweep and outer fold
            assert f"inner-{k}".encode() in blob  # job type: the inner fold
            assert b"val_pearson_r" in blob  # the fold's score in the summary
            log = (runs[rid] / "logs" / "debug.log").read_text()
            config = ast.literal_eval(log.split("\nconfig: ", 1)[1].splitlines()[0])
            assert config["train.lr"] == t["params"]["train.lr"]
            assert config["inner_fold"] == k and config["outer_subject"] == "05"
            assert config["val_subjects"] == f["val_subjects"]
            expected += 1
    assert len(runs) == expected == 3  # good: 2 folds, useless: 1, crash: none
    (summary,) = _offline_runs(out).values()
    blob = next(summary.glob("run-*.wandb")).read_bytes()
    assert b"summary" in blob and b"tuned_r" in blob


@pytest.mark.timeout(2 * TIMEOUT_S)
def test_kill_9_of_the_driver_then_the_same_command_resumes(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "shards", subjects=SUBJECTS)
    search = tmp_path / "search.yaml"
    search.write_text(
        "space:\n  train.lr: {grid: [0.003, 0.001]}\nnum_samples: 1\nmax_concurrent: 1\n"
        "inner_folds: 3\nresources: {ranks: 1, cpus: 1}\n"
    )
    out = tmp_path / "sweep"
    cmd = [*_sweep_cmd(search, shards, tmp_path, out, "--search-only")]
    cmd[cmd.index("logging.wandb=offline")] = "logging.wandb=disabled"
    env, log = _env(), tmp_path / "sweep.log"
    trials = out / "outer-05" / "trials"

    def records() -> list[dict[str, Any]]:
        recs = []
        for p in sorted(trials.glob("*_?????.json")):
            with contextlib.suppress(json.JSONDecodeError):
                recs.append(json.loads(p.read_text()))
        return recs

    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + TIMEOUT_S
            # kill once the first trial finished and the second finished one inner fold
            while time.monotonic() < deadline and proc.poll() is None:
                recs = records()
                if len(recs) == 2 and len(recs[0]["folds"]) == 3 and len(recs[1]["folds"]) >= 1:
                    break
                time.sleep(0.5)
            assert proc.poll() is None, log.read_text()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            _reap(proc)
    before = records()
    done_folds = {f["run_dir"]: f for r in before for f in r["folds"]}
    stamps = {d: (Path(d) / "final_metrics.json").stat().st_mtime_ns for d in done_folds}
    assert len(before[1]["folds"]) < 3, "the second trial finished before the kill"

    assert _run(cmd, env, log) == 0, log.read_text()[-4000:]
    after = records()
    assert [len(r["folds"]) for r in after] == [3, 3]
    assert after[0]["attempts"] == 1  # the finished trial was not started again
    for d, stamp in stamps.items():  # finished inner folds were not trained again
        assert (Path(d) / "final_metrics.json").stat().st_mtime_ns == stamp
    for r in after:
        for f in r["folds"]:
            if f["run_dir"] in done_folds:
                assert f == done_folds[f["run_dir"]]
    # one run folder per trial and fold, nothing trained twice
    assert len(list((out / "outer-05" / "runs").glob("*/*/final_metrics.json"))) == 6
    search_result = json.loads((out / "outer-05" / "search.json").read_text())
    states = [(t["trial_id"], t["state"], t["error"]) for t in search_result["trials"]]
    assert {s for _, s, _ in states} == {"done"}, (states, log.read_text()[-3000:])
    # the resumed search's numbers are those of the per-fold metrics files
    from brainxl.launch.sweep_trial import fold_score

    objectives = []
    for t in search_result["trials"]:
        scores = [fold_score(f["run_dir"])["val_pearson_r"] for f in t["folds"]]
        assert [f["val_pearson_r"] for f in t["folds"]] == scores
        assert t["objective"] == pytest.approx(sum(scores) / len(scores), abs=1e-12)
        objectives.append(t["objective"])
    assert search_result["best"]["objective"] == max(objectives)
