"""Registry of trainable models and their flavors (like ``timm.list_models``).

Each model module registers itself with :func:`register_model`; a flavor sets scale
only. ``brainxl models`` prints the table and tests iterate over it, so a registered
model without a test case fails CI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"neurobolt"``, ``"samba-eeg2fmri"``.
    build : callable
        ``build(flavor: str, **overrides) -> nn.Module``.
    flavors : dict of str to dict
        Flavor name -> keyword arguments (scale only). Each must contain
        ``"expected_params"`` (int), the parameter count the table promises.
    example_inputs : callable
        ``example_inputs(model, batch_size) -> dict`` of keyword tensors for ``forward``
        at the flavor's default input shape (used by tests and benchmarks).
    describe_io : callable
        ``describe_io(flavor) -> (input description, output description)`` strings,
        e.g. ``("26 ch x 16.0 s @ 200 Hz", "64 ROIs")``.
    task : str
        ``"eeg2fmri"``, ``"fmri2eeg"`` or ``"pretrain"``.
    """

    name: str
    build: Callable[..., nn.Module]
    flavors: dict[str, dict[str, Any]]
    example_inputs: Callable[[nn.Module, int], dict[str, Any]]
    describe_io: Callable[[str], tuple[str, str]]
    task: str
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    import importlib

    for mod in ("labram", "neurobolt", "samba"):
        try:
            importlib.import_module(f"brainxl.models.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"brainxl.models.{mod}":
                raise


def list_models() -> dict[str, ModelSpec]:
    """Return every registered model, loading the built-in modules first."""
    _load_builtin()
    return dict(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """Return the spec of ``name``; unknown names fail listing the valid ones."""
    models = list_models()
    if name not in models:
        import difflib

        close = difflib.get_close_matches(name, models, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Registered: {', '.join(sorted(models))}")
    return models[name]


def build_model(name: str, flavor: str = "debug", **overrides: Any) -> nn.Module:
    """Build model ``name`` at ``flavor``; ``overrides`` change non-scale settings."""
    spec = get_model_spec(name)
    if flavor not in spec.flavors:
        raise ValueError(
            f"model {name!r} has no flavor {flavor!r}; flavors: {', '.join(spec.flavors)}"
        )
    return spec.build(flavor, **overrides)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (unique tensors) of ``model``."""
    return sum(p.numel() for p in model.parameters())


def format_count(n: int) -> str:
    """Human-readable parameter count: ``5.8M``, ``369M``, ``1.1B``, ``812K``."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            v = n / div
            return f"{v:.1f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return str(n)
