"""The submitted callable (:class:`launch.slurm.TrainJob`) outside a cluster.

The SLURM task environment is set the way ``srun`` sets it for one task, and the real
submitit ``JobEnvironment`` reads it.
"""

from __future__ import annotations

import os
import pickle
import signal

import pytest
from brainxl.distrib import signals
from brainxl.launch import slurm

SLURM_TASK_ENV = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "0",
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_JOB_NODELIST": "localhost",
}


@pytest.fixture
def task_env(monkeypatch):
    for k, v in SLURM_TASK_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    old = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR2, old)


def usr2_target(cfg: dict) -> dict:
    """A 'trainer' that receives the time-limit signal mid-run."""
    os.kill(os.getpid(), signal.SIGUSR2)
    return {"cfg": cfg, "stop": signals.stop_requested(), "rank": os.environ["RANK"]}


def failing_target(cfg: dict) -> None:
    """A rank whose peer was killed first by a requeue."""
    os.kill(os.getpid(), signal.SIGTERM)  # SLURM starts killing the job
    raise RuntimeError("Connection closed by peer")


def test_export_keeps_devices(task_env) -> None:
    env = slurm.export_distributed_env()
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "1" and env["LOCAL_RANK"] == "0"
    assert env["MASTER_ADDR"] == "localhost"
    assert 20000 <= int(env["MASTER_PORT"]) <= 60000
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # DeepSpeed picks by LOCAL_RANK


def test_usr2_reaches_submitit_handler_once(task_env) -> None:
    calls: list[int] = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))  # submitit's
    job = slurm.TrainJob({"x": 1}, target=f"{__name__}:usr2_target")
    out = job()
    assert out == {"cfg": {"x": 1}, "stop": True, "rank": "0"}
    assert calls == [signal.SIGUSR2]


def test_checkpoint_resubmits_same_job() -> None:
    job = slurm.TrainJob({"x": 1}, target="mod:fn")
    delayed = slurm.TrainJob.checkpoint(job)
    again = pickle.loads(pickle.dumps(delayed.function))
    assert isinstance(again, slurm.TrainJob)
    assert (again.cfg, again.target) == ({"x": 1}, "mod:fn")
    assert delayed.args == () and delayed.kwargs == {}


def test_failure_after_kill_signal_waits_for_slurm(task_env, monkeypatch) -> None:
    import time

    from submitit.core.utils import UncompletedJobError

    monkeypatch.setattr(slurm, "KILL_GRACE_S", 0.5)
    old_term = signal.signal(signal.SIGTERM, lambda *a: None)  # submitit's bypass
    try:
        t0 = time.time()
        with pytest.raises(RuntimeError, match="closed by peer"):
            slurm.TrainJob({}, target=f"{__name__}:failing_target")()
        assert time.time() - t0 >= 0.5  # waited for SIGKILL instead of reporting at once
    finally:
        signal.signal(signal.SIGTERM, old_term)
    # no signal seen, or submitit refusing another requeue: reported immediately
    signals.clear()
    t0 = time.time()
    slurm._await_kill_if_requeued(RuntimeError("real bug"))
    signals.record_kill("SIGTERM")
    slurm._await_kill_if_requeued(UncompletedJobError("timed-out too many times"))
    signals.clear()
    assert time.time() - t0 < 0.3


def test_requeue_command_killed_by_the_requeue_waits_for_slurm(task_env, monkeypatch) -> None:
    """submitit's `scontrol requeue` dies of the SIGTERM of the requeue it asked for: the
    job is being requeued, so the task waits for SLURM instead of reporting a failure."""
    import subprocess
    import time

    from submitit.core.utils import UncompletedJobError

    monkeypatch.setattr(slurm, "KILL_GRACE_S", 0.5)

    def requeue_killed(signum, frame) -> None:  # submitit's checkpoint-and-requeue handler
        raise subprocess.CalledProcessError(-signal.SIGTERM, ["scontrol", "requeue", "4242"])

    signal.signal(signal.SIGUSR2, requeue_killed)
    t0 = time.time()
    with pytest.raises(subprocess.CalledProcessError):
        slurm.TrainJob({"x": 1}, target=f"{__name__}:usr2_target")()
    assert time.time() - t0 >= 0.5  # waited for SLURM's SIGKILL

    # submitit refusing to requeue (too many timeouts) is the job's result, at once
    def no_requeue(signum, frame) -> None:
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    signal.signal(signal.SIGUSR2, no_requeue)
    t0 = time.time()
    with pytest.raises(UncompletedJobError):
        slurm.TrainJob({"x": 1}, target=f"{__name__}:usr2_target")()
    assert time.time() - t0 < 0.3
