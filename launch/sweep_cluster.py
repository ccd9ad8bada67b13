"""A sweep inside one SLURM allocation: a Ray cluster across its nodes (``--cluster``).

:func:`submit_sweep` submits one submitit job of the cluster profile, one task per node
(:class:`SweepJob`). In the allocation, the task on the first node starts the Ray head
(``ray start --head --block``), waits for the other nodes, runs the sweep against it
(:func:`brainxl.launch.sweep.run_sweep` with its address) and stops Ray; every other
task joins the head as a Ray worker node and leaves when the head says the sweep is over.
Ports and the short Ray temp dir are derived from the job id; CPUs and GPUs from the
allocation. The job is checkpointable: a requeued job (time limit, preemption) runs the
same sweep again, which resumes from the sweep folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Ray's GCS port of a job: ``BASE + job_id % SPAN`` (away from DeepSpeed's 20000-39999).
RAY_PORT_BASE, RAY_PORT_SPAN = 40000, 10000
HEAD_READY = "ray-head.json"
TOKEN_FILE = "ray-auth-token"
SWEEP_JOB_RECORD = "sweep_slurm_job.json"
SWEEP_OVER = "sweep-over"


def ray_port(job_id: str) -> int:
    """The Ray head port of SLURM job ``job_id`` (``12345`` or ``12345_3``)."""
    return RAY_PORT_BASE + int(str(job_id).split("_")[0]) % RAY_PORT_SPAN


def ray_temp_dir(job_id: str, node_rank: int) -> str:
    """A short per-job, per-node Ray temp dir (Unix socket paths must stay < 108 bytes)."""
    return f"/tmp/brx-{str(job_id).split('_')[0]}-{node_rank}"


def allocation_resources(environ: dict[str, str] | None = None) -> tuple[int, int]:
    """CPUs and GPUs SLURM gave this node of the job (``SLURM_CPUS_ON_NODE``, GPUs)."""
    env = os.environ if environ is None else environ
    cpus = int(env.get("SLURM_CPUS_ON_NODE") or env.get("SLURM_CPUS_PER_TASK") or 1)
    gpus_raw = env.get("SLURM_GPUS_ON_NODE") or ""
    if gpus_raw.isdigit():
        gpus = int(gpus_raw)
    else:
        visible = env.get("CUDA_VISIBLE_DEVICES", "")
        gpus = len([d for d in visible.split(",") if d.strip()]) if visible else 0
    return cpus, gpus


def _ray_cli() -> list[str]:
    """The ``ray`` command of this interpreter (a ``ray`` script may belong to another env)."""
    return [sys.executable, "-m", "ray.scripts.scripts"]


class SweepJob:
    """The callable every task of the sweep job runs (one task per node).

    Parameters
    ----------
    args : dict
        ``config``, ``search``, ``overrides``, ``out`` (the sweep folder), ``outer``,
        ``ridge``: what :func:`brainxl.launch.sweep.plan`/``run_sweep`` take.
    """

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same sweep on a time limit or preemption (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(self.args))

    def __call__(self) -> dict[str, Any] | None:
        import submitit

        env = submitit.JobEnvironment()
        os.environ.setdefault("RAY_worker_niceness", "0")  # see sweep.start_ray
        job_id = str(env.job_id).split("_")[0]
        control = Path(self.args["out"]) / ".slurm" / job_id
        control.mkdir(parents=True, exist_ok=True)
        if env.global_rank == 0:
            _use_token(control, create=True)
            return self._head(env, job_id, control)
        if env.local_rank == 0:
            self._worker(env, job_id, control)
        return None

    def _head(self, env: Any, job_id: str, control: Path) -> dict[str, Any]:
        from brainxl.distrib.env import node_address
        from brainxl.launch import sweep as sw

        addr = node_address(env.hostnames[0])
        port = ray_port(job_id)
        cpus, gpus = allocation_resources()
        (control / SWEEP_OVER).unlink(missing_ok=True)
        cmd = [
            *_ray_cli(),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--node-ip-address={addr}",
            f"--num-cpus={cpus}",
            f"--num-gpus={gpus}",
            f"--temp-dir={ray_temp_dir(job_id, 0)}",
            "--include-dashboard=false",
        ]
        head = subprocess.Popen(cmd)  # in the task's process group: SLURM's kill reaches it
        try:
            address = f"{addr}:{port}"
            import ray

            _wait_for(lambda: _try_init(address), 300, "the Ray head did not start")
            (control / HEAD_READY).write_text(json.dumps({"address": address}))
            _wait_for(
                lambda: len([n for n in ray.nodes() if n["Alive"]]) >= env.num_nodes,
                300,
                f"not all {env.num_nodes} nodes joined the Ray cluster",
            )
            print(f"Ray cluster at {address}: {env.num_nodes} nodes", flush=True)
            plan = sw.plan(
                self.args["config"], self.args["search"], self.args["overrides"], self.args["out"]
            )
            result = sw.run_sweep(
                plan, self.args["outer"], address=address, ridge=self.args["ridge"]
            )
            ray.shutdown()
            return result
        finally:
            (control / SWEEP_OVER).touch()
            (control / HEAD_READY).unlink(missing_ok=True)
            _stop(head)

    def _worker(self, env: Any, job_id: str, control: Path) -> None:
        cpus, gpus = allocation_resources()
        _wait_for(
            lambda: (control / HEAD_READY).is_file() or (control / SWEEP_OVER).is_file(),
            600,
            "the Ray head never became ready",
        )
        if (control / SWEEP_OVER).is_file():
            return
        _use_token(control, create=False)
        address = json.loads((control / HEAD_READY).read_text())["address"]
        cmd = [
            *_ray_cli(),
            "start",
            "--block",
            f"--address={address}",
            f"--num-cpus={cpus}",
            f"--num-gpus={gpus}",
            f"--temp-dir={ray_temp_dir(job_id, env.node)}",
        ]
        node = subprocess.Popen(cmd)
        try:
            while not (control / SWEEP_OVER).is_file():
                if node.poll() is not None:  # lost the head; try again unless it is over
                    time.sleep(2.0)
                    if (control / SWEEP_OVER).is_file():
                        break
                    node = subprocess.Popen(cmd)
                time.sleep(1.0)
        finally:
            _stop(node)


def _use_token(control: Path, create: bool) -> None:
    """Ray token authentication for this job's cluster: one random token in a 0600 file.

    Every process of the job (``ray start`` on each node, the sweep driver, and the Ray
    workers they start) reads it through ``RAY_AUTH_TOKEN_PATH``.
    """
    import secrets

    path = control / TOKEN_FILE
    if create:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        os.replace(tmp, path)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


def _try_init(address: str) -> bool:
    import ray

    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return True
    except (ConnectionError, RuntimeError):
        return False


def _wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout_s:.0f} s")
        time.sleep(1.0)


def _stop(proc: subprocess.Popen) -> None:
    """Stop a ``ray start --block`` process (it stops the Ray processes it started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def submit_sweep(plan: Any, outer: Sequence[str], profile_name: str, *, ridge: bool = True) -> Any:
    """Submit the sweep ``plan`` as one SLURM job of profile ``profile_name``.

    One task per node (``tasks_per_node`` of the profile is ignored: the trials start
    their own ranks); the sweep's Ray cluster spans the allocation.

    Returns
    -------
    job : submitit.Job
    """
    import dataclasses

    from brainxl.launch import slurm
    from brainxl.launch.sweep import write_record

    profile = slurm.load_profile(profile_name)
    profile = dataclasses.replace(profile, tasks_per_node=1)
    write_record(plan)
    folder = plan.folder / ".slurm" / "%j"
    ex = slurm.make_executor(profile, folder, f"{slurm.JOB_NAME_PREFIX}-sweep-{plan.name}"[:60])
    args = {
        "config": plan.config,
        "search": plan.spec.source,
        "overrides": list(plan.overrides),
        "out": str(plan.folder),
        "outer": list(outer),
        "ridge": ridge,
    }
    job = ex.submit(SweepJob(args))
    from brainxl.files import atomic_write_text

    atomic_write_text(
        plan.folder / SWEEP_JOB_RECORD,
        json.dumps(
            {"job_id": str(job.job_id), "stdout": str(job.paths.stdout), "profile": profile.name},
            indent=1,
        ),
    )
    return job
