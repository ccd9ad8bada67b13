"""The search file of ``brainxl sweep`` (``configs/sweep/*.yaml``): space, searcher, budget.

A search file holds the search space in the run config's dotted keys, how to search it,
the inner folds, the resources of one trial and the objective::

    space:
      train.lr: {loguniform: [1.0e-4, 3.0e-3]}
      train.weight_decay: {choice: [0.0, 0.05]}
      model.overrides.readout_rank: {randint: [2, 9]}   # high bound excluded
    searcher: random        # random | optuna (TPE)
    scheduler: asha         # none | asha (successive halving over inner folds)
    num_samples: 4          # configurations drawn (per grid point when a key is a grid)
    max_concurrent: 2       # trials at once (0 = as many as the resources allow)
    inner_folds: 3          # 0 = leave one training subject out; K = K grouped folds
    resources: {ranks: 1, cpus: 1, gpus: 0}   # per trial: DeepSpeed ranks, CPUs/GPUs per rank
    objective: val_pearson_r                  # mean over the inner folds, maximised
    max_failures: 1         # retries of a crashing trial before it is reported as failed
    seed: 0
    overrides: [train.steps=60]               # applied to every run of the sweep

:func:`load_search` validates it with one-line errors naming the file and key.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainxl.configs import CONFIG_DIR

SWEEP_DIR = CONFIG_DIR / "sweep"
#: Sampling functions a key of ``space`` may use, with their argument count.
DISTRIBUTIONS = {"choice": None, "grid": None, "uniform": 2, "loguniform": 2, "randint": 2}
SEARCHERS = ("random", "optuna")
SCHEDULERS = ("none", "asha")
#: Objectives: the per-fold score each one averages.
OBJECTIVES = {
    "val_pearson_r": "max",  # Pearson r on the inner fold's held-out subjects (best val step)
    "val_loss": "min",  # the loss on the same subjects at the same step
}
_KEYS = (
    "space",
    "searcher",
    "scheduler",
    "num_samples",
    "max_concurrent",
    "inner_folds",
    "resources",
    "objective",
    "max_failures",
    "seed",
    "overrides",
    "asha",
)


class SearchError(ValueError):
    """A search file that does not describe a valid sweep."""


@dataclass(frozen=True)
class Resources:
    """What one trial holds: ``ranks`` DeepSpeed ranks, each with ``cpus`` CPUs, ``gpus`` GPUs."""

    ranks: int = 1
    cpus: float = 1.0
    gpus: float = 0.0

    @property
    def total_cpus(self) -> float:
        return self.ranks * self.cpus

    @property
    def total_gpus(self) -> float:
        return self.ranks * self.gpus


@dataclass(frozen=True)
class SearchSpec:
    """A validated search file (see the module docstring for the keys)."""

    space: dict[str, dict[str, list[Any]]]
    searcher: str = "random"
    scheduler: str = "none"
    num_samples: int = 4
    max_concurrent: int = 0
    inner_folds: int = 0
    resources: Resources = field(default_factory=Resources)
    objective: str = "val_pearson_r"
    max_failures: int = 1
    seed: int = 0
    overrides: tuple[str, ...] = ()
    asha_grace: int = 1
    asha_reduction: int = 2
    source: str = ""

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``: which way the objective improves."""
        return OBJECTIVES[self.objective]

    def param_space(self) -> dict[str, Any]:
        """The Ray Tune search space (one entry per dotted key)."""
        from ray import tune

        out: dict[str, Any] = {}
        for key, spec in self.space.items():
            (kind, args), *_ = spec.items()
            if kind == "choice":
                out[key] = tune.choice(list(args))
            elif kind == "grid":
                out[key] = tune.grid_search(list(args))
            elif kind == "uniform":
                out[key] = tune.uniform(float(args[0]), float(args[1]))
            elif kind == "loguniform":
                out[key] = tune.loguniform(float(args[0]), float(args[1]))
            else:
                out[key] = tune.randint(int(args[0]), int(args[1]))
        return out


def resolve_search_path(path_or_name: str | os.PathLike[str]) -> Path:
    """A search file by path or by name under ``configs/sweep/`` (``.yaml`` optional)."""
    p = Path(path_or_name)
    for c in (p, p.with_suffix(".yaml"), SWEEP_DIR / p, (SWEEP_DIR / p).with_suffix(".yaml")):
        if c.is_file():
            return c
    shipped = sorted(x.stem for x in SWEEP_DIR.glob("*.yaml"))
    raise SearchError(
        f"search file {str(path_or_name)!r} not found; give a path or one of: {', '.join(shipped)}"
    )


def _fail(source: str, key: str, msg: str) -> SearchError:
    return SearchError(f"{source}: {key}: {msg}")


def _int(raw: dict[str, Any], key: str, default: int, source: str, low: int = 0) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(source, key, f"must be an integer >= {low}, got {value!r}")
    return value


_SCI = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _number(value: Any) -> Any:
    """``1e-4`` as a float: YAML 1.1 reads exponents without a dot as strings."""
    return float(value) if isinstance(value, str) and _SCI.fullmatch(value.strip()) else value


