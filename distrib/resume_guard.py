"""Refuse to resume a named run folder under settings other than those it was trained with.

A run folder found by its config hash (:func:`brainxl.distrib.config.run_id`) always
holds one config. A folder named by hand (``run.name=...``) does not: the same name with,
say, another ``train.lr`` or ``model.pretrained`` would continue the old checkpoint under
the new settings, or report the old run's metrics as complete. :func:`check_same_config`
compares the folder's ``config.yaml`` with the new config before any of that happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainxl.distrib.config import ConfigError, changed_keys, load_config
from brainxl.distrib.pretrain_config import PretrainConfig, load_pretrain_config
from brainxl.distrib.rundir import RunDir

#: Keys a training run may change when it resumes: how often it saves and what it keeps,
#: host memory reuse, and where its shards lie (their content is checked against the
#: run's ``data.json`` by :func:`brainxl.distrib.entry.check_same_data`).
TRAIN_RESUME_FREE = ("data.shards", "data.reader.heap_reuse", "train.ckpt_every", "train.keep_last")

#: The same for pretraining runs: source folders and the tokenizer folder may move, their
#: content (manifest digests, the tokenizer's hash) is checked against ``data.json``.
PRETRAIN_RESUME_FREE = ("data.sources", "pretrain.tokenizer", "train.ckpt_every", "train.keep_last")


class _Default:
    def __repr__(self) -> str:
        return "(default)"


_DEFAULT = _Default()


def resume_conflicts(saved: Any, cfg: Any, free: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
    """Semantic keys whose value differs between a run's saved config and ``cfg``.

    Parameters
    ----------
    saved, cfg : RunConfig or PretrainConfig
        The config the run folder holds and the one about to resume it.
    free : sequence of str
        Keys (and the keys under them) allowed to differ.

    Returns
    -------
    dict
        ``{"train.lr": (0.001, 0.0003), ...}`` in key order; a key at its schema default on
        one side shows ``"(default)"`` there. Empty when the two configs are the same run.
    """
    old, new = changed_keys(saved), changed_keys(cfg)
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(old.keys() | new.keys()):
        if any(key == f or key.startswith(f + ".") for f in free):
            continue
        before, after = old.get(key, _DEFAULT), new.get(key, _DEFAULT)
        if before != after:
            out[key] = (before, after)
    return out


def config_conflicts(folder: str | Path, cfg: Any) -> dict[str, tuple[Any, Any]]:
    """:func:`resume_conflicts` of run folder ``folder``'s ``config.yaml`` and ``cfg``.

    Parameters
    ----------
    folder : path
        A run folder holding ``config.yaml``.
    cfg : RunConfig or PretrainConfig
        The config to compare with; its type picks the loader and the free keys.

    Returns
    -------
    dict
        As :func:`resume_conflicts`, with the free keys of the config's kind left out.

    Raises
    ------
    ConfigError
        The folder's ``config.yaml`` does not load with this brainxl (naming the fix).
    """
    run = RunDir(folder)
    pretraining = isinstance(cfg, PretrainConfig)
    load = load_pretrain_config if pretraining else load_config
    try:
        saved = load(run.config_path)
    except ConfigError as err:
        raise ConfigError(
            f"run {run.path}: its {run.CONFIG} does not load with this brainxl ({err}); "
            "pass run.resume=false to start the run over, or run.name=<new name> to keep it"
        ) from None
    return resume_conflicts(saved, cfg, PRETRAIN_RESUME_FREE if pretraining else TRAIN_RESUME_FREE)


def describe(conflicts: dict[str, tuple[Any, Any]]) -> str:
    """``"train.lr: 0.001 -> 0.0005; ..."`` of :func:`resume_conflicts`' result."""
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in conflicts.items())


def check_same_config(folder: str | Path, cfg: Any) -> None:
    """Raise when resuming run folder ``folder`` with ``cfg`` would mix two configs.

    Only a folder with something to resume counts (a checkpoint pointer or final
    metrics); a folder whose first attempt saved nothing starts over under ``cfg``.

    Parameters
    ----------
    folder : path
        The run folder.
    cfg : RunConfig or PretrainConfig
        The config about to resume it (``run.resume`` true).

    Raises
    ------
    ConfigError
        Naming the folder, every differing key with its old and new value, and the fix.
    """
    run = RunDir(folder)
    if not run.config_path.is_file():
        return
    if not (run.final_metrics.is_file() or run.latest_path.is_file()):
        return
    conflicts = config_conflicts(folder, cfg)
    if conflicts:
        raise ConfigError(
            f"run {run.path} was trained with other settings ({describe(conflicts)}); "
            "resuming it would mix two configs in one run. Pass run.resume=false to start it "
            "over under the new settings, or run.name=<new name> to keep both"
        )
