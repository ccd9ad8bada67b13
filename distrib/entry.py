"""The entry point every launcher calls in every rank process.

``train(cfg)`` reads rank and world size from the environment (:mod:`distrib.env`),
joins the process group, builds the fold's data, the model and the DeepSpeed engine,
resumes from the run folder's ``latest`` checkpoint when there is one, trains, tests and
returns the final metrics. ``python -m brainxl.distrib.entry CONFIG.yaml [key=value ...]`` does the
same from a shell (what ``launch.local`` starts per rank).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainxl.distrib.config import (
    RunConfig,
    fold_name,
    load_config,
    run_dir,
    run_id,
    save_run_config,
)
from brainxl.distrib.parent_watch import watch_launcher
from brainxl.distrib.resume_guard import check_same_config
from brainxl.distrib.rundir import RunDir
from brainxl.distrib.runlock import RunLock, RunLockedError, probe

from brainxl.files import atomic_write_text

if TYPE_CHECKING:
    from brainxl.distrib.env import DistEnv
    from brainxl.distrib.reporting import Reporter


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
    from brainxl.distrib.data import build_fold
    from brainxl.distrib.env import detect_env, single_env
    from brainxl.distrib.signals import ensure_stop_handler
    from brainxl.distrib.trainer import Trainer

    ensure_stop_handler()
    env = detect_env()
    folder = run_dir(cfg)
    data_id = data_identity(cfg)
    if cfg.run.resume:
        check_same_data(folder, data_id)
        check_same_config(folder, cfg)
    done = RunDir(folder).final_metrics
    if cfg.run.resume and done.is_file():
        if env.is_main:
            print(f"run {folder} is already complete; delete it or set run.resume=false to rerun")
        return json.loads(done.read_text())
    if env.source == "single":
        env = single_env()
    with locked_run(
        cfg,
        env,
        folder,
        data_id,
        save_config=save_run_config,
        run_id=run_id(cfg),
        fold=fold_name(cfg),
        extra=[report] if report else None,
    ) as reporter:
        fold = build_fold(cfg, env.rank, env.world_size)
        trainer = Trainer(cfg, env, fold, folder, reporter)
        result = trainer.fit()
    return result


@contextmanager
def locked_run(
    cfg: Any,
    env: DistEnv,
    folder: Path,
    data_id: dict[str, Any],
    *,
    save_config: Callable[[Any, Path], None],
    run_id: str,
    fold: str,
    extra: list[Callable[[dict[str, Any]], None]] | None = None,
) -> Iterator[Reporter]:
    """The frame of a run in every rank process; the ``with`` body trains.

    Rank 0 takes the run folder's lock (:func:`take_run_lock`), every rank joins the
    process group and fails together when the lock was refused; rank 0 writes the config
    and the data identity into the folder; the body gets the run's reporter. After the
    body every rank meets at a barrier, then the reporter is closed, the lock released
    and rank 0 prints the run folder.

    Parameters
    ----------
    cfg : RunConfig or PretrainConfig
    env : DistEnv
    folder : Path
        The run folder.
    data_id : dict
        What the run trains on, written to the folder's ``data.json``.
    save_config : callable
        ``save_config(cfg, folder)`` writes ``config.yaml`` and ``version.json``.
    run_id, fold : str
        The run's identity and fold (or stage) name, for the reporter.
    extra : list of callable, optional
        Extra metrics sinks of the reporter (rank 0).

    Yields
    ------
    Reporter
    """
    import torch.distributed as dist
    from brainxl.distrib.engine import init_distributed
    from brainxl.distrib.reporting import make_reporter

    lock, refused = take_run_lock(folder) if env.is_main else (None, "")
    try:
        if refused and env.world_size == 1:
            raise RunLockedError(refused)
        init_distributed(env)
        agree_on_lock(refused)  # every rank fails together when rank 0 was refused
        if env.is_main:
            save_config(cfg, folder)
            atomic_write_text(RunDir(folder).data_id_path, json.dumps(data_id, indent=2))
        dist.barrier()
        reporter = make_reporter(
            cfg, folder, is_main=env.is_main, run_id=run_id, fold=fold, extra=extra
        )
        try:
            yield reporter
            dist.barrier()
        finally:
            reporter.close()
    finally:
        if lock is not None:
            lock.release()
    if env.is_main:
        print(f"run folder: {folder}")


def take_run_lock(folder: Path) -> tuple[RunLock | None, str]:
    """Rank 0: take the run folder's lock unless this process's launcher holds it.

    ``brainxl train --nproc N`` holds the lock in the launcher, the parent of every rank;
    any other rank 0 (a single process, srun, submitit, torchrun) takes it itself.

    Returns
    -------
    lock : RunLock or None
        The lock this process now holds (release it when done), None when the launcher
        holds it or the lock was refused.
    refused : str
        Why it was refused (the holder and the fix), ``""`` when it was not.
    """
    path = RunDir(folder).lock_path
    holder = probe(path)
    if holder is not None and holder.on_this_host() and holder.pid == os.getppid():
        return None, ""
    lock = RunLock(path)
    try:
        lock.acquire()
    except RunLockedError as err:
        return None, str(err)
    return lock, ""


def agree_on_lock(refused: str) -> None:
    """Broadcast rank 0's lock outcome; raise :class:`RunLockedError` on every rank if it
    was refused (so no rank waits for a peer that gave up)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [refused]
        dist.broadcast_object_list(box, src=0)
        refused = box[0]
    if refused:
        raise RunLockedError(refused)


def data_identity(cfg: RunConfig) -> dict[str, str]:
    """The shards a run trains on: their folder and a digest of their ``manifest.json``.

    The run folder's name hashes the config only, so the manifest digest (over everything
    but its creation time, shard checksums included) is what tells a resumed run that
    the data under the same path has changed.
    """
    from brainxl.distrib.data import open_shards

    shards = Path(cfg.data.shards)
    manifest = shards / "manifest.json"
    if not manifest.is_file():
        raise ValueError(
            f"{manifest} not found: data.shards must be a folder written by `brainxl shard`"
        )
    return {"shards": str(shards.resolve()), "manifest_sha256": open_shards(cfg).digest()}


def check_same_data(folder: Path, data_id: dict[str, str]) -> None:
    """Refuse to resume (or report as complete) a run whose shards have changed since."""
    path = RunDir(folder).data_id_path
    if not path.is_file():
        return
    before = json.loads(path.read_text())
    if before.get("manifest_sha256") != data_id["manifest_sha256"]:
        raise ValueError(
            f"the shards of run {folder} changed since it started: {data_id['shards']}/"
            f"manifest.json now has digest {data_id['manifest_sha256'][:12]}, the run was "
            f"trained on {before.get('manifest_sha256', '?')[:12]} ({before.get('shards')}). "
            "Resuming would mix two datasets: pass run.resume=false to start this run over, "
            "or run.name=<new name> to keep both"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m brainxl.distrib.entry CONFIG [key=value ...]``: train in this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m brainxl.distrib.entry CONFIG.yaml [key=value ...]", file=sys.stderr)
        return 2
    watch_launcher()
    cfg = load_config(Path(args[0]), args[1:])
    train(cfg)
    from brainxl.distrib.engine import end_distributed

    end_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
