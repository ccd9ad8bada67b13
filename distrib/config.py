"""The run schema: typed dataclasses, YAML files merged onto them, dotted overrides.

``load_config("configs/neurobolt-debug.yaml", ["train.lr=3e-4"])`` returns a validated
:class:`RunConfig`. An unknown key or a value of the wrong type raises
:class:`ConfigError` naming the key, the closest valid key and the file. A run's identity
(:func:`run_id`) is a hash of the semantic keys that differ from the schema defaults, so
the same command finds the same run folder and resumes it, and a new key with a default
renames no existing run.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from brainxl.configs import CONFIG_DIR
from brainxl.distrib.rundir import RunDir
from brainxl.shards.config import WindowConfig

from brainxl.files import atomic_write_text
from brainxl.objectives import LOSS_NAMES


class ConfigError(ValueError):
    """A configuration file or override that does not match the schema."""


@dataclass
class ModelConfig:
    """Which registered model to build (``brainxl.models.registry``)."""

    name: str = "neurobolt"  # registry name (brainxl models) or package.module:SPEC
    flavor: str = "debug"  # scale: debug | small | base | large | huge
    overrides: dict[str, Any] = field(default_factory=dict)  # non-scale keyword arguments
    pretrained: str = ""  # pretraining run folder / weights file for the LaBraM encoder
    spatial_init: str = ""  # EEG-only shard folder(s) whose ICA starts the spatial filters


@dataclass
class DataConfig:
    """Where the shards are and how one LOSO fold splits the subjects."""

    shards: str = "data/shards"  # folder holding manifest.json and the tar shards
    reader: WindowConfig = field(default_factory=WindowConfig)
    test_subject: str = ""  # LOSO test subject ("" = no test subject)
    val_subjects: list[str] = field(default_factory=list)  # held-out TRAINING-fold subjects
    n_val_subjects: int = 1  # how many to hold out when val_subjects is empty
    split_seed: int | None = None  # seed of that draw (None = the run's seed)
    epoch_windows: int = 0  # windows per rank per epoch (0 = the reader's default)
    num_workers: int = 0  # DataLoader workers per rank


@dataclass
class LossConfig:
    """Translation objective (``brainxl.objectives``)."""

    name: str = "mse"  # one of brainxl.objectives.LOSS_NAMES
    mse_weight: float = 1.0  # composite: weight of the MSE term
    pearson_weight: float = 1.0  # composite: weight of (1 - Pearson r)
    wavelet_weight: float = 0.5  # composite: weight of the wavelet skip loss
    wavelet: str = "haar"  # composite: wavelet of the skip loss
    wavelet_levels: int = 3


@dataclass
class TrainConfig:
    """Optimisation, precision, parallelism, validation and checkpointing."""

    steps: int = 1000  # optimizer steps (used when epochs == 0)
    epochs: int = 0  # > 0: steps = epochs * batches per epoch / grad_accum
    batch_size: int = 16  # micro-batch per rank
    lr: float = 3e-4
    weight_decay: float = 0.05
    layer_decay: float = 1.0  # layer-wise LR decay: lr * decay^(top - layer) (LaBraM layers)
    # steps the LaBraM encoder (model.encoder) stays at LR 0 while the rest trains, then
    # warms up over warmup_steps (linear probe, then fine-tune); >= steps: frozen throughout
    encoder_frozen_steps: int = 0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | constant
    min_lr: float = 0.0
    grad_accum: int = 1
    clip: float = 1.0  # gradient norm clip (0 = off)
    precision: str = "fp32"  # fp32 | bf16 | fp16
    zero_stage: int = 0  # 0 = data parallel, 1/2/3 = ZeRO
    offload_optimizer: bool = False  # ZeRO >= 1: optimizer state and step on the CPU
    activation_checkpointing: bool = False
    val_every: int = 100  # steps between validations (0 = never)
    patience: int = 0  # validations without improvement before stopping (0 = off)
    keep_best: bool = True  # test/evaluate the best-validation weights (best_model.pt)
    ckpt_every: int = 100  # steps between checkpoints (0 = only at the end)
    keep_last: int = 2  # checkpoints kept (>= 1)
    log_every: int = 10  # steps between progress lines
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass
class RunSection:
    """Where runs live and whether a repeated command resumes."""

    root: str = "runs"
    resume: bool = True
    name: str = ""  # "" = derived from the run hash


@dataclass
class LoggingConfig:
    """Metric sinks; W&B is offline unless ``WANDB_MODE`` or ``wandb`` says otherwise."""

    wandb: str = "offline"  # offline | online | disabled
    project: str = "brainxl"
    group: str = ""  # "" = experiment name
    console: bool = True


@dataclass
class RunConfig:
    """Everything one training run needs (the YAML files fill this in)."""

    experiment: str = "default"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunSection = field(default_factory=RunSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    cluster: dict[str, Any] = field(default_factory=dict)  # read by launch/slurm.py


# Sections and keys that do not change what is computed: they are left out of the run hash.
NON_SEMANTIC = ("run", "logging", "cluster", "data.num_workers", "train.log_every")

_CHOICES = {
    "train.schedule": ("cosine", "constant"),
    "train.precision": ("fp32", "bf16", "fp16"),
    "train.loss.name": LOSS_NAMES,
    "logging.wandb": ("offline", "online", "disabled"),
    "data.reader.modality": ("sensors", "parcels"),
    "data.reader.on_error": ("fail", "skip"),
}


def schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the dataclass schema ``cls``, sections before their keys.

    Parameters
    ----------
    cls : type
        A dataclass; fields whose default factory is a dataclass are walked into.
    prefix : str
        Put before every key (``"train."`` for the keys of a section).

    Returns
    -------
    list of str
    """
    keys = []
    for f in fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        factory = f.default_factory if f.default_factory is not MISSING else None
        if factory is not None and is_dataclass(factory):
            keys.extend(schema_keys(factory, key + "."))
    return keys


