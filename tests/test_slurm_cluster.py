"""Tests against the real single-machine SLURM cluster (``slurm/start-cluster.sh``).

Two CPU nodes ``n1``/``n2`` with one core each; accounting through slurmdbd so submitit
reads job states from ``sacct``. Run with ``pytest -m slurm`` after starting the cluster.

Every wait polls a job state or a log/file condition (:func:`_wait_until`) under an
explicit, generous limit (``BRAINXL_SLURM_TEST_SCALE`` multiplies them all): on a loaded
machine a job start (Python, torch, DeepSpeed imports) can take minutes, and no test may
depend on how fast that is.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import train_fixtures
import yaml
from brainxl.launch import cli, slurm

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
STEPS, CKPT_EVERY = 150, 4
SCALE = float(os.environ.get("BRAINXL_SLURM_TEST_SCALE", "1"))
JOB_LIMIT_S = 900.0 * SCALE  # a whole training job
STEP_LIMIT_S = 600.0 * SCALE  # one stage of a job: start, resume, a checkpoint, a requeue


def _wait_until(condition, limit_s: float, what: str, poll_s: float = 0.5, on_fail=None):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``.

    ``on_fail()`` (optional) returns extra text for the failure message (a log tail).
    """
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() - t0 > limit_s:
            extra = on_fail() if on_fail else ""
            pytest.fail(f"{what} (not within {limit_s:.0f} s){': ' + extra if extra else ''}")
        time.sleep(poll_s)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


@pytest.fixture(scope="module", autouse=True)
def cluster(slurm_cluster: str) -> str:
    return slurm_cluster


def _cfg(tmp_path: Path, overrides: list[str], experiment: str = "slurmtest"):
    from brainxl.distrib.config import load_config

    path = tmp_path / "run.yaml"
    path.write_text(f"experiment: {experiment}\n")
    return load_config(path, overrides)


def _wait(job, timeout: float = JOB_LIMIT_S) -> list:
    def tail() -> str:
        subprocess.run(["scancel", str(job.job_id)], check=False)
        return str(job.stdout())[-3000:]

    _wait_until(job.done, timeout, f"job {job.job_id} did not finish", 1.0, tail)
    try:
        return job.results()
    finally:  # the epilogue: nodes are free once SLURM no longer lists the job
        slurm.wait_until_finished([str(job.job_id)], timeout_s=STEP_LIMIT_S)


# ---------------------------------------------------------------------- env + scripts
def test_two_node_allreduce_status_logs(tmp_path: Path, capsys) -> None:
    cfg = _cfg(tmp_path, [f"run.root={tmp_path / 'runs'}"])
    profile = slurm.load_profile("local")
    job, rdir = slurm.submit_run(cfg, profile, target="brainxl.launch.slurm:allreduce_check")
    results = _wait(job)
    assert [r["rank"] for r in results] == [0, 1]
    assert results[0]["nodes"] == ["n1", "n2"]  # one rank on each node
    assert results[0]["sum"] == results[0]["expected"] == 3.0

    # what submitit submitted is exactly what --dry-run prints
    submitted = (Path(job.paths.folder) / f"{job.job_id}_submission.sh").read_text()
    cfg_file = tmp_path / "run.yaml"
    assert (
        cli.main(
            [
                "submit",
                str(cfg_file),
                f"run.root={tmp_path / 'runs'}",
                "--cluster",
                "local",
                "--dry-run",
            ]
        )
        == 0
    )
    dry = capsys.readouterr().out.split("# run folder:")[0]
    assert submitted == dry

    assert cli.main(["status", "--root", str(tmp_path / "runs")]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(str(job.job_id))]
    assert line and "COMPLETED" in line[0] and str(rdir) in line[0]
    assert cli.main(["logs", str(rdir), "-n", "100"]) == 0
    assert "Job completed successfully" in capsys.readouterr().out


