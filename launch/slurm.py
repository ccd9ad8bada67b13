"""SLURM launching through submitit: cluster profiles, sbatch scripts, the submitted job.

A cluster profile (``configs/cluster/<name>.yaml``) says where and how a run executes:
partition, account, QoS, constraint, nodes, GPUs and tasks per node, CPUs per task,
memory, time, ``slurm_setup`` shell lines (module loads) and extra sbatch parameters.
:func:`load_profile` validates it; :func:`render_sbatch` writes the exact script submitit
will submit (``brainxl submit --dry-run``); :func:`submit_run` and :func:`submit_loso`
submit :class:`TrainJob` callables, one task per GPU (one per CPU rank on CPU clusters).

:class:`TrainJob` is checkpointable: submitit calls :meth:`TrainJob.checkpoint` on USR2
(time limit or preemption) and requeues the job, which resumes from the run's latest
checkpoint because the run folder is a hash of the config. Requeues after a time limit
are bounded by the profile's ``max_requeues``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainxl.configs import CONFIG_DIR
from brainxl.distrib.rundir import RunDir

from brainxl.files import atomic_write_text

CLUSTER_DIR = CONFIG_DIR / "cluster"
JOB_RECORD = RunDir.JOB_RECORD
JOB_NAME_PREFIX = "brainxl"

# sbatch options that submitit or brainxl manage; a profile may not set them directly.
_RESERVED_SBATCH = {
    "output": "logs are written under the run folder",
    "error": "logs are written under the run folder",
    "array": "use `brainxl submit --loso`",
    "signal": "use signal_delay_s",
    "open-mode": "submitit appends to the log on requeue",
    "job-name": "the job name is derived from the experiment",
    "nodes": "use nodes",
    "ntasks-per-node": "use tasks_per_node",
    "cpus-per-task": "use cpus_per_task",
    "gpus-per-node": "use gpus_per_node",
    "partition": "use partition",
    "account": "use account",
    "qos": "use qos",
    "constraint": "use constraint",
    "time": "use time_min",
    "mem": "use mem_gb",
    "wrap": "brainxl writes the batch script",
}
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ProfileError(ValueError):
    """A cluster profile that does not match the schema or could break the sbatch script."""


@dataclass
class ClusterProfile:
    """Where and how a run executes on a SLURM cluster (``configs/cluster/*.yaml``).

    Attributes
    ----------
    name : str
        Profile name (the file stem).
    partition, account, qos, constraint : str or None
        The sbatch options of the same name (``None`` = cluster default).
    nodes : int
        Nodes per job.
    gpus_per_node : int
        GPUs per node (0 on CPU clusters).
    tasks_per_node : int or None
        Ranks per node; ``None`` = one per GPU, or 1 on CPU nodes.
    cpus_per_task : int
        CPU cores per rank (also the data-loader budget).
    mem_gb : float or None
        Memory per node in GB (``None`` = cluster default).
    time_min : int
        Wall-clock limit per job in minutes.
    max_requeues : int
        How many times a job that hits its time limit is requeued and resumed.
    signal_delay_s : int
        Seconds before the time limit at which SLURM sends USR2 (save and requeue).
    exclusive : bool
        Ask for whole nodes.
    slurm_setup : list of str
        Shell lines run before ``srun`` (``module load cuda/12.4``, ``source env.sh``).
    additional_parameters : dict
        Extra ``#SBATCH --key=value`` options (``mail-type: END``); ``true`` = bare flag.
    srun_args : list of str
        Extra ``srun`` arguments (each quoted).
    python : str or None
        Python command on the compute nodes; ``None`` = the interpreter submitting.
    env : dict of str
        Environment variables exported in the batch script.
    """

    name: str = "custom"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int = 1
    mem_gb: float | None = None
    time_min: int = 60
    max_requeues: int = 3
    signal_delay_s: int = 90
    exclusive: bool = False
    slurm_setup: list[str] = field(default_factory=list)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    srun_args: list[str] = field(default_factory=list)
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ntasks_per_node(self) -> int:
        """Ranks per node: ``tasks_per_node`` or one per GPU (1 on CPU nodes)."""
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return self.gpus_per_node if self.gpus_per_node > 0 else 1

    @property
    def world_size(self) -> int:
        """Ranks per job (nodes x tasks per node)."""
        return self.nodes * self.ntasks_per_node


_FIELDS = {f.name: f for f in dataclasses.fields(ClusterProfile)}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _fail(source: str, msg: str) -> ProfileError:
    return ProfileError(f"{source}: {msg}")


def _check_text(value: Any, key: str, source: str) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise _fail(
            source,
            f"{key} = {text!r} contains a newline or control character, which would break "
            "the sbatch script; put it on one line",
        )
    return text


def _check_shell_line(line: Any, key: str, source: str) -> str:
    text = _check_text(line, key, source)
    try:
        shlex.split(text)
    except ValueError as err:
        raise _fail(
            source, f"{key} line {text!r} is not valid shell ({err}); balance its quotes"
        ) from None
    return text


def validate_profile(raw: Mapping[str, Any], source: str, name: str = "custom") -> ClusterProfile:
    """Check a profile mapping and return the typed :class:`ClusterProfile`.

    Parameters
    ----------
    raw : mapping
        The YAML content.
    source : str
        Where it came from (named in errors).
    name : str
        Profile name.

    Raises
    ------
    ProfileError
        Unknown key (with the closest valid one), wrong type, a value that could break or
        inject into the batch script, or a reserved sbatch option.
    """
    if not isinstance(raw, Mapping):
        raise _fail(source, "a cluster profile must be a mapping of keys (see configs/cluster/)")
    kwargs: dict[str, Any] = {"name": name}
    for key, value in raw.items():
        if key not in _FIELDS or key == "name":
            close = difflib.get_close_matches(str(key), [k for k in _FIELDS if k != "name"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(source, f"unknown cluster profile key {key!r}{hint}")
        kwargs[key] = value
    prof = ClusterProfile(**kwargs)

    for key in ("partition", "account", "qos", "constraint", "python"):
        value = getattr(prof, key)
        if value is not None:
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise _fail(source, f"{key} must be a string, got {value!r}")
            setattr(prof, key, _check_text(value, key, source))
    for key, lo in (
        ("nodes", 1),
        ("gpus_per_node", 0),
        ("cpus_per_task", 1),
        ("time_min", 1),
        ("max_requeues", 0),
        ("signal_delay_s", 0),
    ):
        value = getattr(prof, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise _fail(source, f"{key} must be an integer >= {lo}, got {value!r}")
    if prof.tasks_per_node is not None and (
        not isinstance(prof.tasks_per_node, int) or prof.tasks_per_node < 1
    ):
        raise _fail(source, f"tasks_per_node must be an integer >= 1, got {prof.tasks_per_node!r}")
    if prof.mem_gb is not None and (
        not isinstance(prof.mem_gb, (int, float))
        or isinstance(prof.mem_gb, bool)
        or prof.mem_gb <= 0
    ):
        raise _fail(source, f"mem_gb must be a positive number, got {prof.mem_gb!r}")
    if not isinstance(prof.exclusive, bool):
        raise _fail(source, f"exclusive must be true or false, got {prof.exclusive!r}")
    if prof.signal_delay_s >= prof.time_min * 60:
        raise _fail(
            source,
            f"signal_delay_s ({prof.signal_delay_s}) must be shorter than time_min "
            f"({prof.time_min} min)",
        )
    for key in ("slurm_setup", "srun_args"):
        value = getattr(prof, key)
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise _fail(source, f"{key} must be a list of strings, got {value!r}")
    prof.slurm_setup = [_check_shell_line(x, "slurm_setup", source) for x in prof.slurm_setup]
    prof.srun_args = [_check_text(x, "srun_args", source) for x in prof.srun_args]
    if not isinstance(prof.additional_parameters, Mapping):
        raise _fail(source, "additional_parameters must be a mapping of sbatch option: value")
    extra: dict[str, Any] = {}
    for key, value in prof.additional_parameters.items():
        k = str(key).replace("_", "-")
        if not _SBATCH_KEY.match(k):
            raise _fail(
                source,
                f"additional_parameters key {key!r} is not an sbatch option name "
                "(letters, digits and dashes, e.g. mail-type)",
            )
        if k in _RESERVED_SBATCH:
            raise _fail(source, f"additional_parameters may not set {k!r}: {_RESERVED_SBATCH[k]}")
        if value is True:
            extra[k] = True
        elif value is None or value is False:
            raise _fail(source, f"additional_parameters {key!r}: give a value or true")
        else:
            extra[k] = _check_text(value, f"additional_parameters.{key}", source)
    prof.additional_parameters = extra
    if not isinstance(prof.env, Mapping):
        raise _fail(source, "env must be a mapping of VARIABLE: value")
    env: dict[str, str] = {}
    for key, value in prof.env.items():
        if not _ENV_NAME.match(str(key)):
            raise _fail(source, f"env key {key!r} is not a valid environment variable name")
        env[str(key)] = _check_text(value, f"env.{key}", source)
    prof.env = env
    return prof


def resolve_profile_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A profile file by path, or by name under ``configs/cluster/`` (``.yaml`` optional)."""
    p = Path(name_or_path)
    for c in (p, p.with_suffix(".yaml"), CLUSTER_DIR / p, (CLUSTER_DIR / p).with_suffix(".yaml")):
        if c.is_file():
            return c
    shipped = sorted(x.stem for x in CLUSTER_DIR.glob("*.yaml"))
    raise ProfileError(
        f"cluster profile {str(name_or_path)!r} not found; give a path to a YAML file or one "
        f"of: {', '.join(shipped)} (in {CLUSTER_DIR})"
    )


def load_profile(name_or_path: str | os.PathLike[str]) -> ClusterProfile:
    """Load and validate a cluster profile.

    Parameters
    ----------
    name_or_path : str or path
        ``"local"`` (a file in ``configs/cluster/``) or a path to a YAML file.

    Returns
    -------
    profile : ClusterProfile
    """
    import yaml

    path = resolve_profile_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: cannot parse YAML ({err}); fix the syntax") from None
    return validate_profile(raw or {}, str(path), name=path.stem)


# ----------------------------------------------------------------------------------------
# sbatch script
# ----------------------------------------------------------------------------------------


def python_command(profile: ClusterProfile) -> str:
    """The shell command that runs Python on the compute nodes."""
    return profile.python if profile.python else shlex.quote(sys.executable)


def executor_parameters(
    profile: ClusterProfile, job_name: str, max_parallel: int | None = None
) -> dict[str, Any]:
    """``submitit.SlurmExecutor`` parameters for ``profile`` (one task per GPU or CPU rank).

    Parameters
    ----------
    profile : ClusterProfile
    job_name : str
        The SLURM job name.
    max_parallel : int, optional
        Array throttle (``--array=0-N%max_parallel``).

    Returns
    -------
    params : dict
        Keyword arguments of ``SlurmExecutor.update_parameters``.
    """
    name = _check_text(job_name, "job name", "the job name")
    setup = [f"export {k}={shlex.quote(v)}" for k, v in sorted(profile.env.items())]
    setup += list(profile.slurm_setup)
    params: dict[str, Any] = {
        "job_name": name,
        "nodes": profile.nodes,
        "ntasks_per_node": profile.ntasks_per_node,
        "cpus_per_task": profile.cpus_per_task,
        "time": profile.time_min,
        "signal_delay_s": profile.signal_delay_s,
        "setup": setup,
        "additional_parameters": dict(profile.additional_parameters),
        "srun_args": list(profile.srun_args),
    }
    if profile.gpus_per_node:
        params["gpus_per_node"] = profile.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(profile, key)
        if value is not None:
            params[key] = value
    if profile.mem_gb is not None:
        params["mem"] = f"{int(round(profile.mem_gb * 1024))}M"
    if profile.exclusive:
        params["exclusive"] = True
    if max_parallel is not None:
        if max_parallel < 1:
            raise ValueError(f"--max-parallel must be >= 1, got {max_parallel}")
        params["array_parallelism"] = max_parallel
    return params


def render_sbatch(
    profile: ClusterProfile,
    folder: str | os.PathLike[str],
    job_name: str,
    n_array: int | None = None,
    max_parallel: int | None = None,
) -> str:
    """The batch script submitit submits for ``profile`` (what ``--dry-run`` prints).

    Parameters
    ----------
    profile : ClusterProfile
    folder : path
        The submitit folder (logs and pickles; may hold ``%j``).
    job_name : str
    n_array : int, optional
        Number of array tasks (LOSO folds); ``None`` = a single job.
    max_parallel : int, optional
        Array throttle.

    Returns
    -------
    script : str
    """
    from submitit.slurm.slurm import _make_sbatch_string

    params = executor_parameters(profile, job_name, max_parallel)
    parallel = params.pop("array_parallelism", 256)
    folder = Path(folder)
    command = " ".join(
        [python_command(profile), "-u -m submitit.core._submit", shlex.quote(str(folder))]
    )
    kwargs: dict[str, Any] = {}
    if n_array is not None:
        kwargs = {"map_count": n_array, "array_parallelism": parallel}
    return _make_sbatch_string(command=command, folder=folder, **params, **kwargs)


def make_executor(
    profile: ClusterProfile,
    folder: str | os.PathLike[str],
    job_name: str,
    max_parallel: int | None = None,
) -> Any:
    """A ``submitit.SlurmExecutor`` set up from ``profile`` (what ``AutoExecutor`` builds).

    Raises
    ------
    RuntimeError
        If SLURM's ``srun`` is not on this machine.
    """
    import submitit

    ex = submitit.SlurmExecutor(
        folder=folder, max_num_timeout=profile.max_requeues, python=python_command(profile)
    )
    ex.update_parameters(**executor_parameters(profile, job_name, max_parallel))
    return ex


# ----------------------------------------------------------------------------------------
# the submitted callable
# ----------------------------------------------------------------------------------------


def export_distributed_env() -> dict[str, str]:
    """Export ``MASTER_ADDR/PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` from SLURM.

    Reads this task's place through :func:`brainxl.distrib.env.export_job_env` (the one
    reader of the rank environment) without masking devices (DeepSpeed picks the GPU from
    ``LOCAL_RANK``). A master node name that does not resolve (a test cluster whose node
    names are not in DNS) is replaced by the node's SLURM ``NodeAddr``.

    Returns
    -------
    env : dict
        The exported variables.
    """
    from brainxl.distrib.env import RANK_VARS, export_job_env

    export_job_env()
    return {k: os.environ[k] for k in RANK_VARS}


# After a stop/kill signal, how long a failing rank waits for SLURM's SIGKILL instead of
# reporting the failure (a rank whose peer was killed first fails on its next collective).
KILL_GRACE_S = 300.0


def _import(target: str) -> Callable[..., Any]:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class TrainJob:
    """The callable submitit runs on every rank: export the environment, then train.

    Parameters
    ----------
    cfg : Any
        The run configuration (``distrib.config.RunConfig``; run root made absolute).
    target : str
        ``module:function`` called as ``function(cfg)`` on every rank.
    """

    cfg: Any
    target: str = "brainxl.distrib.entry:train"

    def __call__(self) -> Any:
        from brainxl.distrib import signals

        signals.clear()
        export_distributed_env()
        # USR2 is recorded for the trainer (it saves at its next step and returns); then
        # submitit's own handler runs: rank 0 checkpoints and requeues. SIGTERM (SLURM
        # killing the job for a requeue or a cancel) also makes the trainer save; the
        # task then waits for SLURM's SIGKILL instead of reporting a partial result.
        with signals.StopSignals(watch_term=True) as stop:
            try:
                result = _import(self.target)(self.cfg)
                # rank 0 requeues; the requeue's SIGTERM can kill its `scontrol requeue`
                requeued = stop.call_previous()
            except Exception as err:
                _await_kill_if_requeued(err)
                raise
            if not requeued and signals.kill_seen():
                _await_kill("SIGTERM")
        from brainxl.distrib.engine import end_distributed

        end_distributed()
        return result

    def checkpoint(self) -> Any:
        """Called by submitit on USR2 in rank 0: resubmit this same job (it resumes)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TrainJob(self.cfg, self.target))


def _await_kill_if_requeued(err: BaseException) -> None:
    """Keep a rank that fails while SLURM requeues or kills the job from reporting it.

    Ranks are not killed at the same instant: a rank whose peer is already gone fails in
    its next collective, and rank 0's ``scontrol requeue`` is itself terminated by the
    requeue. submitit would store that error as the job's result (and the client would
    see a failed job that is in fact requeued), so the rank waits for SIGKILL instead.
    """
    from brainxl.distrib import signals
    from submitit.core.utils import UncompletedJobError

    if isinstance(err, UncompletedJobError) or not (
        signals.stop_requested() or signals.kill_seen()
    ):
        return  # a real failure, or submitit refusing another requeue: report it
    _await_kill(f"{type(err).__name__} after a stop signal")


def _await_kill(what: str) -> None:
    """Wait (up to :data:`KILL_GRACE_S`) for SLURM to end this task."""
    print(
        f"brainxl: {what} while the job is being requeued or cancelled; waiting for SLURM "
        "to end this task",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.time() + KILL_GRACE_S
    while time.time() < deadline:
        time.sleep(1.0)


# ----------------------------------------------------------------------------------------
# submission
# ----------------------------------------------------------------------------------------


def job_name(cfg: Any) -> str:
    """SLURM job name of a run: ``brainxl-<experiment>`` (safe characters only)."""
    return JOB_NAME_PREFIX + "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(cfg.experiment))[:60]


def submitit_folder(cfg: Any) -> Path:
    """Where submitit keeps logs and pickles: ``<run.root>/<experiment>/.slurm/%j``."""
    return Path(cfg.run.root).resolve() / cfg.experiment / ".slurm" / "%j"


def _absolute_root(cfg: Any) -> Any:
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run))
    cfg.run.root = str(Path(cfg.run.root).resolve())
    return cfg


def write_job_record(run_dir: Path, job: Any, profile: ClusterProfile, extra: dict) -> Path:
    """Write ``<run_dir>/slurm_job.json`` so ``brainxl status/logs`` find the job."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rec = {
        "job_id": str(job.job_id),
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
        "submitit_folder": str(job.paths.folder),
        "profile": profile.name,
        "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    path = run_dir / JOB_RECORD
    atomic_write_text(path, json.dumps(rec, indent=2) + "\n")
    return path


_ACTIVE_STATES = {"PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING", "SUSPENDED"}


def check_not_running(run_dir: Path) -> None:
    """Refuse to submit a run whose folder a live process or an active SLURM job owns.

    Raises
    ------
    RunLockedError
        The run's lock is held (a local ``brainxl train`` or a running job), or its
        ``slurm_job.json`` names a job SLURM still lists as pending or running.
    """
    from brainxl.distrib.rundir import RunDir
    from brainxl.distrib.runlock import RunLockedError, check_free

    check_free(RunDir(run_dir).lock_path)
    try:
        rec = json.loads((run_dir / JOB_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return
    job = str(rec.get("job_id", ""))
    state = job_states([job]).get(job, "") if job else ""
    if state in _ACTIVE_STATES:
        raise RunLockedError(
            f"run folder {run_dir} belongs to SLURM job {job} ({state}); a second job would "
            f"write the same folder. Wait for it (brainxl status), or scancel {job.split('_')[0]} "
            "and submit again to resume, or pass run.name=<new name> to start a separate run"
        )


def submit_run(
    cfg: Any,
    profile: ClusterProfile,
    target: str = "brainxl.distrib.entry:train",
    *,
    folder: Callable[[Any], Path] | None = None,
    save_config: Callable[[Any, Path], None] | None = None,
) -> tuple[Any, Path]:
    """Submit one run; returns the submitit job and the run folder.

    Parameters
    ----------
    cfg : RunConfig
    profile : ClusterProfile
    target : str
        ``module:function`` each rank calls with ``cfg``.
    folder, save_config : callable, optional
        The run folder of ``cfg`` and what writes its ``config.yaml`` (default: a training
        run's; ``brainxl pretrain --cluster`` passes the pretraining ones).
    """
    from brainxl.distrib.config import run_dir, save_run_config
    from brainxl.distrib.resume_guard import check_same_config

    cfg = _absolute_root(cfg)
    rdir = (folder or run_dir)(cfg)
    check_not_running(rdir)
    if cfg.run.resume:  # before its config.yaml is rewritten below
        check_same_config(rdir, cfg)
    (save_config or save_run_config)(cfg, rdir)
    ex = make_executor(profile, submitit_folder(cfg), job_name(cfg))
    job = ex.submit(TrainJob(cfg, target))
    write_job_record(rdir, job, profile, {"run_dir": str(rdir), "world_size": profile.world_size})
    return job, rdir


def loso_configs(cfg: Any, subjects: Sequence[str]) -> list[Any]:
    """One config per held-out subject (``data.test_subject``), in ``subjects`` order.

    Labels are used as given (``01`` or ``sub-01``, as in the shards manifest). A named run
    (``run.name=study``) gives each fold its own folder, ``study-test-<subject>``.
    """
    from brainxl.distrib.config import fold_name

    if not subjects:
        raise ValueError("LOSO needs at least one subject; pass --subjects or build shards first")
    out = []
    for s in subjects:
        label = str(s)
        c = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data), run=dataclasses.replace(cfg.run)
        )
        c.data.test_subject = label
        c.data.val_subjects = [v for v in c.data.val_subjects if v != label]
        if cfg.run.name:
            c.run.name = f"{cfg.run.name}-{fold_name(c)}"
        out.append(c)
    return out


def submit_loso(
    cfg: Any,
    profile: ClusterProfile,
    subjects: Sequence[str],
    max_parallel: int = 4,
    target: str = "brainxl.distrib.entry:train",
) -> list[tuple[Any, Path]]:
    """Submit a job array, one task per held-out subject, each with its own run folder.

    Returns
    -------
    jobs : list of (job, run_dir)
        In ``subjects`` order.
    """
    from brainxl.distrib.config import run_dir, save_run_config
    from brainxl.distrib.resume_guard import check_same_config

    cfg = _absolute_root(cfg)
    folds = loso_configs(cfg, subjects)
    for c in folds:
        check_not_running(run_dir(c))
        if c.run.resume:
            check_same_config(run_dir(c), c)
    ex = make_executor(profile, submitit_folder(cfg), job_name(cfg), max_parallel=max_parallel)
    with ex.batch():
        jobs = [ex.submit(TrainJob(c, target)) for c in folds]
    out = []
    for c, job in zip(folds, jobs):
        rdir = run_dir(c)
        save_run_config(c, rdir)
        write_job_record(
            rdir,
            job,
            profile,
            {
                "run_dir": str(rdir),
                "world_size": profile.world_size,
                "array_job_id": str(job.job_id).split("_")[0],
                "test_subject": c.data.test_subject,
            },
        )
        out.append((job, rdir))
    return out


def find_job_records(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All ``slurm_job.json`` records under ``root`` (newest first)."""
    recs = []
    for p in Path(root).glob(f"**/{JOB_RECORD}"):
        try:
            rec = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        rec["record"] = str(p)
        rec.setdefault("run_dir", str(p.parent))
        recs.append(rec)
    recs.sort(key=lambda r: r.get("submitted_at", ""), reverse=True)
    return recs


def job_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM state of each job id (``sacct``, falling back to ``squeue``).

    Returns
    -------
    states : dict
        ``{job_id: state}``; ids SLURM does not know are absent.
    """
    states: dict[str, str] = {}
    if not job_ids:
        return states
    ids = ",".join(job_ids)
    for cmd in (
        ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ids],
        ["squeue", "-h", "-o", "%i|%T", "-j", ids],
    ):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            if "|" in line:
                jid, state = line.split("|", 1)
                states.setdefault(jid.strip(), state.strip().split()[0] if state.strip() else "")
    return states


def allreduce_check(cfg: Any) -> dict[str, Any]:
    """Cluster smoke test run on every rank: a gloo ``all_reduce`` over all ranks.

    ``brainxl submit CONFIG --cluster PROFILE --entry brainxl.launch.slurm:allreduce_check --wait``
    checks the exported environment without training. Every rank contributes
    ``rank + 1``; the sum must be ``world * (world + 1) / 2``.

    Returns
    -------
    info : dict
        ``rank``, ``world_size``, ``node`` (SLURM node name), ``sum`` and ``expected``.
    """
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        t = torch.tensor([float(rank + 1)])
        dist.all_reduce(t)
        nodes: list[Any] = [None] * world
        dist.all_gather_object(nodes, os.environ.get("SLURMD_NODENAME", socket.gethostname()))
    finally:
        dist.destroy_process_group()
    return {
        "rank": rank,
        "world_size": world,
        "nodes": nodes,
        "sum": float(t.item()),
        "expected": world * (world + 1) / 2,
    }


def wait_until_finished(job_ids: Sequence[str], timeout_s: float = 120.0) -> dict[str, str]:
    """Wait until SLURM no longer lists ``job_ids`` as pending/running (epilogue included).

    Returns
    -------
    states : dict
        The last seen ``{job_id: state}``.
    """
    t0 = time.time()
    states = job_states(job_ids)
    while any(states.get(j) in _ACTIVE_STATES for j in job_ids) and time.time() - t0 < timeout_s:
        time.sleep(0.5)
        states = job_states(job_ids)
    return states