def _closest(key: str) -> str:
    keys = schema_keys(RunConfig)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Keys the schema no longer has, with where their setting lives now.
REMOVED_KEYS = {
    "data.reader.batch_size": "a run's batch size is train.batch_size (per rank)",
}


def _wrap(err: Exception, source: str) -> ConfigError:
    from omegaconf.errors import ConfigKeyError, ValidationError

    key = getattr(err, "full_key", None) or ""
    where = f" in {source}" if source else ""
    if isinstance(err, ConfigKeyError) and key in REMOVED_KEYS:
        return ConfigError(
            f"config key {key!r}{where} is not a run setting: {REMOVED_KEYS[key]}; remove the key"
        )
    if isinstance(err, ConfigKeyError):
        return ConfigError(
            f"unknown config key {key!r}{_closest(key)}{where}; valid keys are listed "
            f"in distrib/config.py"
        )
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(f"wrong type for config key {key!r}{where}: {msg}")
    return ConfigError(f"invalid configuration{where}: {err}")


def resolve_config_path(path_or_name: str | os.PathLike) -> Path:
    """Find a config file by path or by name under ``configs/`` (``.yaml`` optional)."""
    p = Path(path_or_name)
    candidates = [p, p.with_suffix(".yaml"), CONFIG_DIR / p, (CONFIG_DIR / p).with_suffix(".yaml")]
    for c in candidates:
        if c.is_file():
            return c
    shipped = sorted(str(x.relative_to(CONFIG_DIR)) for x in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(
        f"config file {str(path_or_name)!r} not found; give a path or one of: {', '.join(shipped)}"
    )


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> Any:
    """Load ``path``; a top-level ``base: other.yaml`` is loaded first and merged under it."""
    from omegaconf import OmegaConf

    if path.resolve() in seen:
        raise ConfigError(f"config {path} includes itself through 'base'")
    try:
        node = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends
        raise ConfigError(f"cannot parse {path}: {err}; fix the YAML syntax") from err
    if node is None or not OmegaConf.is_dict(node):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    base = node.pop("base", None)
    if base is None:
        return node
    base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.is_file():
        base_path = resolve_config_path(base)
    return OmegaConf.merge(_load_yaml(base_path, (*seen, path.resolve())), node)


def _field_type(key: str) -> str:
    cls: Any = RunConfig
    ftype = ""
    for part in key.split("."):
        if not is_dataclass(cls):
            return ""
        match = [f for f in fields(cls) if f.name == part]
        if not match:
            return ""
        ftype = str(match[0].type)
        cls = match[0].default_factory if match[0].default_factory is not MISSING else None
    return ftype


def _quote_digits(item: str) -> str:
    """Keep ``data.test_subject=04`` a string (YAML would read 4)."""
    key, _, value = item.partition("=")
    ftype = _field_type(key.strip())
    if ftype == "str" and re.fullmatch(r"\d+", value.strip()):
        return f"{key}='{value.strip()}'"
    if ftype == "list[str]" and re.fullmatch(r"\[[\w\s,'\"-]*\]", value.strip()):
        parts = [p.strip().strip("'\"") for p in value.strip()[1:-1].split(",") if p.strip()]
        return f"{key}=[{', '.join(repr(p) for p in parts)}]"
    return item


def check_choices(cfg: Any, choices: dict[str, tuple[str, ...]], source: str) -> None:
    """Raise a one-line :class:`ConfigError` for the first dotted key of ``cfg`` whose value
    is not among its allowed ``choices`` (with a "did you mean" hint)."""
    for key, allowed in choices.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"config key {key!r} is {value!r}{hint} in {source}; allowed: {', '.join(allowed)}"
            )


