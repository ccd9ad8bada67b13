"""``brainxl sweep CONFIG SEARCH [key=value ...] [--outer 01,05] [--cluster PROFILE]``."""

from __future__ import annotations

import argparse
import json

HELP = "Nested leave-one-subject-out hyperparameter sweep with Ray Tune (resumes when repeated)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="run config (YAML or name under configs/)")
    parser.add_argument("search", nargs="?", help="search file (YAML or name in configs/sweep/)")
    parser.add_argument("overrides", nargs="*", help="dotted run-config overrides")
    parser.add_argument("--outer", default="", help="outer test subjects, e.g. 01,05 (all)")
    parser.add_argument("--out", default=None, help="sweep folder (default: under run.root)")
    parser.add_argument("--cluster", default=None, help="run in one SLURM job of this profile")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs of the embedded Ray")
    parser.add_argument("--no-baseline", action="store_true", help="skip the ridge baseline")
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="stop after the searches (no retrain, no report); repeat without it to finish",
    )
    parser.add_argument(
        "--status", metavar="DIR", default=None, help="print the trial table of a sweep folder"
    )
    parser.add_argument("--address", default=None, help="join this running Ray cluster")


def run(args: argparse.Namespace) -> int:
    if args.status:
        from brainxl.launch.sweep_report import status

        print(status(args.status))  # a user mistake (ValueError): one line from cli.main
        return 0
    if not args.config or not args.search:
        raise ValueError("give CONFIG and SEARCH (e.g. `brainxl sweep quickstart neurobolt-debug`)")
    from brainxl.launch import sweep as sw

    outer = [s.strip() for s in args.outer.split(",") if s.strip()]
    plan = sw.plan(args.config, args.search, args.overrides, args.out)
    from brainxl.launch.sweep_folds import outer_subjects

    outer_subjects(plan.subjects, outer)
    print(f"sweep folder: {plan.folder}")
    if args.cluster:
        from brainxl.launch.sweep_cluster import submit_sweep

        job = submit_sweep(plan, outer, args.cluster, ridge=not args.no_baseline)
        print(f"submitted SLURM job {job.job_id}; `brainxl sweep --status {plan.folder}`")
        return 0
    phases = ("search",) if args.search_only else sw.PHASES
    result = sw.run_sweep(
        plan,
        outer,
        address=args.address,
        num_cpus=args.cpus,
        ridge=not args.no_baseline,
        phases=phases,
    )
    summary = result.get("summary", {})
    print(json.dumps({"report": result.get("report"), "summary": summary}, indent=1))
    print(
        f"W&B runs are offline under {plan.folder}: `wandb sync --sync-all` from there, or "
        f"`wandb sync {plan.folder}/outer-*/wandb/offline-run-*` to upload them"
    )
    return 0