def _check_space(raw: Any, source: str) -> dict[str, dict[str, list[Any]]]:
    from brainxl.distrib.config import ConfigError, load_config

    if not isinstance(raw, dict) or not raw:
        raise _fail(source, "space", "must map dotted config keys to a distribution")
    out: dict[str, dict[str, list[Any]]] = {}
    for key, spec in raw.items():
        where = f"space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise _fail(
                source, where, f"must be one of {{{', '.join(DISTRIBUTIONS)}: [...]}}, got {spec!r}"
            )
        (kind, args), *_ = spec.items()
        if isinstance(args, list):
            args = [_number(a) for a in args]
        if kind not in DISTRIBUTIONS:
            close = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(source, where, f"unknown distribution {kind!r}{hint}")
        if not isinstance(args, list) or not args:
            raise _fail(source, where, f"{kind} needs a list of values, got {args!r}")
        n = DISTRIBUTIONS[kind]
        if n is not None:
            if len(args) != n or not all(isinstance(a, int | float) for a in args):
                raise _fail(source, where, f"{kind} needs [low, high] numbers, got {args!r}")
            if not args[0] < args[1]:
                raise _fail(source, where, f"{kind} needs low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise _fail(source, where, "loguniform needs low > 0")
        # every value must be a valid override of the run schema (key and type)
        for value in args if n is None else args[:1]:
            try:
                load_config(None, [override(key, value)])
            except ConfigError as err:
                raise _fail(source, where, str(err)) from None
        out[str(key)] = {str(kind): list(args)}
    return out


def override(key: str, value: Any) -> str:
    """The ``key=value`` command-line override that sets ``key`` to ``value``."""
    import json

    if isinstance(value, str):
        return f"{key}={value}"
    if isinstance(value, bool):
        return f"{key}={'true' if value else 'false'}"
    return f"{key}={json.dumps(value)}"


def load_search(path_or_name: str | os.PathLike[str]) -> SearchSpec:
    """Read and validate a search file.

    Parameters
    ----------
    path_or_name : str or path
        A YAML file, or a name under ``configs/sweep/`` (``"neurobolt-debug"``).

    Returns
    -------
    spec : SearchSpec

    Raises
    ------
    SearchError
        Unknown key, unknown distribution, invalid value: the message names the file and key.
    """
    import yaml

    path = resolve_search_path(path_or_name)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SearchError(f"cannot parse {source}: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SearchError(f"{source} must hold a mapping (space:, searcher:, ...)")
    for key in raw:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(source, str(key), f"unknown key{hint}; valid: {', '.join(_KEYS)}")
    space = _check_space(raw.get("space"), source)
    for key, allowed in (("searcher", SEARCHERS), ("scheduler", SCHEDULERS)):
        if str(raw.get(key, allowed[0])) not in allowed:
            raise _fail(source, key, f"{raw[key]!r} is not one of {', '.join(allowed)}")
    objective = str(raw.get("objective", "val_pearson_r"))
    if objective not in OBJECTIVES:
        raise _fail(source, "objective", f"{objective!r} is not one of {', '.join(OBJECTIVES)}")
    res_raw = raw.get("resources") or {}
    if not isinstance(res_raw, dict) or set(res_raw) - {"ranks", "cpus", "gpus"}:
        raise _fail(source, "resources", "must be a mapping of ranks, cpus, gpus")
    ranks = _int(res_raw, "ranks", 1, source + ": resources", low=1)
    cpus, gpus = res_raw.get("cpus", 1), res_raw.get("gpus", 0)
    if not isinstance(cpus, int | float) or cpus <= 0:
        raise _fail(source, "resources.cpus", f"must be a number > 0, got {cpus!r}")
    if not isinstance(gpus, int | float) or gpus < 0:
        raise _fail(source, "resources.gpus", f"must be a number >= 0, got {gpus!r}")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(
        isinstance(o, str) and "=" in o for o in overrides
    ):
        raise _fail(source, "overrides", "must be a list of key=value strings")
    asha = raw.get("asha") or {}
    if not isinstance(asha, dict) or set(asha) - {"grace_period", "reduction_factor"}:
        raise _fail(source, "asha", "must be a mapping of grace_period, reduction_factor")
    searcher = str(raw.get("searcher", "random"))
    if searcher == "optuna" and any("grid" in s for s in space.values()):
        raise _fail(source, "space", "grid cannot be used with searcher optuna; use choice")
    return SearchSpec(
        space=space,
        searcher=searcher,
        scheduler=str(raw.get("scheduler", "none")),
        num_samples=_int(raw, "num_samples", 4, source, low=1),
        max_concurrent=_int(raw, "max_concurrent", 0, source),
        inner_folds=_int(raw, "inner_folds", 0, source),
        resources=Resources(ranks, float(cpus), float(gpus)),
        objective=objective,
        max_failures=_int(raw, "max_failures", 1, source),
        seed=_int(raw, "seed", 0, source),
        overrides=tuple(overrides),
        asha_grace=_int(asha, "grace_period", 1, source + ": asha", low=1),
        asha_reduction=_int(asha, "reduction_factor", 2, source + ": asha", low=2),
        source=source,
    )
