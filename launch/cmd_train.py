"""``brainxl train CONFIG [key=value ...] [--nproc N]``."""

from __future__ import annotations

import argparse
import json

HELP = "Train a model from a config (resumes the same run when repeated)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML file or name under configs/ (e.g. neurobolt-debug)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=3e-4")
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="local ranks to start (ignored inside torchrun/SLURM/submitit)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and run folder, then exit",
    )


def run(args: argparse.Namespace) -> int:
    from brainxl.distrib.config import load_config, run_dir, to_yaml

    config, overrides = args.config, list(args.overrides)
    if "=" in config:  # no config file: schema defaults plus overrides
        config, overrides = None, [config, *overrides]
    cfg = load_config(config, overrides)  # a mistake: one line from cli.main
    if args.print_config:
        print(to_yaml(cfg))
        print(f"# run folder: {run_dir(cfg)}")
        return 0
    from brainxl.distrib.entry import check_same_data, data_identity
    from brainxl.distrib.resume_guard import check_same_config
    from brainxl.launch.local import launch_local

    if cfg.run.resume:  # the ranks check it too; here the user gets one clean line
        check_same_data(run_dir(cfg), data_identity(cfg))
        check_same_config(run_dir(cfg), cfg)
    result = launch_local(cfg, args.nproc)
    summary = {k: v for k, v in result.items() if k in ("step", "best_val_loss", "test", "run_dir")}
    print(json.dumps(summary, indent=2, default=float))
    from brainxl.launch.wandb_sync import print_sync_hint

    print_sync_hint(result.get("run_dir") or run_dir(cfg))
    return 0