def test_quoting_profile_runs_without_injection(tmp_path: Path) -> None:
    raw = yaml.safe_load((GOLDEN / "quoting.yaml").read_text())
    raw.pop("constraint")  # the test nodes have no features
    raw["cpus_per_task"] = 1  # ... and one CPU each
    raw["slurm_setup"].append('printf "NOTE=%s\\n" "$BRAINXL_NOTE"')
    prof_file = tmp_path / "quoting.yaml"
    prof_file.write_text(yaml.safe_dump(raw))
    profile = slurm.load_profile(prof_file)
    marker = Path("/tmp/brainxl-injected")
    marker.unlink(missing_ok=True)
    cfg = _cfg(tmp_path, [f"run.root={tmp_path / 'runs'}"])
    job, _ = slurm.submit_run(cfg, profile, target="brainxl.launch.slurm:allreduce_check")
    info = subprocess.run(
        ["scontrol", "show", "job", str(job.job_id)], capture_output=True, text=True
    ).stdout
    _wait(job)
    assert f"Comment={raw['additional_parameters']['comment']}" in info
    log = Path(job.paths.stdout).read_text()
    assert f"NOTE={raw['env']['BRAINXL_NOTE']}\n" in log
    assert "setup with spaces and 'quotes'" in log
    assert not marker.exists()


# ---------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return train_fixtures.write_shards(tmp_path_factory.mktemp("slurm-shards") / "shards")


def _train_overrides(shards: Path, runs: Path, **extra) -> list[str]:
    base = {
        "train__steps": STEPS,
        "train__ckpt_every": CKPT_EVERY,
        "train__val_every": 0,
        "train__log_every": 1,
        "train__keep_last": 2,
        "logging__console": True,
    }
    base.update(extra)
    return train_fixtures.overrides(shards, runs, **base)


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory) -> dict:
    """The same config trained locally with 2 ranks, uninterrupted."""
    from brainxl.distrib.config import run_dir
    from brainxl.launch.local import launch_local

    tmp = tmp_path_factory.mktemp("slurm-ref")
    cfg = _cfg(tmp, _train_overrides(shards, tmp / "runs"))
    final = launch_local(cfg, nproc=2)
    return {"final": final, "dir": run_dir(cfg)}


def _weights(run: Path) -> dict:
    import torch

    return torch.load(run / "final_model.pt", map_location="cpu", weights_only=True)


def _assert_same_weights(a: Path, b: Path, exact: bool = True) -> None:
    """Equal weights; ``exact=False`` allows float rounding (a resumed DeepSpeed run
    differs from an uninterrupted one by ~1e-9 here)."""
    import torch

    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if exact:
            assert torch.equal(wa[k], wb[k]), f"weights differ at {k}"
        else:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-7, msg=f"at {k}")


