"""Model construction from the config and the data, and batch -> (inputs, target) adapters.

The registry's task decides the direction: ``eeg2fmri`` models read ``ephys`` (or
``parcels``) and predict ``bold``; ``fmri2eeg`` models read ``bold`` and predict the
electrophysiology. ``model.name`` may also be ``"package.module:factory"`` for a user
model (``factory(flavor=..., **overrides)``; its ``task`` attribute defaults to eeg2fmri).

SAMBA models get functional-connectivity graphs (cosine similarity, top-``graph_k`` per
node) over their input and output nodes from the fold's training subjects
(:func:`install_fc_graphs`, called before the DeepSpeed engine is created).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn


@dataclass
class TaskAdapter:
    """Turns a reader batch into model keyword inputs and the target tensor.

    Attributes
    ----------
    task : str
        ``"eeg2fmri"`` or ``"fmri2eeg"``.
    source_key : str
        Batch key of the electrophysiology (``"ephys"`` or ``"parcels"``).
    input_name : str
        Keyword of the model's forward for its input (``x`` or ``y``).
    ch_idx : Tensor or None, shape (C,)
        Vocabulary rows of the channels, passed as ``ch_idx`` when the model takes it.
    sequence_target : bool
        BOLD targets are ``(B, R, n_targets)`` (SAMBA) instead of ``(B, R)``.
    """

    task: str
    source_key: str = "ephys"
    input_name: str = "x"
    ch_idx: torch.Tensor | None = None
    sequence_target: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: the model's ``transform_target`` (e.g. SAMBA fmri2eeg band envelopes), or None
    target_transform: Any = None

    def _bold(self, batch: dict[str, Any]) -> torch.Tensor:
        bold = batch["bold"].float()
        if self.sequence_target and bold.ndim == 2:
            bold = bold.unsqueeze(-1)
        if not self.sequence_target and bold.ndim == 3:
            if bold.shape[-1] != 1:
                raise ValueError(
                    f"model predicts one BOLD frame but data.reader.n_targets={bold.shape[-1]}; "
                    "set data.reader.n_targets=1"
                )
            bold = bold[..., 0]
        return bold

    def inputs(self, batch: dict[str, Any], dtype: torch.dtype, device: Any) -> dict[str, Any]:
        """Keyword arguments of ``model.forward`` for ``batch``."""
        if self.source_key not in batch:
            raise ValueError(
                f"batch has no {self.source_key!r} (keys: {sorted(batch)}); set "
                "data.reader.modality to a modality the shards hold"
            )
        x = self._bold(batch) if self.task == "fmri2eeg" else batch[self.source_key].float()
        kw: dict[str, Any] = {self.input_name: x.to(device=device, dtype=dtype)}
        if self.ch_idx is not None:
            kw["ch_idx"] = self.ch_idx.to(device)
        return kw

    def target(self, batch: dict[str, Any], device: Any) -> torch.Tensor:
        """The tensor the output is compared with (float32)."""
        y = batch[self.source_key].float() if self.task == "fmri2eeg" else self._bold(batch)
        y = y.to(device)
        return y if self.target_transform is None else self.target_transform(y)


#: Data-derived keyword arguments each registered model's builder takes (a spec may also
#: list them in ``spec.extra["data_args"]``).
DATA_ARGS: dict[str, tuple[str, ...]] = {
    "neurobolt": ("n_rois", "n_chans", "window_s"),
    "samba-eeg2fmri": ("n_eeg", "n_fmri", "n_frames", "sfreq", "tr"),
    "samba-fmri2eeg": ("n_eeg", "n_fmri", "n_frames", "sfreq", "tr"),
}


def _import_factory(name: str) -> Any:
    mod, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"model.name {name!r}: cannot import {attr!r} from {mod!r} ({err}); use a registered "
            "model (brainxl models) or 'package.module:factory'"
        ) from None


def data_kwargs(builder: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The data-derived arguments (``n_chans``, ``n_times``, ``n_outputs``...) ``builder``
    accepts, taken from ``info``; a builder with ``**kwargs`` gets none of them."""
    try:
        params = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in info.items() if k in params}


def build_model_and_adapter(model_cfg: Any, info: dict[str, Any]) -> tuple[nn.Module, TaskAdapter]:
    """Build the configured model for the data described by ``info``.

    Parameters
    ----------
    model_cfg : ModelConfig
        ``name``, ``flavor``, ``overrides``.
    info : dict
        ``ch_names``, ``roi_names``, ``sfreq``, ``n_chans``, ``n_times``, ``n_rois``,
        ``n_targets``, ``modality`` of the training stream.

    Returns
    -------
    model : nn.Module
    adapter : TaskAdapter
    """
    overrides = dict(model_cfg.overrides)
    if ":" in model_cfg.name:
        factory = _import_factory(model_cfg.name)
        kw = {**data_kwargs(factory, info), **overrides}
        model = factory(flavor=model_cfg.flavor, **kw)
        task = getattr(factory, "task", "eeg2fmri")
    else:
        from brainxl.models.registry import build_model, get_model_spec

        spec = get_model_spec(model_cfg.name)
        task = spec.task
        if task == "pretrain":
            raise ValueError(
                f"model {model_cfg.name!r} is a pretraining model; `brainxl train` trains "
                "translation models (neurobolt, samba-eeg2fmri, samba-fmri2eeg)"
            )
        names = spec.extra.get("data_args", DATA_ARGS.get(model_cfg.name, ()))
        kw = {k: info[k] for k in names if k in info}
        model = build_model(model_cfg.name, model_cfg.flavor, **{**kw, **overrides})
    fwd = inspect.signature(model.forward).parameters
    source_key = "parcels" if info.get("modality") == "parcels" else "ephys"
    ch_idx = None
    if "ch_idx" in fwd:
        from brainxl.channels import channel_indices

        ch_idx = torch.as_tensor(
            channel_indices(info["ch_names"], source="the shard manifest"), dtype=torch.long
        )
    input_name = next(iter(fwd))
    adapter = TaskAdapter(
        task=task,
        source_key=source_key,
        input_name=input_name,
        ch_idx=ch_idx,
        sequence_target=bool(getattr(model, "sequence_target", "samba" in model_cfg.name)),
        target_transform=getattr(model, "transform_target", None),
    )
    if "samba" in model_cfg.name and info.get("tr"):
        _check_samba_window(model, info)
    return model, adapter


