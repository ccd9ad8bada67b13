"""Model construction from the config and the data, through the model's spec.

``model.name`` names a registered family (``brainxl models``) or a user's
``"package.module:SPEC"`` (a :class:`brainxl.models.spec.ModelSpec`). The spec says how the
data's shapes (:func:`data_shapes`, one vocabulary) become builder arguments, how a batch
becomes inputs and target, and which hooks run: :func:`prepare_fold` calls the spec's
fold preparation (e.g. graphs from the training subjects) before the DeepSpeed engine is
created. Nothing here knows a model by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

from brainxl.models.spec import BatchIO, DataShapes, FoldContext, ModelSpec

#: The former name of the batch adapter.
TaskAdapter = BatchIO


def resolve_spec(model_cfg: Any) -> ModelSpec:
    """The spec of ``model_cfg.name`` (registered, or ``package.module:SPEC``)."""
    from brainxl.models.registry import get_model_spec

    return get_model_spec(model_cfg.name)


def data_shapes(source: Any, cfg: Any) -> DataShapes:
    """The :class:`DataShapes` of a training stream under ``cfg`` (a ``RunConfig``)."""
    r = cfg.data.reader
    rows = list(getattr(source, "parcel_names", []) or []) if r.modality == "parcels" else []
    return DataShapes(
        ch_names=tuple(rows or source.ch_names),
        roi_names=tuple(source.roi_names),
        sfreq=float(source.sfreq),
        window_s=r.window_s,
        n_frames=int(r.n_targets),
        tr=getattr(source, "tr", None),
        modality=r.modality,
    )


def build_model_and_adapter(model_cfg: Any, shapes: DataShapes) -> tuple[nn.Module, BatchIO]:
    """Build the configured model for data of ``shapes``: the one place models are built.

    Parameters
    ----------
    model_cfg : ModelConfig
        ``name``, ``flavor``, ``overrides``.
    shapes : DataShapes

    Returns
    -------
    model : nn.Module
    adapter : BatchIO
    """
    spec = resolve_spec(model_cfg)
    return spec.build_for_data(model_cfg.flavor, shapes, dict(model_cfg.overrides))


def fold_context(cfg: Any, fold: Any, shapes: DataShapes) -> FoldContext:
    """What a spec's fold hook may read: the training subjects' recordings (normalised
    with the fold's statistics), read on rank 0 and shared with every rank."""
    import functools

    from brainxl.distrib.data import recording_timeseries

    shards = fold.shards if fold.shards is not None else fold.info["manifest"]
    timeseries = functools.partial(
        recording_timeseries, shards, list(fold.split.train), norm=fold.norm
    )
    return FoldContext(
        subjects=tuple(fold.split.train),
        shapes=shapes,
        timeseries=timeseries,
        on_main=on_main,
        where=str(fold.info["manifest"]),
    )


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and broadcast its result to every rank (collective)."""
    import torch.distributed as dist

    multi = dist.is_initialized() and dist.get_world_size() > 1
    result: list[Any] = [None]
    if not multi or dist.get_rank() == 0:
        result[0] = fn()
    if multi:
        dist.broadcast_object_list(result, src=0)
    return result[0]


def prepare_fold(
    spec: ModelSpec, model: nn.Module, cfg: Any, fold: Any, shapes: DataShapes
) -> dict[str, Any] | None:
    """Run the spec's fold preparation on the fold's training subjects (every rank).

    Call before the DeepSpeed engine wraps the model. Returns the hook's info (None, with
    the model untouched, for specs without the hook or folds not read from shards).
    """
    if spec.prepare_fold is None or "manifest" not in fold.info:
        return None
    return spec.prepare_fold(model, fold_context(cfg, fold, shapes))


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute the activations of every block of every ``nn.ModuleList`` in backward.

    Each block's ``forward`` is wrapped with ``torch.utils.checkpoint`` (non-reentrant), so
    parameter names are unchanged. Returns the number of wrapped blocks (-1 when the model
    has its own ``set_grad_checkpointing``, which is used instead).

    Raises
    ------
    ValueError
        If the model has no ``nn.ModuleList`` of blocks.
    """
    import functools

    from torch.utils.checkpoint import checkpoint

    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return -1
    n = 0
    for mod in model.modules():
        if not isinstance(mod, nn.ModuleList):
            continue
        for block in mod:
            orig = block.forward

            def fwd(*args: Any, _orig: Any = orig, **kwargs: Any) -> Any:
                return checkpoint(_orig, *args, use_reentrant=False, **kwargs)

            block.forward = functools.update_wrapper(fwd, orig)  # type: ignore[method-assign]
            n += 1
    if n == 0:
        raise ValueError(
            f"{type(model).__name__} has no nn.ModuleList of blocks to checkpoint; set "
            "train.activation_checkpointing=false"
        )
    return n
