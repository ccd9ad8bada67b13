"""Registry of model families and their flavors (like ``timm.list_models``).

Each model module registers its :class:`~brainxl.models.spec.ModelSpec` with
:func:`register_model`; a flavor sets scale only. ``brainxl models`` prints the table and
tests iterate over it, so a registered model without a test case fails CI.

Plugging in a family without editing brainxl: either ``model.name=package.module:SPEC``
(a ``ModelSpec`` object; the module must be importable by the rank processes, e.g. on
``PYTHONPATH``), or an installed package that declares an entry point in the
``brainxl.models`` group whose module registers its specs on import::

    [project.entry-points."brainxl.models"]
    mymodels = "mypackage.mymodels"
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from brainxl.models.spec import ModelSpec

#: Entry-point group of installed model-family plugins.
ENTRY_POINT_GROUP = "brainxl.models"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (names are unique)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


_loaded = False


def _load_builtin() -> None:
    global _loaded
    import importlib
    import importlib.metadata as md

    for mod in ("labram", "neurobolt", "samba"):
        try:
            importlib.import_module(f"brainxl.models.{mod}")
        except ModuleNotFoundError as err:
            if err.name != f"brainxl.models.{mod}":
                raise
    if not _loaded:
        _loaded = True
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            importlib.import_module(ep.value.partition(":")[0])


def _import_spec(name: str) -> ModelSpec:
    """The ``ModelSpec`` named by ``"package.module:ATTR"``."""
    import importlib

    mod, _, attr = name.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"model.name {name!r}: cannot import {attr!r} from {mod!r} ({err}); use a "
            "registered model (brainxl models) or 'package.module:SPEC' with the module on "
            "PYTHONPATH"
        ) from None
    if not isinstance(obj, ModelSpec):
        raise ValueError(
            f"model.name {name!r} is a {type(obj).__name__}, not a brainxl.models.spec."
            "ModelSpec; declare the family as a ModelSpec (see brainxl/models/spec.py)"
        )
    return obj


def list_models() -> dict[str, ModelSpec]:
    """Return every registered model, loading the built-in modules first."""
    _load_builtin()
    return dict(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """Return the spec of ``name`` (or of ``"package.module:SPEC"``); unknown names fail
    listing the valid ones."""
    if ":" in name:
        return _import_spec(name)
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
