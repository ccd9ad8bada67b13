"""The entry point of a pretraining run in every rank process.

``pretrain(cfg)`` reads rank and world size from the environment, joins the process
group, builds the stage's task spec and this rank's share of the mixed stream, resumes
from the run folder's ``latest`` checkpoint when there is one, trains and returns the final
metrics; a finished tokenizer run also writes ``tokenizer.json`` (its hash, flavor,
overrides and data). ``python -m brainxl.distrib.pretrain_entry CONFIG.yaml [key=value ...]``
does the same from a shell (what ``brainxl pretrain --nproc N`` starts per rank).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainxl.distrib.parent_watch import watch_launcher
from brainxl.distrib.pretrain_config import (
    TOKENIZER_ID,
    PretrainConfig,
    check_tokenizer_scale,
    data_identity,
    load_pretrain_config,
    pretrain_run_dir,
    pretrain_run_id,
    read_tokenizer_id,
    save_pretrain_config,
    tokenizer_hash,
)
from brainxl.distrib.resume_guard import check_same_config
from brainxl.distrib.rundir import RunDir

from brainxl.files import atomic_write_text


def check_same_data(folder: Path, data_id: dict[str, Any]) -> None:
    """Refuse to resume a run whose shard folders (or tokenizer) changed since it started."""
    path = RunDir(folder).data_id_path
    if not path.is_file():
        return
    before = json.loads(path.read_text())

    def digests(d: dict[str, Any]) -> list[Any]:  # folders may move; their content may not
        return [(s["include"], s["exclude"], s["manifest_sha256"]) for s in d["sources"]]

    if digests(before) != digests(data_id):
        raise ValueError(
            f"the shards of pretraining run {folder} changed since it started (compare "
            f"{path} with data.sources); pass run.resume=false to start over, or "
            "run.name=<new name> to keep both"
        )
    old_tok, new_tok = before.get("tokenizer_hash"), data_id.get("tokenizer_hash")
    if old_tok is not None and old_tok != new_tok:  # runs before the hash was kept: no check
        raise ValueError(
            f"pretraining run {folder} learned the codes of tokenizer {old_tok}; the one "
            f"pretrain.tokenizer names now is {new_tok}. Pass run.resume=false to start "
            "over against it, or run.name=<new name> to keep both"
        )


def build_stream(cfg: PretrainConfig, rank: int, world_size: int):
    """This rank's :class:`~brainxl.shards.pretrain_stream.PretrainStream` of ``cfg.data``."""
    from brainxl.shards.pretrain_stream import DatasetSource, PretrainStream

    d = cfg.data
    return PretrainStream(
        [DatasetSource(s.path, tuple(s.include), tuple(s.exclude)) for s in d.sources],
        window_s=d.window_s,
        token_budget=d.token_budget,
        seed=d.seed,
        rank=rank,
        world_size=world_size,
        temperature=d.temperature if d.temperature > 0 else None,
        bucket_batches=d.bucket_batches,
        channel_norm=d.channel_norm,
    )


def build_task(cfg: PretrainConfig, datasets: list[str]) -> Any:
    """The stage's task spec (:mod:`brainxl.models.labram_tasks`)."""
    from brainxl.models.labram_tasks import MEMTask, TokenizerTask, load_tokenizer

    m = cfg.model
    if cfg.pretrain.stage == "tokenizer":
        return TokenizerTask(m.flavor, m.overrides)
    tok = read_tokenizer_id(cfg.pretrain.tokenizer)
    tokenizer = load_tokenizer(cfg.pretrain.tokenizer, tok["flavor"], tok["overrides"])
    return MEMTask(
        m.flavor,
        m.overrides,
        tokenizer,
        datasets,
        cfg.pretrain.mask_ratio,
        seed=cfg.seed,
        mask_unit=cfg.pretrain.mask_unit,
    )


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain ``cfg``'s stage in this rank process; returns the final metrics."""
    from brainxl.distrib.entry import locked_run
    from brainxl.distrib.env import detect_env, single_env
    from brainxl.distrib.pretrainer import Pretrainer
    from brainxl.distrib.signals import ensure_stop_handler

    ensure_stop_handler()
    env = detect_env()
    check_tokenizer_scale(cfg)  # also checked by `brainxl pretrain`; srun/submitit land here
    folder = pretrain_run_dir(cfg)
    run = RunDir(folder)
    data_id = data_identity(cfg)
    if cfg.run.resume:
        check_same_data(folder, data_id)
        check_same_config(folder, cfg)
        if run.final_metrics.is_file():
            if env.is_main:
                print(f"run {folder} is already complete; delete it or set run.resume=false")
            return json.loads(run.final_metrics.read_text())
    if env.source == "single":
        env = single_env()
    with locked_run(
        cfg,
        env,
        folder,
        data_id,
        save_config=save_pretrain_config,
        run_id=pretrain_run_id(cfg),
        fold=cfg.pretrain.stage,
    ) as reporter:
        stream = build_stream(cfg, env.rank, env.world_size)
        task = build_task(cfg, list(stream.datasets))
        result = Pretrainer(cfg, env, stream, task, run, reporter).fit()
        if env.is_main and cfg.pretrain.stage == "tokenizer" and not result.get("stopped"):
            ident = {
                "hash": tokenizer_hash(cfg, data_id),
                "flavor": cfg.model.flavor,
                "overrides": dict(cfg.model.overrides),
                "channel_norm": cfg.data.channel_norm,
                "data": data_id,
                "step": result["step"],
            }
            atomic_write_text(folder / TOKENIZER_ID, json.dumps(ident, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m brainxl.distrib.pretrain_entry CONFIG [key=value ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(
            "usage: python -m brainxl.distrib.pretrain_entry CONFIG.yaml [key=value ...]",
            file=sys.stderr,
        )
        return 2
    watch_launcher()
    pretrain(load_pretrain_config(Path(args[0]), args[1:]))
    from brainxl.distrib.engine import end_distributed

    end_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
