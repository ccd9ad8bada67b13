"""``brainxl submit CONFIG [key=value ...] --cluster PROFILE``: run training on SLURM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "submit a training run (or a LOSO job array) to SLURM through submitit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``submit`` options."""
    parser.add_argument("config", help="run config (YAML path or name under configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    parser.add_argument(
        "--cluster",
        default=None,
        help="cluster profile: name under configs/cluster/ or a YAML path "
        "(default: the config's cluster.profile, else 'local')",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the sbatch script, submit nothing"
    )
    parser.add_argument("--loso", action="store_true", help="one array task per held-out subject")
    parser.add_argument(
        "--subjects",
        nargs="+",
        default=None,
        help="LOSO subjects (default: every subject in the shards manifest)",
    )
    parser.add_argument(
        "--max-parallel", type=int, default=4, help="LOSO array tasks running at once"
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for the job(s) to finish, exit 1 on failure"
    )
    parser.add_argument(
        "--entry",
        default="brainxl.distrib.entry:train",
        help=argparse.SUPPRESS,  # module:function each rank calls with the config (tests)
    )


def _subjects(cfg, given: list[str] | None) -> list[str]:
    if given:
        return list(given)
    from brainxl.distrib.data import fold_subjects, open_shards

    shards = Path(cfg.data.shards)
    try:
        opened = open_shards(cfg)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"--loso needs the subject list: cannot read the manifest in {shards} ({err}); "
            "build shards first (`brainxl shard`) or pass --subjects"
        ) from None
    return fold_subjects(cfg, opened)  # after data.reader.include/exclude_subjects


def run(args: argparse.Namespace) -> int:
    """Submit (or print) the job; returns the exit code."""
    from brainxl.distrib.config import load_config, run_dir
    from brainxl.launch import slurm

    cfg = load_config(args.config, args.overrides)
    profile = slurm.load_profile(args.cluster or cfg.cluster.get("profile", "local"))
    subjects = _subjects(cfg, args.subjects) if args.loso else None
    if args.dry_run:
        folder = slurm.submitit_folder(cfg)
        n = len(subjects) if subjects is not None else None
        script = slurm.render_sbatch(
            profile, folder, slurm.job_name(cfg), n_array=n, max_parallel=args.max_parallel
        )
        sys.stdout.write(script)
        if subjects is not None:
            for c in slurm.loso_configs(cfg, subjects):
                print(f"# fold {c.data.test_subject}: {Path(run_dir(c)).resolve()}")
        else:
            print(f"# run folder: {Path(run_dir(cfg)).resolve()}")
        print(f"# profile {profile.name}: {profile.world_size} ranks; nothing submitted")
        return 0

    if subjects is not None:
        jobs = slurm.submit_loso(cfg, profile, subjects, args.max_parallel, target=args.entry)
    else:
        jobs = [slurm.submit_run(cfg, profile, target=args.entry)]
    for job, rdir in jobs:
        print(f"submitted {job.job_id}  {rdir}")
    if not args.wait:
        print("follow with: brainxl status; brainxl logs RUN_FOLDER")
        return 0
    failed = 0
    for job, rdir in jobs:
        try:
            results = job.results()  # one per rank
            print(f"{job.job_id} finished  {rdir}  rank 0 returned: {results[0]!r}")
        except Exception as err:  # submitit re-raises the remote error here
            failed += 1
            print(f"{job.job_id} FAILED ({type(err).__name__}): {err}", file=sys.stderr)
    slurm.wait_until_finished([str(job.job_id) for job, _ in jobs])
    return 1 if failed else 0
