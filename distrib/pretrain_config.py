"""The pretraining run schema (``brainxl pretrain``): dataclasses, YAML, dotted overrides.

``load_pretrain_config("pretrain/tokenizer-debug", ["train.lr=1e-3"])`` returns a validated
:class:`PretrainConfig`; a wrong key or value raises :class:`~brainxl.distrib.config.ConfigError`
in one line naming the key, the closest valid key and the file, as ``brainxl train`` does.
YAML files are read by the run config's loader (``base:`` includes, config names under
``configs/``).

A run's identity (:func:`pretrain_run_id`) hashes the semantic keys that differ from the
defaults; a masked-modeling run replaces the tokenizer's path by the tokenizer's own hash
(:func:`tokenizer_hash`: its config and the digests of its shards), so the same command on
another copy of the same tokenizer finds the same run, and a retrained tokenizer a new one.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from brainxl.distrib.config import (
    ConfigError,
    LoggingConfig,
    RunSection,
    changed_keys,
    check_choices,
    merge_config,
    optimizer_checks,
    raise_failed,
    schema_keys,
)
from brainxl.distrib.rundir import RunDir
from brainxl.shards.stats import CHANNEL_NORMS

from brainxl.models.labram_tasks import MASK_UNITS

#: The two stages and the registered model each trains.
STAGES = {"tokenizer": "labram-tokenizer", "mem": "labram"}
#: File a finished tokenizer run writes next to ``final_model.pt``.
TOKENIZER_ID = "tokenizer.json"


@dataclass
class SourceConfig:
    """One EEG-only shard folder (a dataset) with an optional subject selection."""

    path: str = ""  # folder written by `brainxl shard --eeg-only`
    include: list[str] = field(default_factory=list)  # subjects kept ([] = all)
    exclude: list[str] = field(default_factory=list)  # subjects left out


@dataclass
class PretrainDataConfig:
    """The mixed stream (:class:`brainxl.shards.pretrain_stream.PretrainStream`)."""

    sources: list[SourceConfig] = field(default_factory=list)
    window_s: int = 4  # window length in whole seconds (= patches per channel)
    token_budget: int = 4096  # most tokens (batch x channels x patches, padding included)
    temperature: float = 0.0  # > 0: dataset sampling p_d ~ n_d^(1/T); 0 = each window once
    seed: int = 0  # seeds each epoch's order
    bucket_batches: int = 32  # montage bucketing: sort chunks of ~K batches by channels; 0 = off
    channel_norm: str = "none"  # none: microvolts | recording: its channels z-scored


@dataclass
class PretrainModelConfig:
    """Scale of the stage's model (``labram-tokenizer`` or ``labram``)."""

    flavor: str = "debug"  # debug | small | base | large | huge | xl
    overrides: dict[str, Any] = field(default_factory=dict)  # model keyword arguments


@dataclass
class PretrainSection:
    """What is pretrained."""

    stage: str = "tokenizer"  # tokenizer | mem
    tokenizer: str = ""  # mem: run folder of a finished tokenizer run
    mask_ratio: float = 0.5  # mem: masked share of each sample's real tokens (or channels)
    mask_unit: str = "patch"  # mem: patch (LaBraM) | channel: all patches of a channel


@dataclass
class PretrainTrainConfig:
    """Optimisation, precision, parallelism and checkpointing of a pretraining run.

    Batches are token-budget batches of the stream (``data.token_budget``), one per
    optimizer step and rank (no gradient accumulation).
    """

    steps: int = 1000  # optimizer steps (used when epochs == 0)
    epochs: int = 0  # > 0: every batch of that many stream epochs
    lr: float = 5e-4
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    min_lr: float = 0.0
    clip: float = 3.0  # gradient norm clip (0 = off)
    precision: str = "fp32"  # fp32 | bf16 | fp16
    zero_stage: int = 0
    offload_optimizer: bool = False
    activation_checkpointing: bool = False
    ckpt_every: int = 100  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2
    log_every: int = 10

    @property
    def batch_size(self) -> int:
        """DeepSpeed's nominal micro-batch (the real one varies with the token budget)."""
        return 1

    @property
    def grad_accum(self) -> int:
        """No gradient accumulation in pretraining."""
        return 1