def _numbers(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def test_two_node_training_matches_local(
    shards: Path, reference: dict, tmp_path: Path, capsys
) -> None:
    """`brainxl submit --cluster local`: one rank per node, same result as 2 local ranks."""
    overrides = _train_overrides(shards, tmp_path / "runs")
    _cfg(tmp_path, overrides)  # writes run.yaml
    rc = cli.main(
        ["submit", str(tmp_path / "run.yaml"), *overrides, "--cluster", "local", "--wait"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    rdir = Path(re.search(r"submitted \S+\s+(\S+)", out).group(1))
    record = json.loads((rdir / slurm.JOB_RECORD).read_text())
    final = json.loads((rdir / "final_metrics.json").read_text())
    ref = reference["final"]
    assert final["step"] == ref["step"] == STEPS
    got, want = _numbers(final["test"]), _numbers(ref["test"])
    assert got and got == pytest.approx(want, rel=1e-6)
    _assert_same_weights(rdir, reference["dir"])
    logs = [Path(record["stdout"].replace("_0_log", f"_{r}_log")).read_text() for r in (0, 1)]
    assert "node=0(2)" in logs[0] and "global_rank=0(2)" in logs[0]
    assert "node=1(2)" in logs[1] and "global_rank=1(2)" in logs[1]
    sacct = subprocess.run(
        ["sacct", "-n", "-P", "-o", "JobID,NodeList,State", "-j", record["job_id"]],
        capture_output=True,
        text=True,
    ).stdout
    assert f"{record['job_id']}|n[1-2]|COMPLETED" in sacct, sacct


def _steps_redone(log: str) -> tuple[int, int]:
    """(last step logged before the first resume, step resumed from)."""
    before, _, after = log.partition("[resume] step ")
    assert after, "the job did not resume from a checkpoint"
    done = [int(m) for m in re.findall(r"\[train\] step (\d+)/", before)]
    return max(done), int(re.match(r"\d+", after).group())


def latest_step(run: Path) -> int:
    """Step of the run's latest complete checkpoint (-1 before the first)."""
    from brainxl.distrib import checkpoint as ckpt

    tag = ckpt.read_latest(run / "checkpoints")
    return int(re.search(r"\d+", tag).group()) if tag else -1


def interrupt_after_checkpoint(
    run: Path, step: int, job_id: str, command: list[str], timeout: float = STEP_LIMIT_S
) -> int:
    """Run ``command`` (a requeue, a signal) on the job as soon as it has saved a
    checkpoint at step >= ``step``; returns that checkpoint's step.

    A whole test training run takes seconds: the poll reads only the checkpoint folder
    (every 20 ms) and asks SLURM for the job's state every 2 s, so the command lands
    within a few steps of the checkpoint, far from the end of the run.
    """
    asked = [time.monotonic()]

    def saved() -> int | None:
        if (got := latest_step(run)) >= step:
            return got
        if time.monotonic() - asked[0] > 2.0:
            asked[0] = time.monotonic()
            state = slurm.job_states([job_id]).get(job_id, "PENDING")
            if state not in slurm._ACTIVE_STATES:
                pytest.fail(f"job {job_id} ended ({state}) before a checkpoint at step >= {step}")
        return None

    got = _wait_until(saved, timeout, f"no checkpoint at step >= {step} in {run}", 0.02)
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(command)} failed at step {got}: {out.stderr}"
    return got


def _release_requeued(job_id: str, timeout: float = STEP_LIMIT_S) -> None:
    """Wait until SLURM has requeued the job; it starts again by itself.

    SLURM holds a requeued job until its old credential expires (``cred_expire``, 120 s by
    default): forcing ``StartTime=now`` earlier lands it on a node that still holds the
    revoked credential ("Killing non-startable batch job: Job credential revoked").
    """

    def requeued() -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
        ).stdout.split()
        return out[:1] in (["PENDING"], ["RUNNING"])

    _wait_until(requeued, timeout, f"job {job_id} was not requeued", 0.3)


def _wait_for_log(log: Path, pattern: str, what: str, timeout: float = STEP_LIMIT_S) -> re.Match:
    return _wait_until(
        lambda: re.search(pattern, _text(log)), timeout, what, 0.3, lambda: _text(log)[-3000:]
    )


@pytest.mark.parametrize("how", ["requeue", "usr2"])
def test_preempted_job_resumes_to_same_weights(
    how: str, shards: Path, reference: dict, tmp_path: Path
) -> None:
    cfg = _cfg(tmp_path, _train_overrides(shards, tmp_path / "runs"))
    job, rdir = slurm.submit_run(cfg, slurm.load_profile("local"))
    if how == "requeue":  # preemption by an admin or a higher-priority job
        command = ["scontrol", "requeue", str(job.job_id)]
    else:  # what SLURM sends signal_delay_s before the time limit
        command = ["scancel", "--signal=USR2", str(job.job_id)]
    interrupt_after_checkpoint(rdir, CKPT_EVERY, str(job.job_id), command)
    _release_requeued(str(job.job_id))
    results = _wait(job)
    assert results[0]["step"] == STEPS
    log = Path(job.paths.stdout).read_text()
    last, resumed = _steps_redone(log)
    assert CKPT_EVERY <= resumed <= last < STEPS
    # USR2 and SLURM's SIGTERM both make the ranks save where they are: nothing is redone
    assert resumed == last and f"stop requested: saved step {last}" in log, log[-3000:]
    if how == "usr2":  # submitit's handler in rank 0 requeued the job
        both = log + Path(job.paths.stderr).read_text()
        assert "Caught signal SIGUSR2" in both and "Calling checkpoint method" in both
    _assert_same_weights(rdir, reference["dir"], exact=False)
    acct = subprocess.run(
        ["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State", "-j", str(job.job_id)],
        capture_output=True,
        text=True,
    ).stdout
    assert "REQUEUED" in acct or "PREEMPTED" in acct or acct.count("\n") >= 2, acct


def test_loso_array_and_collect(shards: Path, tmp_path: Path, capsys) -> None:
    prof = yaml.safe_load((REPO / "configs" / "cluster" / "local.yaml").read_text())
    prof["nodes"] = 1  # two folds in parallel, one per node
    prof_file = tmp_path / "one-node.yaml"
    prof_file.write_text(yaml.safe_dump(prof))
    cfg_file = tmp_path / "loso.yaml"
    cfg_file.write_text("experiment: loso\n")
    runs = tmp_path / "runs"
    overrides = [
        o
        for o in _train_overrides(shards, runs, train__steps=4, logging__console=False)
        if not o.startswith(("data.test_subject=", "data.val_subjects="))
    ]
    rc = cli.main(
        ["submit", str(cfg_file), *overrides, "--cluster", str(prof_file), "--loso"]
        + ["--max-parallel", "2", "--wait"]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    subjects = sorted(json.loads((shards / "manifest.json").read_text())["subjects"])
    assert out.count("submitted ") == len(subjects)
    assert cli.main(["collect", str(runs / "loso")]) == 0
    report = capsys.readouterr().out
    assert f"{len(subjects)} fold(s), {len(subjects)} with results." in report
    for s in subjects:
        assert re.search(rf"\| test-{s}-[0-9a-f]{{12}} \| {s} \| -?\d\.\d{{3}} \|", report), report


def test_plain_sbatch_template_matches_local(shards: Path, reference: dict, tmp_path: Path) -> None:
    """slurm/templates/train-cpu.sbatch (no submitit) trains the same run on 2 nodes."""
    from brainxl.distrib.config import run_dir

    overrides = _train_overrides(shards, tmp_path / "runs")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("experiment: slurmtest\n")
    (tmp_path / "runs").mkdir()
    env = {**os.environ, "BRAINXL_REPO": str(REPO), "BRAINXL_PYTHON": sys.executable}
    out = subprocess.run(
        ["sbatch", "--parsable", str(REPO / "slurm/templates/train-cpu.sbatch"), str(cfg_file)]
        + overrides,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = out.stdout.strip().split(";")[0]

    def ended() -> str:
        state = slurm.job_states([job_id]).get(job_id, "")
        return state if state and state not in slurm._ACTIVE_STATES else ""

    log_path = tmp_path / "runs" / f"slurm-{job_id}.out"
    state = _wait_until(
        ended, JOB_LIMIT_S, f"sbatch job {job_id} did not end", 1.0, lambda: _text(log_path)
    )
    log = log_path.read_text()
    assert state == "COMPLETED", log
    assert "2 nodes, 2 ranks" in log
    _assert_same_weights(run_dir(_cfg(tmp_path, overrides)), reference["dir"])


def test_time_limit_requeues_are_bounded(shards: Path, tmp_path: Path) -> None:
    """Each USR2 at a time limit uses one requeue; past ``max_requeues`` the job stops."""
    prof = yaml.safe_load((REPO / "configs" / "cluster" / "local.yaml").read_text())
    # time_min <= 10: submitit counts every USR2 as a time-out (its guaranteed walltime,
    # min(0.8 T, T - 10 min), is <= 0), while SLURM's own USR2 (T - signal_delay_s = 9.5
    # min into an attempt) stays far beyond what a loaded machine needs to resume.
    prof.update(nodes=1, max_requeues=1, time_min=10, signal_delay_s=30)
    prof_file = tmp_path / "bounded.yaml"
    prof_file.write_text(yaml.safe_dump(prof))
    cfg = _cfg(tmp_path, _train_overrides(shards, tmp_path / "runs", train__steps=100_000))
    job, rdir = slurm.submit_run(cfg, slurm.load_profile(prof_file))
    log = Path(job.paths.stdout)

    usr2 = ["scancel", "--signal=USR2", str(job.job_id)]
    interrupt_after_checkpoint(rdir, CKPT_EVERY, str(job.job_id), usr2)
    _release_requeued(str(job.job_id))
    m = _wait_for_log(log, r"\[resume\] step (\d+)", "the requeued job did not resume")
    resumed = int(m.group(1))
    interrupt_after_checkpoint(rdir, resumed + CKPT_EVERY, str(job.job_id), usr2)
    with pytest.raises(Exception, match="timed-out too many times"):
        _wait(job)
    text = log.read_text()
    assert text.count("[resume] step") == 1  # one requeue, then no more
    assert text.count("Calling checkpoint method") == 2
    assert not (rdir / "final_metrics.json").exists()  # stopped, not finished
