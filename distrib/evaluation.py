"""Single-process scoring of a trained model on whole subjects (test time, ``brainxl evaluate``).

Every window of each subject is predicted once (no rank split, no resampling), so the
numbers at the end of training and from ``brainxl evaluate`` are the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from brainxl.distrib.tasks import TaskAdapter


def series(x: torch.Tensor | np.ndarray) -> Any:
    """(B, R) -> (B, R); (B, M, F) -> (B*F, M): rows are time points, columns are series."""
    if x.ndim == 2:
        return x
    if isinstance(x, np.ndarray):
        return x.transpose(0, 2, 1).reshape(-1, x.shape[1])
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def batch_keys(batch: dict[str, Any], n: int) -> list[str]:
    """One identifier per window (``key`` + ``tr_index``) for de-duplication."""
    if "key" in batch:
        keys = [str(k) for k in batch["key"]]
        if "tr_index" in batch:
            keys = [f"{k}_tr{int(t)}" for k, t in zip(keys, batch["tr_index"])]
        return keys
    return [f"w{i}" for i in range(n)]


@torch.no_grad()
def predict(
    model: nn.Module, adapter: TaskAdapter, source: Any
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Predict every window of ``source`` once.

    Returns
    -------
    keys : list of str
        Window identifiers, sorted.
    pred, true : ndarray, shape (n_windows, R) or (n_windows, M, F)
    """
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    source.set_epoch(0)
    for batch in source:
        pred = model(**adapter.inputs(batch, dtype, device)).float().cpu().numpy()
        true = adapter.target(batch, "cpu").numpy()
        for k, p, y in zip(batch_keys(batch, len(pred)), pred, true):
            seen.setdefault(k, (p, y))
    model.train(was_training)
    if not seen:
        raise ValueError("the evaluation stream yielded no window; check the subject's shards")
    keys = sorted(seen)
    return keys, np.stack([seen[k][0] for k in keys]), np.stack([seen[k][1] for k in keys])


def score_subjects(
    cfg: Any,
    model: nn.Module,
    adapter: TaskAdapter,
    subjects: list[str],
    norm: Any,
    out_dir: Path | None = None,
    ceilings: dict[str, Any] | None = None,
) -> list[Any]:
    """``brainxl.metrics.SubjectResult`` per subject; with ``out_dir`` also writes
    ``predictions-<subject>.npz`` and ``metrics-<subject>.json`` there. ``ceilings`` maps
    a subject to its noise ceiling (simulated data)."""
    from brainxl.distrib.data import subject_source

    from brainxl import metrics as bm

    results = []
    for s in subjects:
        src = subject_source(cfg, [s], norm)
        keys, pred, true = predict(model, adapter, src)
        if adapter.task == "eeg2fmri":
            names = list(src.roi_names)
        else:  # the electrophysiology rows the model predicts: parcels or sensors
            names = list(src.parcel_names if adapter.source_key == "parcels" else src.ch_names)
            if callable(getattr(model, "output_names", None)):
                names = model.output_names(names)
        ceiling = (ceilings or {}).get(s) if adapter.task == "eeg2fmri" else None
        res = bm.evaluate_subject(s, series(pred), series(true), names, noise_ceiling=ceiling)
        results.append(res)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            np.savez(
                out_dir / f"predictions-{s}.npz",
                keys=np.array(keys),
                pred=pred,
                true=true,
                names=np.array(names),
            )
            bm.to_json(res, out_dir / f"metrics-{s}.json")
    return results


def learned_hrfs(model: nn.Module, dt: float = 0.1) -> np.ndarray | None:
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
    model: nn.Module, adapter: TaskAdapter, source: Any, max_batches: int = 8
) -> np.ndarray | None:
    """Mean wavelet-scale attention per input parcel over ``source`` (None: no attention).

    Returns
    -------
    ndarray, shape (n_parcels, n_scales) or None
        The ``scale_weights`` of a SAMBA forward with ``return_aux=True``, averaged over
        windows and frames.
    """
    import inspect

    if "return_aux" not in inspect.signature(model.forward).parameters:
        return None
    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    total, n = None, 0
    source.set_epoch(0)
    with torch.no_grad():
        for i, batch in enumerate(source):
            if i >= max_batches:
                break
            _, aux = model(**adapter.inputs(batch, dtype, device), return_aux=True)
            w = aux.get("scale_weights")
            if w is None:
                break
            w = w.float().cpu()
            w = w.reshape(w.shape[0], w.shape[1], -1, w.shape[-1])  # (B, N, frames, J)
            total = w.sum(dim=(0, 2)) if total is None else total + w.sum(dim=(0, 2))
            n += w.shape[0] * w.shape[2]
    model.train(was_training)
    return None if total is None else (total / n).numpy()
