"""Start N local rank processes (no torchrun line needed), or join an existing launcher.

Each rank is ``python -m brainxl.distrib.entry <run_dir>/config.yaml`` with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set (:func:`brainxl.distrib.env.local_rank_env`).
Rank 0 writes to this terminal; the other ranks to ``<run_dir>/logs/rank<k>.log``. If one
rank fails, the others are stopped. The launcher holds the run folder's lock
(:mod:`brainxl.distrib.runlock`) while its ranks run, and passes USR2 on to them
(:class:`brainxl.distrib.signals.StopSignals`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from brainxl.distrib.config import RunConfig, run_dir, save_run_config
from brainxl.distrib.env import free_port, local_rank_env
from brainxl.distrib.parent_watch import LAUNCHER_PID_ENV
from brainxl.distrib.rundir import RunDir

__all__ = ["RankTarget", "free_port", "launch_local", "pretrain_target", "rank_env"]


@dataclass(frozen=True)
class RankTarget:
    """What the rank processes run: training (the default) or another entry point.

    Attributes
    ----------
    module : str
        ``python -m MODULE <run_dir>/config.yaml`` in every rank process.
    run : callable
        ``run(cfg) -> metrics`` in this process (one rank, or inside a launcher).
    folder : callable
        ``folder(cfg) -> Path``: the run folder.
    save_config : callable
        ``save_config(cfg, folder)``: writes ``config.yaml`` (what the ranks read).
    """

    module: str
    run: Callable[[Any], dict[str, Any]]
    folder: Callable[[Any], Path]
    save_config: Callable[[Any, Path], None]


def _train_target() -> RankTarget:
    from brainxl.distrib.entry import train

    return RankTarget("brainxl.distrib.entry", train, run_dir, save_run_config)


def pretrain_target() -> RankTarget:
    """The ranks of a ``brainxl pretrain`` run (:mod:`brainxl.distrib.pretrain_entry`)."""
    from brainxl.distrib.pretrain_config import pretrain_run_dir, save_pretrain_config
    from brainxl.distrib.pretrain_entry import pretrain

    return RankTarget(
        "brainxl.distrib.pretrain_entry", pretrain, pretrain_run_dir, save_pretrain_config
    )


def rank_env(rank: int, nproc: int, port: int) -> dict[str, str]:
    """This process's environment plus what local rank ``rank`` of ``nproc`` needs.

    Sets the torch.distributed variables (master on 127.0.0.1:``port``), the launcher's
    pid (:func:`brainxl.distrib.parent_watch.watch_launcher`) and, unless the
    user chose one, ``OMP_NUM_THREADS`` so the ranks share the cores instead of
    oversubscribing them.
    """
    env = dict(os.environ)
    local_rank_env(rank, nproc, port).export(env)
    env[LAUNCHER_PID_ENV] = str(os.getpid())  # a rank exits when its launcher is killed
    env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // nproc, 1)))
    return env


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def launch_local(
    cfg: RunConfig, nproc: int = 1, target: RankTarget | None = None
) -> dict[str, Any]:
    """Train ``cfg`` on ``nproc`` local ranks; returns rank 0's final metrics.

    Inside torchrun, SLURM, submitit or the DeepSpeed launcher the current process joins
    that job instead (``nproc`` is ignored). ``target`` runs another entry point (e.g.
    pretraining) on the same machinery; None = training.

    Raises
    ------
    RankFailedError
        If a rank exits with an error (the message holds the tail of its log).
    RunLockedError
        If another live process runs the same run folder.
    """
    from brainxl.distrib.env import detect_env

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    target = target or _train_target()
    env = detect_env()
    if env.in_launcher or nproc == 1:
        return target.run(cfg)
    from brainxl.distrib import signals
    from brainxl.distrib.runlock import RunLock

    folder = target.folder(cfg)
    run = RunDir(folder)
    signals.clear()
    with RunLock(run.lock_path):  # the ranks see that their parent holds it
        failed = _run_ranks(cfg, folder, nproc, target)
        reason = signals.stop_reason()
    if failed is not None:
        rank, code = failed
        log = _tail(run.rank_log(rank)) if rank > 0 else "(see the output above)"
        raise RankFailedError(f"rank {rank} exited with code {code}; run folder {folder}\n{log}")
    final = run.final_metrics
    if reason is not None and not final.is_file():
        print(f"stopped on {reason}; the same command resumes run {folder}")
        return {"stopped": True, "run_dir": str(folder)}
    return json.loads(final.read_text())


class RankFailedError(RuntimeError):
    """A local rank process exited with an error (the message holds its log's tail)."""


def _run_ranks(
    cfg: RunConfig, folder: Path, nproc: int, target: RankTarget
) -> tuple[int, int] | None:
    """Start ``nproc`` ranks and wait; returns (rank, exit code) of the first failure."""
    from brainxl.distrib.signals import StopSignals

    target.save_config(cfg, folder)
    run = RunDir(folder)
    run.logs_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    procs: list[subprocess.Popen] = []
    files = []
    failed: tuple[int, int] | None = None

    def _forward(signum: int) -> None:  # USR2 (time limit/preemption): every rank saves
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    try:
        with StopSignals(forward=_forward):
            for rank in range(nproc):
                penv = rank_env(rank, nproc, port)
                out = None
                if rank > 0:
                    out = open(run.rank_log(rank), "w")  # noqa: SIM115 - closed below
                    files.append(out)
                cmd = [sys.executable, "-m", target.module, str(run.config_path)]
                procs.append(
                    subprocess.Popen(
                        cmd, env=penv, stdout=out, stderr=subprocess.STDOUT if out else None
                    )
                )
            while any(p.poll() is None for p in procs):
                for r, p in enumerate(procs):
                    if p.poll() not in (None, 0):
                        failed = (r, p.returncode)
                        break
                if failed:
                    break
                time.sleep(0.2)
            if failed is None:
                bad = [(r, p.returncode) for r, p in enumerate(procs) if p.returncode != 0]
                failed = bad[0] if bad else None
    except KeyboardInterrupt:
        failed = (-1, -signal.SIGINT)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in files:
            f.close()
    return failed
