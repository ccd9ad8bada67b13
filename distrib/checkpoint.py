"""Checkpoints: DeepSpeed state plus our per-rank state, ``latest`` moved last.

Layout of ``<run_dir>/checkpoints``::

    latest                     tag of the newest COMPLETE checkpoint (written last, atomically)
    step00000020/              DeepSpeed files (every rank writes its part)
        brainxl_meta.json      step, world size, ZeRO stage, trainer state (rank 0)
        brainxl_rank000.pt     RNG states and data position of rank 0 (one per rank)
        config.yaml, version.json
    step00000020_universal/    made on demand when resuming on another world size

A crash in the middle of a save leaves ``latest`` on the previous tag, so a resume never
sees a partial checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from brainxl.distrib.rundir import RunDir

from brainxl.files import atomic_torch_save, atomic_write_text

if TYPE_CHECKING:
    from brainxl.distrib.env import DistEnv
    from brainxl.distrib.reporting import Reporter

LATEST = RunDir.LATEST
META = "brainxl_meta.json"


def tag_for(step: int) -> str:
    """Checkpoint tag of optimizer step ``step``."""
    return f"step{step:08d}"


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states of this process."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_latest(ckpt_dir: str | os.PathLike) -> str | None:
    """Tag named by ``latest`` if that checkpoint is complete, else None."""
    path = Path(ckpt_dir) / LATEST
    if not path.is_file():
        return None
    tag = path.read_text().strip()
    if not (Path(ckpt_dir) / tag / META).is_file():
        return None
    return tag


def read_meta(ckpt_dir: str | os.PathLike, tag: str) -> dict[str, Any]:
    """The ``brainxl_meta.json`` of checkpoint ``tag``."""
    return json.loads((Path(ckpt_dir) / tag / META).read_text())


def save(
    engine: Any,
    ckpt_dir: str | os.PathLike,
    step: int,
    *,
    rank: int,
    world_size: int,
    trainer_state: dict[str, Any],
    rank_state: dict[str, Any],
    keep_last: int,
    config_files: dict[str, str] | None = None,
) -> str:
    """Save a checkpoint of ``step`` on every rank (collective); returns its tag.

    Parameters
    ----------
    engine : deepspeed.DeepSpeedEngine
    ckpt_dir : path
    step : int
        Optimizer steps done.
    rank, world_size : int
    trainer_state : dict
        JSON-serialisable loop state (epoch, data position, early stopping); rank 0's copy
        is stored.
    rank_state : dict
        This rank's picklable state (RNG, data position).
    keep_last : int
        Complete checkpoints kept; older tags are deleted after ``latest`` moved.
    config_files : dict of str to str
        Extra text files (``config.yaml``, ``version.json``) written into the tag folder.
    """
    ckpt_dir = Path(ckpt_dir)
    tag = tag_for(step)
    if rank == 0 and (ckpt_dir / tag).exists():
        shutil.rmtree(ckpt_dir / tag)  # a partial save of this step from a killed run
    _barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, save_latest=False)
    folder = ckpt_dir / tag
    atomic_torch_save(rank_state, folder / f"brainxl_rank{rank:03d}.pt")
    _barrier()
    if rank == 0:
        for name, text in (config_files or {}).items():
            atomic_write_text(folder / name, text)
        meta = {
            "step": step,
            "world_size": world_size,
            "zero_stage": engine.zero_optimization_stage(),
            "trainer": trainer_state,
        }
        atomic_write_text(folder / META, json.dumps(meta, indent=2))
        atomic_write_text(ckpt_dir / LATEST, tag)
        prune(ckpt_dir, keep_last)
    _barrier()
    return tag


def save_run_step(
    engine: Any,
    ckpt_dir: str | os.PathLike,
    step: int,
    env: DistEnv,
    *,
    trainer_state: dict[str, Any],
    keep_last: int,
    config_yaml: str,
    run_id: str,
    rank_extra: dict[str, Any] | None = None,
) -> str:
    """:func:`save` of a run's loop: this rank's RNG states, the run's config and versions.

    Parameters
    ----------
    engine, ckpt_dir, step, trainer_state, keep_last
        As in :func:`save`.
    env : DistEnv
        This rank and the world size.
    config_yaml : str
        The run's resolved config, saved as ``config.yaml``.
    run_id : str
        The run's identity, saved in ``version.json`` beside the package versions.
    rank_extra : dict, optional
        More of this rank's picklable state, stored beside its RNG states (``"rng"``).

    Returns
    -------
    str
        The checkpoint's tag.
    """
    from brainxl.distrib.config import version_info

    files = {
        RunDir.CONFIG: config_yaml,
        RunDir.VERSION: json.dumps({**version_info(), "run_id": run_id}),
    }
    return save(
        engine,
        ckpt_dir,
        step,
        rank=env.rank,
        world_size=env.world_size,
        trainer_state=trainer_state,
        rank_state={"rng": rng_state(), **(rank_extra or {})},
        keep_last=keep_last,
        config_files=files,
    )


def loadable_tag(
    ckpt_dir: str | os.PathLike, tag: str, meta: dict[str, Any], *, world_size: int, rank: int
) -> tuple[str, bool]:
    """The tag to load checkpoint ``tag`` from on ``world_size`` ranks (collective).

    A ZeRO > 0 checkpoint saved on another world size is converted by :func:`to_universal`.

    Parameters
    ----------
    ckpt_dir : path
    tag : str
    meta : dict
        The checkpoint's :func:`read_meta`.
    world_size, rank : int

    Returns
    -------
    tag : str
        ``tag`` or its universal copy.
    universal : bool
        Whether the engine must load it as a universal checkpoint.
    """
    if meta["world_size"] != world_size and meta["zero_stage"] > 0:
        return to_universal(ckpt_dir, tag, rank=rank), True
    return tag, False


def load_engine(engine: Any, ckpt_dir: str | os.PathLike, tag: str) -> None:
    """Load DeepSpeed's part of checkpoint ``tag`` into ``engine``.

    Raises
    ------
    RuntimeError
        When DeepSpeed finds nothing to load.
    """
    load_path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag)
    if load_path is None:
        raise RuntimeError(f"DeepSpeed could not load checkpoint {Path(ckpt_dir) / tag}")


def report_resume(
    report: Reporter, step: int, *, from_world_size: int, world_size: int, **extra: Any
) -> None:
    """Drop the records after ``step`` from the run's reports and report the resume.

    Parameters
    ----------
    report : Reporter
    step : int
        The step the run resumes from.
    from_world_size, world_size : int
        Ranks of the saving and of the resuming run.
    **extra
        More fields of the ``"resume"`` record.
    """
    report.truncate_after(step)
    report(
        {
            "split": "resume",
            "step": step,
            "from_world_size": from_world_size,
            "world_size": world_size,
            **extra,
        }
    )


def prune(ckpt_dir: str | os.PathLike, keep_last: int) -> list[str]:
    """Delete all but the newest ``keep_last`` complete tags (and their universal copies)."""
    ckpt_dir = Path(ckpt_dir)
    latest = read_latest(ckpt_dir)
    tags = sorted(
        p.name for p in ckpt_dir.glob("step*") if p.is_dir() and not p.name.endswith("_universal")
    )
    keep = set(tags[-keep_last:]) | ({latest} if latest else set())
    removed = []
    for t in tags:
        if t not in keep:
            shutil.rmtree(ckpt_dir / t, ignore_errors=True)
            shutil.rmtree(ckpt_dir / f"{t}_universal", ignore_errors=True)
            removed.append(t)
    return removed


def to_universal(ckpt_dir: str | os.PathLike, tag: str, *, rank: int) -> str:
    """Convert ``tag`` into a universal checkpoint (rank 0 works, all ranks wait).

    ZeRO 1/2 checkpoints get their missing state injected (``--inject_missing_state``).
    Returns the universal tag (``<tag>_universal``).
    """
    ckpt_dir = Path(ckpt_dir)
    out_tag = f"{tag}_universal"
    out = ckpt_dir / out_tag
    if rank == 0 and not (out / ".complete").exists():
        import argparse

        from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

        tmp = ckpt_dir / f".{out_tag}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        ds_to_universal(
            argparse.Namespace(
                input_folder=str(ckpt_dir / tag),
                output_folder=str(tmp),
                num_extract_workers=1,
                num_merge_workers=1,
                keep_temp_folder=False,
                strict=True,
                inject_missing_state=True,
            )
        )
        (tmp / ".complete").write_text(tag)
        os.replace(tmp, out)
    _barrier()
    return out_tag


def load_rank_state(ckpt_dir: str | os.PathLike, tag: str, rank: int) -> dict[str, Any] | None:
    """This rank's saved state, or None when the checkpoint has no file for ``rank``."""
    path = Path(ckpt_dir) / tag / f"brainxl_rank{rank:03d}.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