def optimizer_checks(t: Any) -> list[tuple[bool, str]]:
    """``(ok, message)`` checks of the ``train`` keys every DeepSpeed loop shares."""
    return [
        (t.zero_stage in (0, 1, 2, 3), "train.zero_stage must be 0, 1, 2 or 3"),
        (0.0 < t.layer_decay <= 1.0, "train.layer_decay must be in (0, 1] (1 = off)"),
        (t.keep_last >= 1, "train.keep_last must be >= 1"),
        (t.steps >= 1 or t.epochs >= 1, "train.steps or train.epochs must be >= 1"),
        (len(t.betas) == 2, "train.betas must hold two numbers"),
        (
            not (t.offload_optimizer and t.zero_stage == 0),
            "train.offload_optimizer needs zero_stage >= 1",
        ),
    ]


def raise_failed(checks: list[tuple[bool, str]], source: str) -> None:
    """Raise a :class:`ConfigError` with the message of the first failed check."""
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{msg} (in {source})")


def _check_choices(cfg: RunConfig, source: str) -> None:
    check_choices(cfg, _CHOICES, source)
    t = cfg.train
    checks = [
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.grad_accum >= 1, "train.grad_accum must be >= 1"),
        (t.encoder_frozen_steps >= 0, "train.encoder_frozen_steps must be >= 0 (0 = off)"),
        *optimizer_checks(t),
        (
            cfg.data.test_subject not in cfg.data.val_subjects,
            "data.test_subject is also in data.val_subjects",
        ),
    ]
    raise_failed(checks, source)


def merge_config(
    schema_cls: type,
    path_or_name: str | os.PathLike | None,
    overrides: Sequence[str],
    rewrite: Callable[[str], str] | None = None,
    wrap: Callable[[Exception, str], ConfigError] | None = None,
) -> tuple[Any, str]:
    """Merge a structured schema, a YAML file and ``key=value`` overrides into an object.

    Parameters
    ----------
    schema_cls : type
        The dataclass schema (:class:`RunConfig`, the pretraining schema, ...).
    path_or_name : str or path or None
        A YAML file or a name under ``configs/``.
    overrides : sequence of str
        Dotted ``key=value`` items, applied in order.
    rewrite : callable, optional
        Applied to each override before it is parsed (e.g. quoting digit-only strings).
    wrap : callable, optional
        Turns an OmegaConf error and its source into the one-line :class:`ConfigError`
        (default: the run config's wording).

    Returns
    -------
    (config object, source)
        ``source`` names the YAML file (or the schema defaults) for error messages.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or unparsable value, in one line naming the key and source.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    wrap = wrap or _wrap
    node = OmegaConf.structured(schema_cls)
    source = "the schema defaults"
    if path_or_name is not None:
        path = resolve_config_path(path_or_name)
        source = str(path)
        try:
            node = OmegaConf.merge(node, _load_yaml(path))
        except OmegaConfBaseException as err:
            raise wrap(err, source) from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.lr=3e-4)")
        if rewrite is not None:
            item = rewrite(item)
        try:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise wrap(err, f"command-line override {item!r}") from None
        except Exception as err:  # yaml.YAMLError: a value that is not valid YAML
            msg = str(err).splitlines()[0]
            raise ConfigError(
                f"cannot parse the value of override {item!r} ({msg}); quote it for the shell"
            ) from None
    try:
        return OmegaConf.to_object(node), source
    except OmegaConfBaseException as err:
        raise wrap(err, source) from None


def load_config(
    path_or_name: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Build a :class:`RunConfig` from the schema, a YAML file and dotted overrides.

    Parameters
    ----------
    path_or_name : str or path or None
        A YAML file, or a name under ``configs/`` (``"neurobolt-debug"``); ``None`` gives
        the schema defaults.
    overrides : list of str
        ``key=value`` items, e.g. ``["train.lr=3e-4", "data.test_subject=sub-01"]``.

    Returns
    -------
    cfg : RunConfig
        The validated configuration.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or invalid value, naming the key and the source.
    """
    cfg, source = merge_config(RunConfig, path_or_name, overrides, _quote_digits)
    assert isinstance(cfg, RunConfig)
    _check_choices(cfg, source if not overrides else f"{source} + overrides")
    return cfg


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain nested dict of ``cfg`` (JSON/YAML serialisable)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: RunConfig) -> str:
    """The resolved configuration as YAML text (what ``config.yaml`` holds)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def semantic_dict(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` without the keys in :data:`NON_SEMANTIC` (what identifies a run)."""
    d = to_dict(cfg)
    for key in NON_SEMANTIC:
        *parents, leaf = key.split(".")
        node = d
        for p in parents:
            node = node[p]
        node.pop(leaf, None)
    return d


