"""``brainxl pretrain CONFIG [key=value ...] [--nproc N | --cluster PROFILE]``: the tokenizer
or masked EEG modeling stage of LaBraM-style pretraining (``configs/pretrain/*.yaml``).

Locally it starts ``--nproc`` rank processes as ``brainxl train`` does; with ``--cluster``
it submits the run to SLURM through submitit like ``brainxl submit`` (USR2 before the time
limit: every rank saves, the job requeues and resumes exactly).
"""

from __future__ import annotations

import argparse
import json

HELP = "Pretrain the EEG tokenizer or encoder on EEG-only shards (resumes when repeated)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", help="YAML file or name under configs/ (e.g. pretrain/tokenizer-debug)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. pretrain.tokenizer=RUN_DIR"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="local ranks to start (ignored inside torchrun/SLURM/submitit)",
    )
    parser.add_argument(
        "--cluster",
        default=None,
        help="submit to SLURM with this cluster profile (name under configs/cluster/ or YAML)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="with --cluster: print the sbatch script only"
    )
    parser.add_argument(
        "--wait", action="store_true", help="with --cluster: wait for the job, exit 1 on failure"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and run folder, then exit",
    )


def run(args: argparse.Namespace) -> int:
    from brainxl.distrib.pretrain_config import (
        check_tokenizer_scale,
        load_pretrain_config,
        pretrain_run_dir,
        to_yaml,
    )

    config, overrides = args.config, list(args.overrides)
    if "=" in config:  # no config file: schema defaults plus overrides
        config, overrides = None, [config, *overrides]
    cfg = load_pretrain_config(config, overrides)
    folder = pretrain_run_dir(cfg)  # a mem run also checks its tokenizer here
    check_tokenizer_scale(cfg)
    if args.print_config:
        print(to_yaml(cfg))
        print(f"# run folder: {folder}")
        return 0
    from brainxl.distrib.pretrain_config import data_identity
    from brainxl.distrib.pretrain_entry import check_same_data
    from brainxl.distrib.resume_guard import check_same_config
    from brainxl.launch.local import launch_local, pretrain_target

    if cfg.run.resume:
        check_same_data(folder, data_identity(cfg))
        check_same_config(folder, cfg)
    if args.cluster:
        return _submit(cfg, args)
    result = launch_local(cfg, args.nproc, pretrain_target())
    keys = ("step", "epoch", "stage", "tokens", "padding_fraction", "run_dir", "stopped")
    print(json.dumps({k: v for k, v in result.items() if k in keys}, indent=2, default=float))
    from brainxl.launch.wandb_sync import print_sync_hint

    print_sync_hint(result.get("run_dir") or folder)
    return 0


def _submit(cfg, args: argparse.Namespace) -> int:
    """Submit ``cfg`` to SLURM (or print its sbatch script with ``--dry-run``)."""
    import sys
    from pathlib import Path

    from brainxl.distrib.pretrain_config import pretrain_run_dir, save_pretrain_config
    from brainxl.launch import slurm

    profile = slurm.load_profile(args.cluster)
    if args.dry_run:
        script = slurm.render_sbatch(profile, slurm.submitit_folder(cfg), slurm.job_name(cfg))
        sys.stdout.write(script)
        print(f"# run folder: {Path(pretrain_run_dir(cfg)).resolve()}")
        print(f"# profile {profile.name}: {profile.world_size} ranks; nothing submitted")
        return 0
    job, rdir = slurm.submit_run(
        cfg,
        profile,
        target="brainxl.distrib.pretrain_entry:pretrain",
        folder=pretrain_run_dir,
        save_config=save_pretrain_config,
    )
    print(f"submitted {job.job_id}  {rdir}")
    if not args.wait:
        print("follow with: brainxl status; brainxl logs RUN_FOLDER")
        return 0
    try:
        print(f"{job.job_id} finished  {rdir}  rank 0 returned: {job.results()[0]!r}")
    except Exception as err:  # submitit re-raises the remote error here
        print(f"{job.job_id} FAILED ({type(err).__name__}): {err}", file=sys.stderr)
        return 1
    finally:
        slurm.wait_until_finished([str(job.job_id)])
    return 0