@dataclass
class PretrainConfig:
    """Everything one pretraining run needs (``configs/pretrain/*.yaml`` fill it in)."""

    experiment: str = "pretrain"
    seed: int = 0
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    train: PretrainTrainConfig = field(default_factory=PretrainTrainConfig)
    run: RunSection = field(default_factory=RunSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """Registered model of the stage."""
        return STAGES[self.pretrain.stage]


def _all_keys() -> list[str]:
    """The schema's keys and those of a ``data.sources`` entry."""
    keys = schema_keys(PretrainConfig)
    keys.extend(f"data.sources.{f.name}" for f in fields(SourceConfig))
    return keys


def _wrap(err: Exception, source: str) -> ConfigError:
    from omegaconf.errors import ConfigKeyError, ValidationError

    key = getattr(err, "full_key", None) or ""
    where = f" in {source}" if source else ""
    if isinstance(err, ConfigKeyError):
        plain = ".".join(p for p in key.replace("[", ".").replace("]", "").split(".") if p and
                         not p.isdigit())  # fmt: skip
        keys = _all_keys()
        leaf = plain.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
        close = [leaves[near[0]]] if near and "." not in plain else []
        close = close or difflib.get_close_matches(plain, keys, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(
            f"unknown pretraining config key {key!r}{hint}{where}; valid keys are listed in "
            "distrib/pretrain_config.py"
        )
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(f"wrong type for pretraining config key {key!r}{where}: {msg}")
    return ConfigError(f"invalid pretraining configuration{where}: {err}")


def _validate(cfg: PretrainConfig, source: str) -> None:
    t, d, p = cfg.train, cfg.data, cfg.pretrain
    choices = {
        "pretrain.stage": tuple(STAGES),
        "train.schedule": ("cosine", "constant"),
        "train.precision": ("fp32", "bf16", "fp16"),
        "logging.wandb": ("offline", "online", "disabled"),
        "data.channel_norm": CHANNEL_NORMS,
        "pretrain.mask_unit": MASK_UNITS,
    }
    check_choices(cfg, choices, source)
    checks = [
        (bool(d.sources), "data.sources is empty: list the EEG-only shard folders to pretrain on"),
        (all(s.path for s in d.sources), "every entry of data.sources needs a path"),
        (d.window_s >= 1, "data.window_s must be >= 1 (seconds)"),
        (d.token_budget >= 1, "data.token_budget must be >= 1"),
        (d.temperature >= 0, "data.temperature must be >= 0 (0 = each window once per epoch)"),
        (d.bucket_batches >= 0, "data.bucket_batches must be >= 0 (0 = no montage bucketing)"),
        (0.0 < p.mask_ratio < 1.0, "pretrain.mask_ratio must be in (0, 1)"),
        (
            p.stage != "mem" or bool(p.tokenizer),
            "pretrain.stage=mem needs pretrain.tokenizer=<run folder of a tokenizer run>",
        ),
        (t.log_every >= 1, "train.log_every must be >= 1"),
        *optimizer_checks(t),
    ]
    raise_failed(checks, source)


def load_pretrain_config(
    path_or_name: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> PretrainConfig:
    """Build a :class:`PretrainConfig` from the schema, a YAML file and dotted overrides.

    Parameters
    ----------
    path_or_name : str or path or None
        A YAML file or a name under ``configs/`` (``"pretrain/tokenizer-debug"``).
    overrides : list of str
        ``key=value`` items, e.g. ``["train.steps=10", "pretrain.tokenizer=runs/..."]``.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or invalid value, in one line naming the key and source.
    """
    cfg, source = merge_config(PretrainConfig, path_or_name, overrides, wrap=_wrap)
    assert isinstance(cfg, PretrainConfig)
    _validate(cfg, source if not overrides else f"{source} + overrides")
    return cfg


def to_yaml(cfg: PretrainConfig) -> str:
    """The resolved configuration as YAML text (``config.yaml`` of the run)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def data_identity(cfg: PretrainConfig) -> dict[str, Any]:
    """Each source's folder, subject selection and ``manifest.json`` digest; for masked
    modeling also the hash of the tokenizer whose codes it learns (``tokenizer_hash``)."""
    from brainxl.shards.shardset import ShardSet

    out = []
    for s in cfg.data.sources:
        out.append(
            {
                "path": str(Path(s.path).resolve()),
                "include": list(s.include),
                "exclude": list(s.exclude),
                "manifest_sha256": ShardSet.open_eeg_only(s.path).digest(),
            }
        )
    if cfg.pretrain.stage == "mem":
        return {"sources": out, "tokenizer_hash": read_tokenizer_id(cfg.pretrain.tokenizer)["hash"]}
    return {"sources": out}


def tokenizer_hash(cfg: PretrainConfig, data_id: dict[str, Any]) -> str:
    """Hash (16 hex digits) of a tokenizer run's semantic config and its data's digests."""
    keys = {k: v for k, v in changed_keys(cfg).items() if not k.startswith("data.sources")}
    digests = [(s["include"], s["exclude"], s["manifest_sha256"]) for s in data_id["sources"]]
    blob = json.dumps({"config": keys, "data": digests}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_tokenizer_id(folder: str | os.PathLike) -> dict[str, Any]:
    """``tokenizer.json`` of a finished tokenizer run (its hash, flavor and overrides).

    Raises
    ------
    ValueError
        One line naming the folder when it is not a finished tokenizer run.
    """
    path = Path(folder) / TOKENIZER_ID
    if not path.is_file():
        raise ValueError(
            f"pretrain.tokenizer={folder}: no {TOKENIZER_ID} there; point it at the run "
            "folder of a finished `brainxl pretrain` tokenizer run"
        )
    return json.loads(path.read_text())


def check_tokenizer_scale(cfg: PretrainConfig) -> None:
    """Refuse masked modeling on another input scale than its tokenizer was trained on.

    The tokenizer's codes describe spectra of windows at its ``data.channel_norm``
    (tokenizers written before the option existed read microvolts, ``"none"``).
    """
    if cfg.pretrain.stage != "mem":
        return
    theirs = read_tokenizer_id(cfg.pretrain.tokenizer).get("channel_norm", "none")
    if theirs != cfg.data.channel_norm:
        raise ValueError(
            f"pretrain.tokenizer={cfg.pretrain.tokenizer} was trained with "
            f"data.channel_norm={theirs}, this run reads data.channel_norm="
            f"{cfg.data.channel_norm}: its codes would describe another input scale. Set "
            f"data.channel_norm={theirs}, or train a tokenizer with {cfg.data.channel_norm}"
        )


def pretrain_run_id(cfg: PretrainConfig) -> str:
    """Hash (12 hex digits) of the run: changed semantic keys, the tokenizer's hash for mem.

    Shard folders count by path (their content is checked on resume, as in training).
    """
    keys = changed_keys(cfg)
    keys.pop("train.ckpt_every", None)
    keys.pop("train.keep_last", None)
    if cfg.pretrain.stage == "mem":
        keys.pop("pretrain.tokenizer", None)
        keys["tokenizer_hash"] = read_tokenizer_id(cfg.pretrain.tokenizer)["hash"]
    blob = json.dumps({"scheme": 1, "changed": keys}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def pretrain_run_dir(cfg: PretrainConfig) -> Path:
    """``<run.root>/<experiment>/<stage>-<run id>`` (or ``run.name`` when given)."""
    name = cfg.run.name or f"{cfg.pretrain.stage}-{pretrain_run_id(cfg)}"
    return Path(cfg.run.root) / cfg.experiment / name


def save_pretrain_config(cfg: PretrainConfig, folder: str | os.PathLike) -> None:
    """Write ``config.yaml`` and ``version.json`` into ``folder`` atomically."""
    from brainxl.distrib.config import version_info

    from brainxl.files import atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RunDir.CONFIG, to_yaml(cfg))
    info = {**version_info(), "run_id": pretrain_run_id(cfg)}
    atomic_write_text(folder / RunDir.VERSION, json.dumps(info, indent=2))
