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

from distrib.tasks import TaskAdapter


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
    from brainxl import metrics as bm
    from distrib.data import subject_source

    results = []
    for s in subjects:
        src = subject_source(cfg, [s], norm)
        keys, pred, true = predict(model, adapter, src)
        names = list(src.roi_names if adapter.task == "eeg2fmri" else src.ch_names)
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