#: Version of the run-identity scheme: bump it only when the meaning of an existing key
#: changes (every run folder is renamed then). Adding a key with a default needs nothing.
RUN_ID_SCHEME = 2


def changed_keys(cfg: RunConfig) -> dict[str, Any]:
    """The semantic keys whose value differs from the schema default, flat and dotted.

    The defaults are those of ``type(cfg)`` (its dataclass sections included), so a field
    added to the schema later, with a default, never appears here for an existing run.

    Returns
    -------
    changed : dict
        ``{"train.lr": 0.001, "data.test_subject": "01", ...}``; a dict or list valued key
        (``model.overrides``, ``train.betas``) counts as one value.
    """
    out: dict[str, Any] = {}
    _diff(cfg, type(cfg)(), to_dict(cfg), to_dict(type(cfg)()), "", out)
    return out


def _diff(obj: Any, ref: Any, dobj: dict, dref: dict, prefix: str, out: dict) -> None:
    for f in fields(obj):
        key = prefix + f.name
        if key in NON_SEMANTIC:
            continue
        value, default = getattr(obj, f.name), getattr(ref, f.name, MISSING)
        if is_dataclass(value) and is_dataclass(default) and type(value) is type(default):
            _diff(value, default, dobj[f.name], dref[f.name], key + ".", out)
        elif default is MISSING or dobj[f.name] != dref[f.name]:
            out[key] = dobj[f.name]


def run_id(cfg: RunConfig) -> str:
    """Hash (12 hex digits) of the semantic keys that differ from the schema defaults.

    Same science, same run: the same command finds the same run folder and resumes it,
    and a key added to the schema with a default changes no existing run's id (the hash
    covers :func:`changed_keys` and :data:`RUN_ID_SCHEME`, as dora's ``XP.sig`` hashes
    only the overrides).
    """
    blob = json.dumps(
        {"scheme": RUN_ID_SCHEME, "changed": changed_keys(cfg)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def fold_name(cfg: RunConfig) -> str:
    """Name of the LOSO fold (``test-sub-01``) or ``all`` without a test subject."""
    return f"test-{cfg.data.test_subject}" if cfg.data.test_subject else "all"


def run_dir(cfg: RunConfig) -> Path:
    """``<run.root>/<experiment>/<fold>-<run_id>`` (or ``run.name`` when given)."""
    name = cfg.run.name or f"{fold_name(cfg)}-{run_id(cfg)}"
    return Path(cfg.run.root) / cfg.experiment / name


def version_info() -> dict[str, str]:
    """Versions of brainxl and its runtime, saved with every run and checkpoint."""
    from brainxl.versions import package_versions

    return package_versions()


def save_run_config(cfg: RunConfig, folder: str | os.PathLike) -> None:
    """Write ``config.yaml`` (resolved) and ``version.json`` into ``folder`` atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (
        (RunDir.CONFIG, to_yaml(cfg)),
        (RunDir.VERSION, json.dumps({**version_info(), "run_id": run_id(cfg)}, indent=2)),
    ):
        atomic_write_text(folder / name, text)
