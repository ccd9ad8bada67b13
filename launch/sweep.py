"""Ray Tune nested leave-one-subject-out sweeps over brainxl runs (``brainxl sweep``).

For each outer test subject:

1. *search*: a Ray Tune experiment over the search space, on a shard view that holds only
   the other subjects (:func:`brainxl.launch.sweep_folds.write_view`). Each trial runs the
   inner folds of one configuration (:mod:`brainxl.launch.sweep_trial`), each an ordinary
   brainxl run of N DeepSpeed ranks started from the trial inside the CPUs/GPUs Tune
   reserved for it (one placement-group bundle), and reports the mean fold score after
   every fold; ASHA (optional) stops weak configurations after a few folds.
2. *final*: the best configuration and the untuned default are retrained on all the
   training subjects and tested once on the outer subject; the band-power ridge baseline
   is fitted on the same fold.

Everything lives in one sweep folder named from what was asked (the same command finds
it again): ``sweep.json``, ``outer-XX/{shards,runs,trials,tune,final}``, ``outer-XX/
result.json``, ``report.md`` and ``figures/``. Repeating the command after a crash or a
``kill -9`` restores each outer fold's Tune experiment (finished trials are kept,
unfinished ones resume from their last finished inner fold, whose run folders are
complete) and skips finished phases. One driver at a time works in a sweep folder
(``sweep.lock``); a trial's processes end with the Ray node that started them
(:func:`brainxl.distrib.parent_watch.exit_with_parent`), so a killed driver leaves none
training beside the resumed one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from brainxl.distrib.rundir import RunDir
from brainxl.launch.sweep_space import SearchSpec

from brainxl.files import atomic_write_text

SWEEP_RECORD = "sweep.json"
SWEEP_LOCK = "sweep.lock"  # held by the live driver
OUTER_RESULT = "result.json"
SEARCH_RESULT = "search.json"
PHASES = ("search", "final", "report")


@dataclass(frozen=True)
class Sweep:
    """A planned sweep: what was asked and where it lives."""

    folder: Path
    name: str
    config: str  # base run config (absolute path)
    overrides: tuple[str, ...]  # command-line overrides
    spec: SearchSpec
    shards: Path
    subjects: tuple[str, ...]

    def outer_dir(self, subject: str) -> Path:
        return self.folder / f"outer-{subject}"

    def all_overrides(self) -> list[str]:
        """Command line then search file overrides (the search file's win)."""
        return [*self.overrides, *self.spec.overrides]

    def group(self, subject: str) -> str:
        """W&B group of an outer fold."""
        return f"{self.name}/outer-{subject}"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def plan(
    config: str,
    search: str,
    overrides: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
) -> Sweep:
    """Validate the inputs and name the sweep folder.

    Parameters
    ----------
    config : str
        Run config (path or name under ``configs/``).
    search : str
        Search file (path or name under ``configs/sweep/``).
    overrides : sequence of str
        Dotted overrides of the run config.
    out : path, optional
        Sweep folder; default ``<run.root>/sweeps/<experiment>-<search>-<hash>``.

    Raises
    ------
    ValueError
        ``ConfigError``/``SearchError`` or unusable data, with a one-line message.
    """
    from brainxl.distrib.config import load_config, resolve_config_path, run_id
    from brainxl.launch.sweep_folds import sweep_subjects
    from brainxl.launch.sweep_space import load_search

    spec = load_search(search)
    cfg_path = resolve_config_path(config).resolve()
    cfg = load_config(cfg_path, [*overrides, *spec.overrides])
    if cfg.train.val_every <= 0:
        raise ValueError(
            f"{cfg_path}: train.val_every is {cfg.train.val_every}; a sweep scores folds on "
            "validation: set train.val_every > 0"
        )
    if cfg.run.name:
        raise ValueError(
            f"run.name={cfg.run.name}: a sweep names each trial's runs by their settings, and "
            "one name would put every trial in one folder; drop run.name (--out names the "
            "sweep folder)"
        )
    for key in spec.space:
        if key.startswith(("data.test_subject", "data.val_subjects", "data.shards", "run.")):
            raise ValueError(f"{spec.source}: space.{key}: the sweep sets this key itself")
    shards = Path(cfg.data.shards).resolve()
    subjects = sweep_subjects(cfg)
    ident = {
        "run": run_id(cfg),
        "space": spec.space,
        "searcher": spec.searcher,
        "scheduler": spec.scheduler,
        "num_samples": spec.num_samples,
        "inner_folds": spec.inner_folds,
        "ranks": spec.resources.ranks,
        "objective": spec.objective,
        "seed": spec.seed,
    }
    name = f"{cfg.experiment}-{Path(spec.source).stem}-{_digest(ident)}"
    folder = Path(out) if out else Path(cfg.run.root) / "sweeps" / name
    return Sweep(
        folder.resolve(), name, str(cfg_path), tuple(overrides), spec, shards, tuple(subjects)
    )


def write_record(sweep: Sweep) -> None:
    """``sweep.json``: what the sweep folder holds (read by ``--status`` and the report)."""
    rec = {
        "name": sweep.name,
        "config": sweep.config,
        "overrides": list(sweep.overrides),
        "search": sweep.spec.source,
        "spec": {**asdict(sweep.spec), "resources": asdict(sweep.spec.resources)},
        "shards": str(sweep.shards),
        "subjects": list(sweep.subjects),
    }
    sweep.folder.mkdir(parents=True, exist_ok=True)
    path = sweep.folder / SWEEP_RECORD
    text = json.dumps(rec, indent=1, default=str)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address``, or start an embedded one on this machine."""
    import ray

    if ray.is_initialized():
        return
    # Tune warns when trials checkpoint often; a trial here checkpoints once per inner fold
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ray lowers its workers' priority by 15 (to 19 from a `nice -n 5` shell): right for
    # background tasks, but a sweep's trials are the work itself and starved behind any
    # other load on the machine; run them at the driver's priority, as training runs do
    os.environ.setdefault("RAY_worker_niceness", "0")
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )


def trial_context(sweep: Sweep, subject: str) -> Any:
    from brainxl.launch.sweep_folds import inner_folds, write_view
    from brainxl.launch.sweep_trial import TrialContext

    od = sweep.outer_dir(subject)
    train_subjects = [s for s in sweep.subjects if s != subject]
    view = write_view(sweep.shards, train_subjects, od / "shards")
    return TrialContext(
        config=sweep.config,
        overrides=tuple(sweep.all_overrides()),
        shards=str(view),
        runs=str(od / "runs"),
        trials=str(od / "trials"),
        folds=tuple(inner_folds(train_subjects, sweep.spec.inner_folds)),
        ranks=sweep.spec.resources.ranks,
        objective=sweep.spec.objective,
        outer=subject,
    )


def _tuner(sweep: Sweep, ctx: Any, callbacks: list[Any]) -> Any:
    """A new Tune experiment for one outer fold, or the restored one when it exists."""
    from brainxl.launch import sweep_trial
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    spec = sweep.spec
    res = spec.resources
    bundle = {"CPU": res.total_cpus, **({"GPU": res.total_gpus} if res.total_gpus else {})}
    trainable = tune.with_resources(
        tune.with_parameters(sweep_trial.trial, ctx=ctx.to_dict()),
        tune.PlacementGroupFactory([bundle]),
    )
    path = sweep.outer_dir(ctx.outer) / "tune"
    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=False
        )
    limit = spec.max_concurrent or None  # Tune wraps a Searcher in a concurrency limiter
    if spec.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher: Any = OptunaSearch(seed=spec.seed)
    else:
        # a variant generator takes its own limit (Tune ignores, with a warning, the other)
        searcher = BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.max_concurrent)
        limit = None
    scheduler: Any = FIFOScheduler()
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=len(ctx.folds),
            grace_period=min(spec.asha_grace, len(ctx.folds)),
            reduction_factor=spec.asha_reduction,
        )
    return tune.Tuner(
        trainable,
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric="objective",
            mode=spec.mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=spec.num_samples,
            max_concurrent_trials=limit,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(path.parent),
            verbose=0,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def search_outer(sweep: Sweep, subject: str, *, live: bool = True) -> dict[str, Any]:
    """Run (or resume) the search of outer subject ``subject``; returns its summary.

    The summary (also ``outer-XX/search.json``) holds every trial's parameters, state,
    fold scores and objective, and the best finished configuration.
    """
    from brainxl.launch.sweep_report import StatusCallback, trial_table

    od = sweep.outer_dir(subject)
    done = od / SEARCH_RESULT
    if done.is_file():
        return json.loads(done.read_text())
    ctx = trial_context(sweep, subject)
    callback = StatusCallback(od / "trials", len(ctx.folds), sweep.spec, live=live)
    tuner = _tuner(sweep, ctx, [callback])
    tuner.fit()
    trials = callback.finalize()
    finished = [t for t in trials if t["state"] == "done"]
    sign = 1.0 if sweep.spec.mode == "max" else -1.0
    best = max(finished, key=lambda t: (sign * t["objective"], t["trial_id"]), default=None)
    summary = {
        "outer": subject,
        "folds": [list(f) for f in ctx.folds],
        "objective": sweep.spec.objective,
        "mode": sweep.spec.mode,
        "trials": trials,
        "best": best,
    }
    if live:
        print(trial_table(trials, len(ctx.folds), sweep.spec.objective))
    atomic_write_text(done, json.dumps(summary, indent=1, default=float))
    return summary


def final_overrides(sweep: Sweep, subject: str, params: dict[str, Any]) -> list[str]:
    """Overrides of a retrain on all training subjects, tested on the outer subject."""
    from brainxl.launch.sweep_trial import param_overrides

    return [
        *sweep.all_overrides(),
        *param_overrides(params),
        f"data.shards={sweep.shards}",
        f"data.test_subject={subject}",
        "data.val_subjects=[]",
        f"run.root={sweep.outer_dir(subject) / 'final'}",
        f"logging.group={sweep.group(subject)}",
        "logging.console=false",
    ]


def _train_and_score(config: str, overrides: list[str], ranks: int, ridge: bool) -> dict:
    """Ray task: train one final run and read its test score (and the ridge baseline)."""
    from brainxl.distrib.config import load_config, run_dir
    from brainxl.distrib.env import clear_launcher_env
    from brainxl.launch.local import launch_local

    clear_launcher_env()  # see sweep_trial.run_fold
    cfg = load_config(config, overrides)
    folder = run_dir(cfg)
    if not RunDir(folder).final_metrics.is_file():
        launch_local(cfg, ranks)
    final = json.loads(RunDir(folder).final_metrics.read_text())
    out = {"run_dir": str(folder), "test": final.get("test", {}), "ridge_r": None}
    if ridge:
        cached = folder / "sweep_ridge.json"
        if cached.is_file():
            out["ridge_r"] = json.loads(cached.read_text())["ridge_r"]
        else:
            from brainxl.launch.cmd_evaluate import evaluate

            res = evaluate(folder, "test", report=False, baseline=True)
            out["ridge_r"] = res.get("baseline_mean_r")
            atomic_write_text(cached, json.dumps({"ridge_r": out["ridge_r"]}))
    return out


def finish_outer(
    sweep: Sweep, subject: str, search: dict[str, Any], *, ridge: bool = True
) -> dict[str, Any]:
    """Retrain the best configuration and the default one; test both on ``subject``."""
    import ray
    from brainxl.distrib.config import load_config, run_dir

    od = sweep.outer_dir(subject)
    path = od / OUTER_RESULT
    if path.is_file():
        return json.loads(path.read_text())
    res = sweep.spec.resources
    task = ray.remote(_train_and_score).options(
        num_cpus=res.total_cpus, num_gpus=res.total_gpus, max_retries=sweep.spec.max_failures
    )
    best = search.get("best")
    jobs: dict[str, Any] = {}
    default_ov = final_overrides(sweep, subject, {})
    jobs["default"] = task.remote(sweep.config, default_ov, res.ranks, ridge)
    if best is not None:
        tuned_ov = final_overrides(sweep, subject, best["params"])
        same = run_dir(load_config(sweep.config, tuned_ov)) == run_dir(
            load_config(sweep.config, default_ov)
        )
        if not same:
            jobs["tuned"] = task.remote(sweep.config, tuned_ov, res.ranks, False)
    done = dict(zip(jobs, ray.get(list(jobs.values()))))
    if best is not None and "tuned" not in done:
        done["tuned"] = done["default"]
    result = {
        "outer": subject,
        "params": None if best is None else best["params"],
        "trial_id": None if best is None else best["trial_id"],
        "inner_score": None if best is None else best["objective"],
        "inner_folds": None if best is None else best["folds"],
        "objective": sweep.spec.objective,
        "tuned_r": done["tuned"]["test"].get("mean_r") if "tuned" in done else None,
        "tuned_run": done["tuned"]["run_dir"] if "tuned" in done else None,
        "default_r": done["default"]["test"].get("mean_r"),
        "default_run": done["default"]["run_dir"],
        "ridge_r": done["default"]["ridge_r"],
    }
    atomic_write_text(path, json.dumps(result, indent=1, default=float))
    return result


def run_sweep(
    sweep: Sweep,
    outer: Sequence[str] = (),
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    ridge: bool = True,
    phases: Sequence[str] = PHASES,
    live: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the nested LOSO sweep; returns the report's data.

    Parameters
    ----------
    sweep : Sweep
        From :func:`plan`.
    outer : sequence of str
        Outer test subjects (empty: every subject).
    address : str, optional
        A running Ray cluster (``--cluster``); default: an embedded local Ray.
    num_cpus : int, optional
        CPUs of the embedded Ray (default: this machine's).
    ridge : bool
        Fit the band-power ridge baseline on each outer fold.
    phases : sequence of {"search", "final", "report"}
        Stop after the search (tests) or skip the report.
    live : bool
        Print the trial table as trials report.
    """
    from brainxl.distrib.runlock import RunLock
    from brainxl.launch.sweep_folds import outer_subjects

    subjects = outer_subjects(sweep.subjects, outer)
    # one live driver per sweep folder: a second one would train the same trials' folds
    lock = RunLock(sweep.folder / SWEEP_LOCK, kind="sweep folder", fresh="pass another --out")
    with lock:
        return _run_locked(sweep, subjects, address, num_cpus, ridge, phases, live)


def _run_locked(
    sweep: Sweep,
    subjects: Sequence[str],
    address: str | None,
    num_cpus: int | None,
    ridge: bool,
    phases: Sequence[str],
    live: bool,
) -> dict[str, Any]:
    from brainxl.launch.sweep_report import log_wandb_folds, write_report

    write_record(sweep)
    start_ray(address, num_cpus)
    t0 = time.perf_counter()
    results = []
    for s in subjects:
        if live:
            print(f"== outer subject {s}: search over {len(sweep.subjects) - 1} subjects")
        search = search_outer(sweep, s, live=live)
        log_wandb_folds(sweep, s, search)
        if "final" not in phases:
            continue
        if live:
            print(f"== outer subject {s}: retrain the best and the default config, test on {s}")
        results.append(finish_outer(sweep, s, search, ridge=ridge))
    out: dict[str, Any] = {"sweep": str(sweep.folder), "outer": results}
    if "report" in phases and results:
        out.update(write_report(sweep, results))
    out["wall_s"] = time.perf_counter() - t0
    return out
