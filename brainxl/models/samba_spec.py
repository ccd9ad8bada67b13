"""The SAMBA family's spec hooks: data shapes, batches, FC graphs, own loss, diagnostics.

:mod:`brainxl.models.samba` registers its two directions with these hooks, so the
training loop and the evaluation name no SAMBA detail:

- :func:`data_args`: ``n_eeg`` (the electrophysiology rows: sensors or parcels),
  ``n_fmri``, ``n_frames``, ``sfreq``, ``tr`` from :class:`~brainxl.models.spec.DataShapes`;
- :func:`batch_io`: sequences of ``n_frames`` BOLD frames per window, after checking the
  window is ``n_frames x TR`` long;
- :func:`prepare_fold`: functional-connectivity graphs (cosine similarity, top-``graph_k``
  per node) over the input and output nodes from the fold's TRAINING subjects;
- :func:`own_loss`: the model's ``loss`` fed with ``forward(..., return_aux=True)``;
- :func:`diagnostics`: learned HRFs and the wavelet-scale attention for the report.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from brainxl.models.spec import BatchIO, DataShapes, FoldContext

#: Electrophysiology rate (Hz) the functional-connectivity time series are subsampled to.
GRAPH_EPHYS_HZ = 20.0
#: Recording time read per subject for the functional-connectivity graphs (seconds).
GRAPH_MAX_S = 600.0
#: Time step (s) of the learned HRF kernels given to the report.
HRF_DT = 0.1


def data_args(shapes: DataShapes) -> dict[str, Any]:
    """Builder arguments of both directions from the data's shapes."""
    kw: dict[str, Any] = {
        "n_eeg": shapes.n_chans,
        "n_fmri": shapes.n_rois,
        "n_frames": shapes.n_frames,
        "sfreq": shapes.sfreq,
    }
    if shapes.tr:
        kw["tr"] = shapes.tr
    return kw


def check_window(model: nn.Module, shapes: DataShapes) -> None:
    """A SAMBA window must hold ``n_frames`` whole TRs and predict (or read) all of them."""
    if not shapes.tr:
        return
    frames = int(getattr(model, "n_frames", shapes.n_frames))
    need = frames * float(shapes.tr)
    if abs(need - float(shapes.window_s)) > 1e-6 or frames != shapes.n_frames:
        raise ValueError(
            f"SAMBA predicts {frames} TRs per window, so it needs data.reader.window_s="
            f"{need:g} (n_frames x TR {shapes.tr:g} s) and data.reader.n_targets={frames}; "
            f"the config has window_s={shapes.window_s}, n_targets={shapes.n_frames}"
        )


def batch_io(direction: str) -> Callable[[nn.Module, DataShapes], BatchIO]:
    """The ``batch`` hook of one direction: ``x`` (electrophysiology) or ``y`` (BOLD) in."""
    name = "x" if direction == "eeg2fmri" else "y"

    def make(model: nn.Module, shapes: DataShapes) -> BatchIO:
        check_window(model, shapes)
        return BatchIO(
            direction,
            shapes.source_key,
            name,
            None,
            sequence_target=True,
            target_transform=getattr(model, "transform_target", None),
        )

    return make


def graph_modalities(task: str, reader_modality: str) -> tuple[str, str]:
    """Shard members holding the model's input and output nodes: ``(source, target)``.

    The electrophysiology side is ``parcels`` when the reader reads parcels, else
    ``ephys`` (sensors); the fMRI side is ``bold``.
    """
    ephys = "parcels" if reader_modality == "parcels" else "ephys"
    return (ephys, "bold") if task == "eeg2fmri" else ("bold", ephys)


