"""Rank, world size and rendezvous from whatever launched this process: the one owner.

Checked in order: torchrun, the DeepSpeed launcher, SLURM ``srun``, submitit, a plain
``RANK``/``WORLD_SIZE`` environment (``launch.local``); a single process otherwise.

Everything that reads or writes the rank environment goes through this module: the entry
point reads it (:func:`detect_env`), the local launcher writes it for its ranks
(:func:`local_rank_env`), the SLURM job exports it (:func:`export_job_env`), and every
free rendezvous port comes from :func:`free_port`. :func:`slurm_job` names the SLURM job
this process belongs to (recorded by the run lock). A process that starts a job of its own
inside another (a sweep trial in a SLURM allocation) drops its launcher's variables with
:func:`clear_launcher_env`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

#: The torch.distributed variables that place a process in a job (:meth:`DistEnv.export`
#: writes them; :func:`detect_env` reads them).
RANK_VARS: tuple[str, ...] = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)
#: Prefixes of the variables a launcher (SLURM, submitit, torchrun) sets for its tasks.
LAUNCHER_PREFIXES: tuple[str, ...] = ("SLURM_", "SUBMITIT_", "TORCHELASTIC_")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes
    ----------
    rank, world_size, local_rank, local_world_size : int
        Global and node-local position.
    master_addr : str
        Host of rank 0.
    master_port : int
        Rendezvous port.
    source : str
        ``"torchrun"``, ``"deepspeed"``, ``"slurm"``, ``"submitit"``, ``"env"`` or ``"single"``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    source: str = "single"

    @property
    def is_main(self) -> bool:
        """True on global rank 0."""
        return self.rank == 0

    @property
    def in_launcher(self) -> bool:
        """True when some launcher started this process (any source but ``single``)."""
        return self.source != "single"

    def export(self, environ: dict[str, str] | None = None) -> None:
        """Write the torch.distributed variables (RANK, WORLD_SIZE, ...) into ``environ``."""
        env = os.environ if environ is None else environ
        env.update(
            RANK=str(self.rank),
            WORLD_SIZE=str(self.world_size),
            LOCAL_RANK=str(self.local_rank),
            LOCAL_WORLD_SIZE=str(self.local_world_size),
            MASTER_ADDR=self.master_addr,
            MASTER_PORT=str(self.master_port),
        )


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM node list (``"gpu[01-03,07],cpu1"``) into host names.

    Tries ``scontrol show hostnames`` first and parses the list itself otherwise.
    """
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", hostlist],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", item)
        if not m:
            hosts.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            for i in range(int(lo), int(hi) + 1):
                hosts.append(f"{prefix}{str(i).zfill(len(lo))}{suffix}")
    return hosts


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int:
    for n in names:
        if env.get(n, "") != "":
            return int(env[n])
    if default is None:
        raise KeyError(names[0])
    return default


