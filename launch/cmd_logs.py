"""``brainxl logs RUN``: tail the SLURM (submitit) log of a run."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "tail the stdout/stderr of a submitted run (RUN: run folder, its name, or job id)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``logs`` options."""
    parser.add_argument("run", help="run folder, run folder name, or SLURM job id")
    parser.add_argument("--root", default="runs", help="runs folder to search (default: runs)")
    parser.add_argument("-n", "--lines", type=int, default=40, help="lines to show per file")
    parser.add_argument("--rank", type=int, default=0, help="which task's log (default 0)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")


def find_record(run: str, root: str) -> dict:
    """The job record of ``run`` (folder path, folder name or job id) under ``root``.

    Raises
    ------
    ValueError
        If nothing or more than one run matches.
    """
    import json

    from brainxl.launch.slurm import JOB_RECORD, find_job_records

    p = Path(run)
    if (p / JOB_RECORD).is_file():
        rec = json.loads((p / JOB_RECORD).read_text())
        rec.setdefault("run_dir", str(p))
        return rec
    recs = find_job_records(root)
    hits = [r for r in recs if r["job_id"] == run] or [
        r for r in recs if Path(r["run_dir"]).name == run
    ]
    if not hits:
        hits = [r for r in recs if run in Path(r["run_dir"]).name]
    if not hits:
        raise ValueError(
            f"no submitted run matches {run!r} under {root}; give a run folder (with "
            f"{JOB_RECORD}) or see `brainxl status --root {root}`"
        )
    if len({h["run_dir"] for h in hits}) > 1:
        names = ", ".join(sorted({Path(h["run_dir"]).name for h in hits}))
        raise ValueError(f"{run!r} matches several runs ({names}); give the full name")
    return hits[0]


def _task_path(path: str, rank: int) -> Path:
    # submitit names task logs <job>_<rank>_log.out
    p = Path(path)
    head, sep, tail = p.name.rpartition("_0_log.")
    return p.with_name(f"{head}_{rank}_log.{tail}") if sep else p


def _tail(path: Path, n: int) -> list[str]:
    if not path.is_file():
        return [f"(no log yet: {path})\n"]
    lines = path.read_text(errors="replace").splitlines(keepends=True)
    return lines[-n:] if n > 0 else []


def run(args: argparse.Namespace) -> int:
    """Print the log tails (and follow them with ``-f``)."""
    rec = find_record(args.run, args.root)
    files = [_task_path(rec["stdout"], args.rank), _task_path(rec["stderr"], args.rank)]
    print(f"# job {rec['job_id']}  run {rec['run_dir']}")
    for f in files:
        print(f"==> {f} <==")
        sys.stdout.writelines(_tail(f, args.lines))
    if not args.follow:
        return 0
    sizes = {f: f.stat().st_size if f.is_file() else 0 for f in files}
    try:
        while True:
            time.sleep(1.0)
            for f in files:
                if not f.is_file() or f.stat().st_size <= sizes[f]:
                    continue
                with f.open("rb") as fh:
                    fh.seek(sizes[f])
                    chunk = fh.read()
                sizes[f] += len(chunk)
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
