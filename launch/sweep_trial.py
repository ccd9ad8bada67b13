"""One trial of a sweep: the inner folds of one configuration, each an ordinary brainxl run.

:func:`trial` is the Ray Tune function trainable. For each inner fold it builds the run
config (base config + sweep overrides + the trial's parameters + the fold's subjects on
the outer fold's shard view), trains it with :func:`brainxl.launch.local.launch_local`
(N DeepSpeed ranks started from the trial, in the CPUs/GPUs Tune reserved for it) and
reports the running mean of the fold scores after every fold, so ASHA halves over folds.
A fold whose run folder is complete is read back, not retrained, so a restored trial
never redoes a finished fold; one interrupted mid-training resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from brainxl.distrib.rundir import RunDir

from brainxl.files import atomic_write_text


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one outer fold shares (plain data: it travels to Ray workers)."""

    config: str  # base run config (path)
    overrides: tuple[str, ...]  # command line + search file overrides
    shards: str  # the outer fold's shard view (training subjects only)
    runs: str  # run.root of the inner-fold runs
    trials: str  # folder of the per-trial records
    folds: tuple[tuple[str, ...], ...]  # validation subjects of each inner fold
    ranks: int
    objective: str
    outer: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrialContext:
        return cls(
            **{
                **d,
                "overrides": tuple(d["overrides"]),
                "folds": tuple(tuple(f) for f in d["folds"]),
            }
        )


def param_overrides(params: dict[str, Any]) -> list[str]:
    """The trial's parameters as ``key=value`` overrides (sorted by key)."""
    from brainxl.launch.sweep_space import override

    return [override(k, params[k]) for k in sorted(params)]


def fold_overrides(ctx: TrialContext, k: int) -> list[str]:
    """What makes a run inner fold ``k``: the view, no test subject, the fold's validation.

    The view holds exactly the outer fold's training subjects (the reader's include and
    exclude lists already applied), so the lists are cleared: one naming the outer subject
    would otherwise name a subject the view does not have.
    """
    val = ",".join(ctx.folds[k])
    return [
        f"data.shards={ctx.shards}",
        "data.reader.include_subjects=[]",
        "data.reader.exclude_subjects=[]",
        "data.test_subject=''",
        f"data.val_subjects=[{val}]",
        f"run.root={ctx.runs}",
        "logging.wandb=disabled",  # the sweep logs one W&B run per trial and fold itself
        "logging.console=false",
    ]


def fold_config(ctx: TrialContext, params: dict[str, Any], k: int) -> Any:
    """The ``RunConfig`` of inner fold ``k`` of the trial with ``params``."""
    from brainxl.distrib.config import load_config

    return load_config(
        ctx.config, [*ctx.overrides, *param_overrides(params), *fold_overrides(ctx, k)]
    )


def fold_score(run_folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Score of a finished inner-fold run, read from its own files.

    The validation record at the run's best step (``final_metrics.json``: ``best_step``)
    in ``metrics.jsonl``: ``val_pearson_r`` and ``val_loss`` on the fold's validation
    subjects, reduced over all ranks by the trainer.
    """
    folder = Path(run_folder)
    final = json.loads(RunDir(folder).final_metrics.read_text())
    best = final.get("best_step", -1)
    vals = []
    for line in RunDir(folder).metrics_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("split") == "val":
            vals.append(rec)
    if not vals:
        raise ValueError(
            f"{folder}: the run has no validation record; a sweep needs train.val_every > 0"
        )
    at = [v for v in vals if v.get("step") == best] or vals[-1:]
    rec = at[-1]
    return {
        "val_pearson_r": float(rec["pearson_r"]),
        "val_loss": float(rec["loss"]),
        "step": int(rec["step"]),
        "run_dir": str(folder),
    }


def run_fold(ctx: TrialContext, params: dict[str, Any], k: int) -> dict[str, Any]:
    """Train inner fold ``k`` (or read it back when its run folder is complete)."""
    from brainxl.distrib.config import run_dir

    cfg = fold_config(ctx, params, k)
    folder = run_dir(cfg)
    if not RunDir(folder).final_metrics.is_file():
        from brainxl.distrib.env import clear_launcher_env
        from brainxl.launch.local import launch_local

        # inside a SLURM allocation the Ray workers inherit the job step's variables; the
        # trial's ranks would take them for their own rank and world size
        clear_launcher_env()
        launch_local(cfg, ctx.ranks)
    score = fold_score(folder)
    return {"fold": k, "val_subjects": list(ctx.folds[k]), **score, "node": node_name()}


def node_name() -> str:
    """The SLURM node (inside an allocation) or host this trial runs on."""
    import socket

    return (
        os.environ.get("BRAINXL_SWEEP_NODE")
        or os.environ.get("SLURMD_NODENAME")
        or socket.gethostname()
    )


def trial_record_path(ctx: TrialContext, trial_id: str) -> Path:
    return Path(ctx.trials) / f"{trial_id}.json"


def write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1, default=float))


def objective_of(folds: list[dict[str, Any]], objective: str) -> float:
    """Mean of the fold scores (``nan`` when none)."""
    vals = [f[objective] for f in folds]
    return float(sum(vals) / len(vals)) if vals else math.nan


def trial(params: dict[str, Any], ctx: dict[str, Any]) -> None:
    """Ray Tune function trainable: train the inner folds of ``params``, report after each.

    Parameters
    ----------
    params : dict
        The trial's configuration (dotted keys -> values).
    ctx : dict
        :meth:`TrialContext.to_dict` (passed with ``tune.with_parameters``).
    """
    from brainxl.distrib.parent_watch import exit_with_parent
    from ray import tune

    # the raylet started this worker: when it dies with a killed driver, the trial must
    # not train on beside the resumed sweep
    exit_with_parent()
    c = TrialContext.from_dict(ctx)
    trial_id = tune.get_context().get_trial_id()
    os.environ.setdefault("BRAINXL_SWEEP_NODE", node_name())
    path = trial_record_path(c, trial_id)
    record: dict[str, Any] = {
        "trial_id": trial_id,
        "params": params,
        "folds": [],
        "attempts": 0,
        "objective_key": c.objective,
    }
    if path.is_file():
        record = json.loads(path.read_text())
    done: list[dict[str, Any]] = []
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            done = json.loads((Path(d) / "folds.json").read_text())
    # the record is written after every fold, before Tune's checkpoint: a driver killed in
    # between leaves the record ahead, and those folds are finished
    if len(record["folds"]) > len(done):
        done = list(record["folds"])
    # a restart with no fold left (Tune had not saved "finished") is not a new attempt
    if len(done) < len(c.folds):
        record["attempts"] = record.get("attempts", 0) + 1
    write_record(path, {**record, "folds": done})
    if len(done) == len(c.folds):
        _report(c, done)  # Tune lost the trial's end: give it the final result again
    for k in range(len(done), len(c.folds)):
        done.append(run_fold(c, params, k))
        write_record(path, {**record, "folds": done})
        _report(c, done)


def _report(c: TrialContext, done: list[dict[str, Any]]) -> None:
    """Report the running objective after the last fold in ``done``, with a checkpoint."""
    from ray import tune

    metrics = {
        "objective": objective_of(done, c.objective),
        "fold_score": done[-1][c.objective],
        "folds_done": len(done),
    }
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "folds.json").write_text(json.dumps(done, default=float))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
