"""``brainxl collect SWEEP_DIR_OR_RUNS...``: one report over LOSO folds."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from brainxl.distrib.rundir import RunDir

HELP = "gather the per-fold results of LOSO runs into one Markdown report"
RESULTS = RunDir.RESULTS
#: The trainer's per-subject test metrics, relative to a run folder.
TEST_METRICS_GLOB = f"{RunDir.TEST}/{RunDir.SUBJECT_METRICS_GLOB}"
# brainxl.metrics JSON a fold may hold, in order of preference: one results file, or the
# trainer's per-subject test metrics (or the single file of older runs)
RESULT_GLOBS = (RESULTS, TEST_METRICS_GLOB, RunDir.LEGACY_TEST_METRICS)
FOLD_MARKERS = (RESULTS, RunDir.FINAL_METRICS, RunDir.LEGACY_TEST_METRICS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``collect`` options."""
    parser.add_argument("paths", nargs="+", help="run folders or folders holding them")
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument(
        "--allow-missing", action="store_true", help="exit 0 even if some folds have no results"
    )


def find_folds(paths: list[str]) -> list[Path]:
    """Run folders under ``paths``: those holding results, final metrics or a job record."""
    from brainxl.launch.slurm import JOB_RECORD

    folds: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"{p} does not exist; give run folders or the experiment folder")
        for name in (*FOLD_MARKERS, JOB_RECORD):
            if (p / name).is_file():
                folds.add(p.resolve())
            folds.update(f.parent.resolve() for f in p.glob(f"**/{name}"))
        folds.update(f.parent.parent.resolve() for f in p.glob(f"**/{TEST_METRICS_GLOB}"))
    return sorted(f for f in folds if ".slurm" not in f.parts)


def fold_results(fold: Path) -> list[Any]:
    """The per-subject results of one fold (``SubjectResult`` list; empty if none).

    Raises
    ------
    ValueError
        If a results file is unreadable (the message names it).
    """
    from brainxl.metrics import FoldSummary, from_json

    for pattern in RESULT_GLOBS:
        files = sorted(fold.glob(pattern))
        if files:
            out = []
            for f in files:
                res = from_json(f)
                out.extend(res.per_subject if isinstance(res, FoldSummary) else [res])
            return out
    return []


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def collect(paths: list[str]) -> tuple[str, list[Path]]:
    """Build the Markdown report.

    Returns
    -------
    report : str
    missing : list of Path
        Folds without a readable ``results.json``.
    """
    from brainxl.launch.slurm import JOB_RECORD, job_states

    from brainxl.metrics import summarize

    folds = find_folds(paths)
    if not folds:
        raise ValueError(f"no run folders ({RESULTS} or {JOB_RECORD}) under {', '.join(paths)}")
    rows: list[tuple[Path, list[Any]]] = []
    missing: list[Path] = []
    problems: dict[Path, str] = {}
    for fold in folds:
        try:
            res = fold_results(fold)
        except ValueError as err:
            res, problems[fold] = [], str(err)
        if res:
            rows.append((fold, res))
        else:
            missing.append(fold)
    subjects = [s for _, res in rows for s in res]

    out = ["# LOSO report", "", f"{len(folds)} fold(s), {len(rows)} with results.", ""]
    out += ["| fold | subject | r | rho | cos | fraction of ceiling | run |", "|---" * 6 + "|---|"]
    for fold, res in rows:
        for s in res:
            out.append(
                f"| {fold.name} | {s.subject} | {_fmt(s.mean_r)} | {_fmt(s.mean_rho)} | "
                f"{_fmt(s.mean_cos)} | {_fmt(s.mean_fraction_of_ceiling)} | {fold} |"
            )
    if missing:
        states: dict[str, str] = {}
        recs = {}
        for m in missing:
            rec_path = m / JOB_RECORD
            if rec_path.is_file():
                recs[m] = json.loads(rec_path.read_text())
        states = job_states([r["job_id"] for r in recs.values()]) if recs else {}
        for m in missing:
            jid = recs.get(m, {}).get("job_id", "")
            why = problems.get(m) or f"no results (job {jid or '?'}: {states.get(jid, '?')})"
            out.append(f"| {m.name} | - | missing | | | | {why} |")
    if subjects:
        summ = summarize(subjects)
        out += ["", "## Across held-out subjects", ""]
        out.append(f"- Pearson r: {summ.r}")
        out.append(f"- Spearman rho: {summ.rho}")
        out.append(f"- cosine: {summ.cos}")
        if summ.fraction_of_ceiling is not None:
            out.append(f"- fraction of noise ceiling: {summ.fraction_of_ceiling}")
        out += [f"- note: {n}" for n in summ.notes]
    return "\n".join(out) + "\n", missing


def run(args: argparse.Namespace) -> int:
    """Print (and optionally write) the report; exit 1 if a fold has no results."""
    report, missing = collect(args.paths)
    sys.stdout.write(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from brainxl.files import atomic_write_text

        atomic_write_text(out, report)
    if missing and not args.allow_missing:
        print(f"{len(missing)} fold(s) have no results", file=sys.stderr)
        return 1
    return 0
