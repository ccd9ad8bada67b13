"""``brainxl status``: SLURM state of brainxl jobs, with their run folders."""

from __future__ import annotations

import argparse

HELP = "show the SLURM state of submitted brainxl runs and their run folders"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``status`` options."""
    parser.add_argument("--root", default="runs", help="runs folder to scan (default: runs)")
    parser.add_argument("-n", "--last", type=int, default=20, help="show the newest N runs")


def run(args: argparse.Namespace) -> int:
    """Print one line per submitted run: job id, state, profile, run folder."""
    from brainxl.launch.slurm import find_job_records, job_states

    recs = find_job_records(args.root)[: max(args.last, 0)]
    if not recs:
        print(f"no submitted runs under {args.root} (brainxl submit writes slurm_job.json)")
        return 0
    states = job_states([r["job_id"] for r in recs])
    width = max(len(r["job_id"]) for r in recs)
    print(f"{'JOB':<{width}}  {'STATE':<12} {'PROFILE':<12} RUN")
    for r in recs:
        state = states.get(r["job_id"], "UNKNOWN")
        print(f"{r['job_id']:<{width}}  {state:<12} {r.get('profile', '?'):<12} {r['run_dir']}")
    return 0
