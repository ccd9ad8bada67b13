"""``brainxl pretrain CONFIG [key=value ...] [--nproc N]``: the tokenizer or masked EEG
modeling stage of LaBraM-style pretraining (``configs/pretrain/*.yaml``)."""

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
        "--print-config",
        action="store_true",
        help="print the resolved config and run folder, then exit",
    )


def run(args: argparse.Namespace) -> int:
    from brainxl.distrib.pretrain_config import (
        load_pretrain_config,
        pretrain_run_dir,
        save_pretrain_config,
        to_yaml,
    )

    config, overrides = args.config, list(args.overrides)
    if "=" in config:  # no config file: schema defaults plus overrides
        config, overrides = None, [config, *overrides]
    cfg = load_pretrain_config(config, overrides)
    folder = pretrain_run_dir(cfg)  # a mem run also checks its tokenizer here
    if args.print_config:
        print(to_yaml(cfg))
        print(f"# run folder: {folder}")
        return 0
    from brainxl.distrib.pretrain_config import data_identity
    from brainxl.distrib.pretrain_entry import check_same_data, pretrain
    from brainxl.launch.local import RankTarget, launch_local

    if cfg.run.resume:
        check_same_data(folder, data_identity(cfg))
    target = RankTarget(
        "brainxl.distrib.pretrain_entry", pretrain, pretrain_run_dir, save_pretrain_config
    )
    result = launch_local(cfg, args.nproc, target)
    keys = ("step", "epoch", "stage", "tokens", "padding_fraction", "run_dir", "stopped")
    print(json.dumps({k: v for k, v in result.items() if k in keys}, indent=2, default=float))
    from brainxl.launch.wandb_sync import print_sync_hint

    print_sync_hint(result.get("run_dir") or folder)
    return 0