def training_fc_graphs(
    model: nn.Module, fold: FoldContext, task: str
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Functional-connectivity graphs of a SAMBA model from the fold's training subjects.

    Parameters
    ----------
    model : nn.Module
        Has ``n_in_nodes``, ``n_out_nodes`` and ``graph_k`` (neighbours per node, set with
        ``model.overrides.graph_k``; capped at ``n_nodes - 1`` per side).
    fold : FoldContext
        The training subjects' recordings, normalised with the fold's statistics (read
        at :data:`GRAPH_EPHYS_HZ` for at most :data:`GRAPH_MAX_S` per subject).
    task : {"eeg2fmri", "fmri2eeg"}

    Returns
    -------
    src, tgt : LongTensor, shape (2, E_src), (2, E_tgt)
        :func:`brainxl.models.graph.fc_graph` of the input and output node time series.
    info : dict
        ``graph_k``, ``graph_src_k``/``graph_tgt_k`` (after capping), ``graph_src_edges``,
        ``graph_tgt_edges``, ``graph_src``/``graph_tgt`` (modalities), ``graph_subjects``.
    """
    from brainxl.models.graph import fc_graph

    src_mod, tgt_mod = graph_modalities(task, fold.shapes.modality)
    series = fold.timeseries((src_mod, tgt_mod), ephys_hz=GRAPH_EPHYS_HZ, max_seconds=GRAPH_MAX_S)
    k = int(model.graph_k)
    info: dict[str, Any] = {"graph_k": k, "graph_src": src_mod, "graph_tgt": tgt_mod}
    graphs = []
    for side, mod, n in (("src", src_mod, model.n_in_nodes), ("tgt", tgt_mod, model.n_out_nodes)):
        arrays = series[mod]
        if not arrays:
            raise ValueError(f"{fold.where}: no {mod} data for subjects {list(fold.subjects)}")
        if arrays[0].shape[0] != n:
            raise ValueError(
                f"{fold.where}: {mod} has {arrays[0].shape[0]} rows but the model has {n} "
                f"{side} nodes; the model must be built for these shards"
            )
        k_side = min(k, n - 1)
        graphs.append(fc_graph(arrays, k_side))
        info[f"graph_{side}_k"] = k_side
        info[f"graph_{side}_edges"] = int(graphs[-1].shape[1])
    info["graph_subjects"] = list(fold.subjects)
    return graphs[0], graphs[1], info


def prepare_fold(model: nn.Module, fold: FoldContext) -> dict[str, Any]:
    """Install the training subjects' FC graphs (built once on rank 0, shared by all)."""
    task = getattr(model, "task", "eeg2fmri")
    src, tgt, info = fold.on_main(functools.partial(training_fc_graphs, model, fold, task))
    model.set_graphs(src, tgt)
    return info


def own_loss(
    model: nn.Module, forward: Callable[..., Any], inputs: dict[str, Any], target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The model's ``loss`` (cosine, plus the wavelet skip loss of fMRI -> EEG) on the
    extras of ``forward(..., return_aux=True)``."""
    pred, aux = forward(**inputs, return_aux=True)
    loss, parts = model.loss(pred.float(), target, **aux)
    return pred, loss, parts


def learned_hrfs(model: nn.Module, dt: float = HRF_DT) -> np.ndarray | None:
    """The model's learned HRF kernels on a ``dt`` grid, unit peak (None: it has none).

    Returns
    -------
    ndarray, shape (n_parcels, n_lags) or None
        SAMBA's per-parcel double-gamma kernels (one row per parcel the HRF belongs to:
        the fMRI parcels for eeg2fmri, the electrophysiology rows for fmri2eeg).
    """
    from brainxl.models.hrf import DoubleGammaHRF

    hrf = getattr(model, "hrf", None)
    if not isinstance(hrf, DoubleGammaHRF):
        return None
    return hrf.curves(dt).float().cpu().numpy()


def wavelet_attention(
    model: nn.Module, inputs: Iterable[dict[str, Any]], max_batches: int = 8
) -> np.ndarray | None:
    """Mean wavelet-scale attention per input parcel over ``inputs`` (None: no attention).

    Returns
    -------
    ndarray, shape (n_parcels, n_scales) or None
        The ``scale_weights`` of a forward with ``return_aux=True``, averaged over
        windows and frames.
    """
    was_training = model.training
    model.eval()
    total, n = None, 0
    with torch.no_grad():
        for i, kw in enumerate(inputs):
            if i >= max_batches:
                break
            _, aux = model(**kw, return_aux=True)
            w = aux.get("scale_weights")
            if w is None:
                break
            w = w.float().cpu()
            w = w.reshape(w.shape[0], w.shape[1], -1, w.shape[-1])  # (B, N, frames, J)
            total = w.sum(dim=(0, 2)) if total is None else total + w.sum(dim=(0, 2))
            n += w.shape[0] * w.shape[2]
    model.train(was_training)
    return None if total is None else (total / n).numpy()


def diagnostics(model: nn.Module, inputs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Learned HRFs (unit peak, :data:`HRF_DT` grid) and, for electrophysiology -> fMRI,
    the wavelet-scale attention per input parcel."""
    out: dict[str, Any] = {"learned_hrfs": learned_hrfs(model), "hrf_dt": HRF_DT}
    if getattr(model, "task", None) == "eeg2fmri":
        out["attention"] = wavelet_attention(model, inputs)
    return out
