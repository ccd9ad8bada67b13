"""The entry point every launcher calls in every rank process.

``train(cfg)`` reads rank and world size from the environment (:mod:`distrib.env`),
joins the process group, builds the fold's data, the model and the DeepSpeed engine,
resumes from the run folder's ``latest`` checkpoint when there is one, trains, tests and
returns the final metrics. ``python -m distrib.entry CONFIG.yaml [key=value ...]`` does the
same from a shell (what ``launch.local`` starts per rank).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from distrib.config import RunConfig, fold_name, load_config, run_dir, run_id, save_run_config


def train(cfg: RunConfig, report: Callable[[dict[str, Any]], None] | None = None) -> dict:
    """Train ``cfg`` in this rank process; returns the final metrics (same on every rank).

    Parameters
    ----------
    cfg : RunConfig
    report : callable, optional
        Extra metrics sink (e.g. Ray Tune's), called on rank 0 beside the console,
        ``metrics.jsonl`` and W&B.

    Returns
    -------
    metrics : dict
        ``step``, ``best_val_loss``, ``test`` (LOSO test-subject metrics), ``run_dir``...
    """
    import torch.distributed as dist

    from distrib.data import build_fold
    from distrib.engine import init_distributed
    from distrib.env import detect_env
    from distrib.reporting import make_reporter
    from distrib.trainer import Trainer

    _stop_on_usr2()
    env = detect_env()
    folder = run_dir(cfg)
    done = folder / "final_metrics.json"
    if cfg.run.resume and done.is_file():
        if env.is_main:
            print(f"run {folder} is already complete; delete it or set run.resume=false to rerun")
        return json.loads(done.read_text())
    if env.source == "single":
        import os
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = type(env)(master_port=int(os.environ.get("MASTER_PORT", port)))
    init_distributed(env)
    if env.is_main:
        save_run_config(cfg, folder)
    dist.barrier()
    reporter = make_reporter(
        cfg,
        folder,
        is_main=env.is_main,
        run_id=run_id(cfg),
        fold=fold_name(cfg),
        extra=[report] if report else None,
    )
    try:
        fold = build_fold(cfg, env.rank, env.world_size)
        trainer = Trainer(cfg, env, fold, folder, reporter)
        result = trainer.fit()
        dist.barrier()
    finally:
        reporter.close()
    if env.is_main:
        print(f"run folder: {folder}")
    return result


def _stop_on_usr2() -> None:
    """Save-and-stop on USR2 unless a launcher (submitit's job) already handles it."""
    import signal
    import threading

    from distrib import signals

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGUSR2, lambda signum, frame: signals.request_stop("SIGUSR2"))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m distrib.entry CONFIG [key=value ...]``: train in this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m distrib.entry CONFIG.yaml [key=value ...]", file=sys.stderr)
        return 2
    cfg = load_config(Path(args[0]), args[1:])
    train(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
