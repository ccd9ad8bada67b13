"""What a sweep shows: the trial table (live and ``--status``), W&B runs, the final report.

Every number comes from files in the sweep folder: a trial's record
(``outer-XX/trials/<trial_id>.json``, its inner folds' scores read from their run
folders), its state (``<trial_id>.state.json``, written by :class:`StatusCallback` from
Tune's events) and each outer fold's ``result.json`` (the final runs' test metrics).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainxl.distrib.rundir import RunDir

from brainxl.files import atomic_write_text

try:  # the callback base class; plain object when Ray is absent (``--status`` needs no Ray)
    from ray.tune import Callback as _TuneCallback
except ImportError:  # pragma: no cover
    _TuneCallback = object  # type: ignore[assignment,misc]


def _state_path(trials: Path, trial_id: str) -> Path:
    return trials / f"{trial_id}.state.json"


class StatusCallback(_TuneCallback):  # type: ignore[misc,valid-type]
    """Tune callback: records each trial's state in files and prints the live table.

    It holds no state but paths, so the copy Tune pickles with the experiment and
    restores after a crash writes to the same files.
    """

    def __init__(self, trials: Path, n_folds: int, spec: Any, live: bool = True) -> None:
        self.trials = Path(trials)
        self.n_folds = n_folds
        self.objective = spec.objective
        self.live = live
        self._printed = 0.0

    def _write(self, trial: Any, **state: Any) -> None:
        self.trials.mkdir(parents=True, exist_ok=True)
        rec = {"trial_id": trial.trial_id, "params": dict(trial.config), **state}
        atomic_write_text(_state_path(self.trials, trial.trial_id), json.dumps(rec, default=str))

    def _show(self, force: bool = False) -> None:
        if self.live and (force or time.monotonic() - self._printed > 5.0):
            self._printed = time.monotonic()
            print(trial_table(read_trials(self.trials, self.n_folds), self.n_folds, self.objective))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, state="running", failures=trial.num_failures)
        self._show()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info):
        self._write(trial, state="running", failures=trial.num_failures)
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, state="terminated", failures=trial.num_failures)
        self._show(force=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, state="retrying", failures=trial.num_failures)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        err = ""
        if trial.error_file and Path(trial.error_file).is_file():
            lines = Path(trial.error_file).read_text(errors="replace").strip().splitlines()
            err = lines[-1] if lines else ""
        self._write(trial, state="error", failures=trial.num_failures, error=err)
        self._show(force=True)

    def finalize(self) -> list[dict[str, Any]]:
        """Every trial with its final state (``done``, ``stopped``, ``error``)."""
        return read_trials(self.trials, self.n_folds)


def read_trials(trials: Path, n_folds: int) -> list[dict[str, Any]]:
    """The trials of one outer fold from their records (sorted by trial id).

    Each: ``trial_id``, ``params``, ``state`` (``pending``/``running``/``retrying``/
    ``done``/``stopped`` (early, by the scheduler)/``error``), ``folds`` (scores),
    ``objective`` (mean of the finished folds), ``attempts``, ``error``.
    """
    from brainxl.launch.sweep_trial import objective_of

    out = []
    trials = Path(trials)
    ids = {p.name.split(".")[0] for p in trials.glob("*.json")} if trials.is_dir() else set()
    for tid in sorted(ids):
        rec: dict[str, Any] = {"trial_id": tid, "params": {}, "folds": [], "attempts": 0}
        if (trials / f"{tid}.json").is_file():
            rec.update(json.loads((trials / f"{tid}.json").read_text()))
        state: dict[str, Any] = {}
        if _state_path(trials, tid).is_file():
            state = json.loads(_state_path(trials, tid).read_text())
        rec["params"] = rec.get("params") or state.get("params", {})
        st = state.get("state", "pending")
        if st == "terminated":
            st = "done" if len(rec["folds"]) >= n_folds else "stopped"
        rec["state"] = st
        rec["error"] = state.get("error", "")
        rec["failures"] = state.get("failures", 0)
        objective = rec.get("objective_key") or "val_pearson_r"
        rec["objective"] = objective_of(rec["folds"], objective) if rec["folds"] else math.nan
        out.append(rec)
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def trial_table(trials: Sequence[dict[str, Any]], n_folds: int, objective: str) -> str:
    """A plain-text table: trial, state, parameters, folds done, objective."""
    keys = sorted({k for t in trials for k in t["params"]})
    head = ["trial", "state", *keys, "folds", objective]
    rows = [
        [
            t["trial_id"],
            t["state"] + (f" ({t['error'][:40]})" if t.get("error") else ""),
            *[_fmt(t["params"].get(k, "")) for k in keys],
            f"{len(t['folds'])}/{n_folds}",
            _fmt(t["objective"]),
        ]
        for t in trials
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def status(folder: str | os.PathLike[str]) -> str:
    """The state of a running or finished sweep folder, as text (``brainxl sweep --status``).

    Raises
    ------
    ValueError
        If ``folder`` is not a sweep folder.
    """
    folder = Path(folder)
    rec_path = folder / "sweep.json"
    if not rec_path.is_file():
        raise ValueError(
            f"{folder} is not a sweep folder (no sweep.json); give the folder "
            "`brainxl sweep` printed"
        )
    rec = json.loads(rec_path.read_text())
    objective = rec["spec"]["objective"]
    out = [f"sweep {rec['name']} ({folder})"]
    for od in sorted(folder.glob("outer-*")):
        search = od / "search.json"
        n_folds = len(json.loads(search.read_text())["folds"]) if search.is_file() else None
        trials = read_trials(od / "trials", n_folds or _n_folds(rec, od.name[6:]))
        phase = "search"
        if search.is_file():
            phase = "final runs"
        if (od / "result.json").is_file():
            r = json.loads((od / "result.json").read_text())
            phase = f"done: tuned r {_fmt(r['tuned_r'])}, default r {_fmt(r['default_r'])}"
        out += ["", f"outer subject {od.name[6:]}: {phase}"]
        out.append(trial_table(trials, n_folds or _n_folds(rec, od.name[6:]), objective))
    if (folder / "report.md").is_file():
        out += ["", f"report: {folder / 'report.md'}"]
    return "\n".join(out)


def _n_folds(rec: dict[str, Any], outer: str) -> int:
    from brainxl.launch.sweep_folds import inner_folds

    subs = [s for s in rec["subjects"] if s != outer]
    return len(inner_folds(subs, rec["spec"]["inner_folds"]))


def _wandb_enabled(sweep: Any) -> str:
    from brainxl.distrib.config import load_config
    from brainxl.distrib.reporting import wandb_mode

    cfg = load_config(sweep.config, sweep.all_overrides())
    mode = wandb_mode(cfg.logging.wandb)
    if mode != "disabled":  # before wandb starts: its process-wide settings come from here
        os.environ.setdefault("WANDB_MODE", mode)
    return mode


def log_wandb_folds(sweep: Any, subject: str, search: dict[str, Any]) -> int:
    """One W&B run per trial and inner fold of outer fold ``subject``; returns how many new.

    Group ``<sweep>/outer-XX``, job type ``inner-K`` (the inner fold), the trial's
    parameters and the fold's subjects as config, the fold's validation curve replayed
    from its ``metrics.jsonl`` and its score as summary. Offline unless configured
    otherwise; a marker file per run makes a resumed sweep log nothing twice.
    """
    mode = _wandb_enabled(sweep)
    if mode == "disabled":
        return 0
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    od = sweep.outer_dir(subject)
    marks = od / "wandb-logged"
    marks.mkdir(parents=True, exist_ok=True)
    n = 0
    for t in search["trials"]:
        for f in t["folds"]:
            k = int(f["fold"]) + 1
            key = f"{sweep.name}/{subject}/{t['trial_id']}/{k}"
            run_id = hashlib.sha256(key.encode()).hexdigest()[:16]
            if (marks / run_id).exists():
                continue
            run = wandb.init(
                project=_project(sweep),
                group=sweep.group(subject),
                job_type=f"inner-{k}",
                name=f"{t['trial_id']}-inner-{k}",
                id=run_id,
                dir=str(od),
                mode=mode,
                config={
                    **t["params"],
                    "sweep": sweep.name,
                    "outer_subject": subject,
                    "inner_fold": k,
                    "val_subjects": f["val_subjects"],
                    "trial_id": t["trial_id"],
                    "run_dir": f["run_dir"],
                },
                reinit="finish_previous",
            )
            for line in RunDir(f["run_dir"]).metrics_path.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("split") == "val":
                    run.log(
                        {"val/loss": rec["loss"], "val/pearson_r": rec["pearson_r"]},
                        step=int(rec["step"]),
                    )
            run.summary.update(
                {
                    "val_pearson_r": f["val_pearson_r"],
                    "val_loss": f["val_loss"],
                    "state": t["state"],
                }
            )
            run.finish()
            (marks / run_id).touch()
            n += 1
    return n


def _project(sweep: Any) -> str:
    from brainxl.distrib.config import load_config

    return load_config(sweep.config, sweep.all_overrides()).logging.project


def _summary_rows(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from brainxl.metrics import Interval

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in results if r.get(key) is not None]

    out = {}
    for key in ("tuned_r", "default_r", "ridge_r", "inner_score"):
        vals = col(key)
        out[key] = Interval.of(vals) if vals else None
    diffs = [
        float(r["tuned_r"]) - float(r["default_r"])
        for r in results
        if r.get("tuned_r") is not None and r.get("default_r") is not None
    ]
    out["tuned_minus_default"] = Interval.of(diffs) if diffs else None
    return out


def write_report(sweep: Any, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``report.md``, ``report.json`` and ``figures/`` of the sweep; one W&B summary run.

    Returns
    -------
    dict
        ``report`` (path), ``summary`` (intervals across outer subjects as dicts).
    """
    folder = Path(sweep.folder)
    summ = _summary_rows(results)
    obj = sweep.spec.objective
    lines = [
        f"# Sweep {sweep.name}",
        "",
        f"Config `{sweep.config}`, search `{sweep.spec.source}` ({sweep.spec.searcher}, "
        f"scheduler {sweep.spec.scheduler}, {sweep.spec.num_samples} samples, objective: "
        f"mean inner-fold {obj}). Held-out r: mean Pearson r over ROIs on the outer subject, "
        "each model tested once.",
        "",
        "| outer subject | chosen parameters | inner score | tuned r | default r | ridge r |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((r["params"] or {}).items()))
        lines.append(
            f"| {r['outer']} | {params or 'none finished'} | {_fmt(_num(r['inner_score']))} | "
            f"{_fmt(_num(r['tuned_r']))} | {_fmt(_num(r['default_r']))} | "
            f"{_fmt(_num(r['ridge_r']))} |"
        )
    lines += ["", "## Across outer subjects (mean, 95% t-interval)", ""]
    names = {
        "tuned_r": "tuned, held-out r",
        "default_r": "untuned default, held-out r",
        "ridge_r": "ridge baseline (band power), held-out r",
        "tuned_minus_default": "tuned - default, held-out r",
        "inner_score": f"inner-fold {obj} of the chosen configs",
    }
    for key, label in names.items():
        lines.append(f"- {label}: {summ[key] if summ[key] is not None else 'n/a'}")
    figs = _figures(sweep, results)
    lines += ["", *[f"![{name}]({p.relative_to(folder)})" for name, p in figs.items()]]
    text = "\n".join(lines) + "\n"
    atomic_write_text(folder / "report.md", text)
    data = {
        "outer": list(results),
        "summary": {k: (v.to_dict() if v is not None else None) for k, v in summ.items()},
    }
    atomic_write_text(folder / "report.json", json.dumps(data, indent=1, default=float))
    _wandb_summary(sweep, results, figs)
    return {"report": str(folder / "report.md"), "summary": data["summary"]}


def _num(x: Any) -> float:
    return math.nan if x is None else float(x)


def _figures(sweep: Any, results: Sequence[dict[str, Any]]) -> dict[str, Path]:
    """Search progress (objective per trial, running best) and per-subject held-out r."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir = Path(sweep.folder) / "figures"
    out_dir.mkdir(exist_ok=True)
    figs: dict[str, Path] = {}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sign = 1.0 if sweep.spec.mode == "max" else -1.0
    for r in results:
        search = json.loads((sweep.outer_dir(r["outer"]) / "search.json").read_text())
        vals = [t["objective"] for t in search["trials"] if t["folds"]]
        if not vals:
            continue
        x = np.arange(1, len(vals) + 1)
        ax.plot(x, vals, "o", alpha=0.5)
        best = sign * np.maximum.accumulate(sign * np.nan_to_num(vals, nan=-sign * np.inf))
        ax.plot(x, best, "-", label=f"outer {r['outer']}")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"inner {sweep.spec.objective}")
    ax.set_title("search progress (dots: trials, line: best so far)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["search_progress"] = out_dir / "search_progress.png"
    fig.savefig(figs["search_progress"], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [r["outer"] for r in results]
    x = np.arange(len(labels))
    for i, (key, name) in enumerate(
        (("tuned_r", "tuned"), ("default_r", "default"), ("ridge_r", "ridge"))
    ):
        ax.bar(x + (i - 1) * 0.27, [_num(r.get(key)) for r in results], 0.27, label=name)
    ax.set_xticks(x, labels)
    ax.set_xlabel("outer (held-out) subject")
    ax.set_ylabel("held-out Pearson r")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    figs["per_subject_r"] = out_dir / "per_subject_r.png"
    fig.savefig(figs["per_subject_r"], dpi=100)
    plt.close(fig)
    return figs


def _wandb_summary(sweep: Any, results: Sequence[dict[str, Any]], figs: dict[str, Path]) -> None:
    """One W&B run per sweep (job type ``summary``) with the final table and figures."""
    mode = _wandb_enabled(sweep)
    if mode == "disabled":
        return
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    cols = ["outer", "params", "inner_score", "tuned_r", "default_r", "ridge_r"]
    table = wandb.Table(
        columns=cols,
        data=[
            [r["outer"], json.dumps(r["params"]), *[_num(r[c]) for c in cols[2:]]] for r in results
        ],
    )
    run = wandb.init(
        project=_project(sweep),
        group=sweep.name,
        job_type="summary",
        name=f"{sweep.name}-summary",
        id=hashlib.sha256(f"{sweep.name}/summary".encode()).hexdigest()[:16],
        dir=str(sweep.folder),
        mode=mode,
        resume="allow",
        config={"search": sweep.spec.source, "config": sweep.config, "space": sweep.spec.space},
        reinit="finish_previous",
    )
    run.log({"results": table, **{k: wandb.Image(str(p)) for k, p in figs.items()}})
    summ = _summary_rows(results)
    run.summary.update({k: v.mean for k, v in summ.items() if v is not None})
    run.finish()