def _check_samba_window(model: nn.Module, info: dict[str, Any]) -> None:
    frames = getattr(model, "n_frames", info["n_targets"])
    need = frames * float(info["tr"])
    if abs(need - float(info["window_s"])) > 1e-6 or frames != info["n_targets"]:
        raise ValueError(
            f"SAMBA predicts {frames} TRs per window, so it needs data.reader.window_s="
            f"{need:g} (n_frames x TR {info['tr']:g} s) and data.reader.n_targets={frames}; "
            f"the config has window_s={info['window_s']}, n_targets={info['n_targets']}"
        )


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


def graph_modalities(task: str, reader_modality: str) -> tuple[str, str]:
    """Shard members holding the model's input and output nodes: ``(source, target)``.

    The electrophysiology side is ``parcels`` when the reader reads parcels, else
    ``ephys`` (sensors); the fMRI side is ``bold``.
    """
    ephys = "parcels" if reader_modality == "parcels" else "ephys"
    return (ephys, "bold") if task == "eeg2fmri" else ("bold", ephys)


def training_fc_graphs(
    model: nn.Module,
    shards: Any,
    subjects: Any,
    task: str,
    reader_modality: str,
    norm: Any = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Functional-connectivity graphs of a SAMBA model from the given (training) subjects.

    Parameters
    ----------
    model : nn.Module
        Has ``n_in_nodes``, ``n_out_nodes`` and ``graph_k`` (neighbours per node, set with
        ``model.overrides.graph_k``; capped at ``n_nodes - 1`` per side).
    shards : path
        Shard folder.
    subjects : sequence of str
        The fold's TRAINING subjects only (never validation or test subjects).
    task : {"eeg2fmri", "fmri2eeg"}
    reader_modality : {"sensors", "parcels"}
    norm : shards.stats.NormStats, optional
        The fold's normalisation (training subjects), applied before the similarity.

    Returns
    -------
    src, tgt : LongTensor, shape (2, E_src), (2, E_tgt)
        :func:`brainxl.models.graph.fc_graph` of the input and output node time series
        (see :func:`distrib.data.recording_timeseries` for how they are read).
    info : dict
        ``graph_k``, ``graph_src_k``/``graph_tgt_k`` (after capping), ``graph_src_edges``,
        ``graph_tgt_edges``, ``graph_src``/``graph_tgt`` (modalities), ``graph_subjects``.
    """
    from brainxl.distrib.data import recording_timeseries

    from brainxl.models.graph import fc_graph

    src_mod, tgt_mod = graph_modalities(task, reader_modality)
    series = recording_timeseries(shards, list(subjects), (src_mod, tgt_mod), norm=norm)
    k = int(model.graph_k)
    info: dict[str, Any] = {"graph_k": k, "graph_src": src_mod, "graph_tgt": tgt_mod}
    graphs = []
    for side, mod, n in (("src", src_mod, model.n_in_nodes), ("tgt", tgt_mod, model.n_out_nodes)):
        arrays = series[mod]
        if not arrays:
            raise ValueError(f"{shards}: no {mod} data for subjects {list(subjects)}")
        if arrays[0].shape[0] != n:
            raise ValueError(
                f"{shards}: {mod} has {arrays[0].shape[0]} rows but the model has {n} "
                f"{side} nodes; the model must be built for these shards"
            )
        k_side = min(k, n - 1)
        graphs.append(fc_graph(arrays, k_side))
        info[f"graph_{side}_k"] = k_side
        info[f"graph_{side}_edges"] = int(graphs[-1].shape[1])
    info["graph_subjects"] = list(subjects)
    return graphs[0], graphs[1], info


def install_fc_graphs(model: nn.Module, cfg: Any, fold: Any) -> dict[str, Any] | None:
    """Give a SAMBA model (one with ``set_graphs``) its training-subject FC graphs.

    Rank 0 reads the fold's training subjects (``fold.split.train``) from the shards and
    builds the graphs; with several ranks they are broadcast, so every rank holds the same
    graph. Call before the DeepSpeed engine wraps the model. Returns the ``info`` of
    :func:`training_fc_graphs` (None, with the model untouched, for models without
    ``set_graphs`` or folds not read from shards).
    """
    import torch.distributed as dist

    if not callable(getattr(model, "set_graphs", None)) or "manifest" not in fold.info:
        return None
    multi = dist.is_initialized() and dist.get_world_size() > 1
    result: list[Any] = [None]
    if not multi or dist.get_rank() == 0:
        result[0] = training_fc_graphs(
            model,
            fold.info["manifest"],
            fold.split.train,
            getattr(model, "task", "eeg2fmri"),
            cfg.data.reader.modality,
            fold.norm,
        )
    if multi:
        dist.broadcast_object_list(result, src=0)
    src, tgt, info = result[0]
    model.set_graphs(src, tgt)
    return info