def _from_torch_vars(env: Mapping[str, str], source: str) -> DistEnv:
    world = _int(env, "WORLD_SIZE")
    return DistEnv(
        rank=_int(env, "RANK"),
        world_size=world,
        local_rank=_int(env, "LOCAL_RANK", default=0),
        local_world_size=_int(env, "LOCAL_WORLD_SIZE", "LOCAL_SIZE", default=world),
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT", default=29500),
        source=source,
    )


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Return the :class:`DistEnv` of this process.

    Parameters
    ----------
    environ : mapping, optional
        Environment to read (default ``os.environ``); tests pass a dict.
    """
    env = os.environ if environ is None else environ
    has_torch_vars = all(k in env for k in ("RANK", "WORLD_SIZE"))
    if has_torch_vars and ("TORCHELASTIC_RUN_ID" in env or "TORCHELASTIC_RESTART_COUNT" in env):
        return _from_torch_vars(env, "torchrun")
    if has_torch_vars and (
        "CROSS_RANK" in env or "DS_ACCELERATOR" in env or "PDSH_RCMD_TYPE" in env
    ):
        return _from_torch_vars(env, "deepspeed")
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        ntasks = _int(env, "SLURM_NTASKS", "SLURM_NPROCS", default=1)
        nodes = expand_hostlist(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
        job = _int(env, "SLURM_JOB_ID", "SLURM_JOBID", default=0)
        per_node = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE", ""))
        local = int(per_node.group()) if per_node else max(ntasks // max(len(nodes), 1), 1)
        return DistEnv(
            rank=_int(env, "SLURM_PROCID"),
            world_size=ntasks,
            local_rank=_int(env, "SLURM_LOCALID", default=0),
            local_world_size=local,
            master_addr=env.get("MASTER_ADDR") or (nodes[0] if nodes else "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", default=20000 + job % 20000),
            source="slurm",
        )
    if "SUBMITIT_EXECUTOR" in env or "SUBMITIT_FOLDER" in env:
        try:
            import submitit

            je = submitit.JobEnvironment()
            return DistEnv(
                rank=je.global_rank,
                world_size=je.num_tasks,
                local_rank=je.local_rank,
                local_world_size=max(je.num_tasks // max(je.num_nodes, 1), 1),
                master_addr=env.get("MASTER_ADDR") or je.hostnames[0],
                master_port=_int(
                    env, "MASTER_PORT", default=20000 + int(je.job_id.split("_")[0]) % 20000
                ),
                source="submitit",
            )
        except (RuntimeError, ValueError, ImportError):
            pass
    if has_torch_vars:
        return _from_torch_vars(env, "env")
    return DistEnv()


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host`` (the OS picks it; free when this returns)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def local_rank_env(rank: int, nproc: int, port: int) -> DistEnv:
    """The :class:`DistEnv` of local rank ``rank`` of ``nproc`` (master 127.0.0.1:``port``)."""
    if not 0 <= rank < nproc:
        raise ValueError(f"rank {rank} is outside 0..{nproc - 1}")
    return DistEnv(
        rank=rank,
        world_size=nproc,
        local_rank=rank,
        local_world_size=nproc,
        master_addr="127.0.0.1",
        master_port=port,
        source="env",
    )


def single_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """A one-process job: rank 0 of 1, rendezvous on ``MASTER_PORT`` or a free port."""
    env = os.environ if environ is None else environ
    port = env.get("MASTER_PORT", "")
    return DistEnv(master_port=int(port) if port.isdigit() else free_port())


def node_address(hostname: str) -> str:
    """An address for ``hostname``: itself when DNS knows it, else SLURM's ``NodeAddr``.

    A test cluster's node names (``n1``, ``n2``) are not in DNS; ``scontrol show node``
    knows where they listen.
    """
    try:
        socket.gethostbyname(hostname)
        return hostname
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["scontrol", "show", "node", hostname],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return hostname
    m = re.search(r"NodeAddr=(\S+)", out)
    return m.group(1) if m else hostname


def export_job_env(environ: dict[str, str] | None = None) -> DistEnv:
    """Read this SLURM/submitit task's place and export it as torch.distributed variables.

    The master's node name is replaced by an address that resolves (:func:`node_address`).
    ``CUDA_VISIBLE_DEVICES`` is left alone: DeepSpeed picks the GPU from ``LOCAL_RANK``.

    Returns
    -------
    env : DistEnv
        What was exported.
    """
    target = os.environ if environ is None else environ
    env = detect_env(target)
    if not env.in_launcher:
        raise RuntimeError("no SLURM or submitit task environment to export")
    env = dataclasses.replace(env, master_addr=node_address(env.master_addr))
    env.export(target)
    return env


def slurm_job(environ: Mapping[str, str] | None = None) -> str:
    """This process's SLURM job id (``<array job>_<task>`` for array tasks), or ``""``."""
    env = os.environ if environ is None else environ
    array, task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID", "") or env.get("SLURM_JOBID", "")


def clear_launcher_env(environ: dict[str, str] | None = None) -> list[str]:
    """Remove an enclosing launcher's rank and task variables from ``environ``.

    A process that starts a job of its own (a sweep trial inside a SLURM allocation or a
    Ray worker) must not hand its launcher's place to its ranks: afterwards
    :func:`detect_env` sees a single process. Removes :data:`RANK_VARS` and every
    variable starting with one of :data:`LAUNCHER_PREFIXES`.

    Parameters
    ----------
    environ : dict, optional
        Environment to clean (default ``os.environ``).

    Returns
    -------
    removed : list of str
        The names removed, sorted.
    """
    env = os.environ if environ is None else environ
    removed = sorted(k for k in env if k in RANK_VARS or k.startswith(LAUNCHER_PREFIXES))
    for key in removed:
        del env[key]
    return removed
