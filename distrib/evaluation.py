"""The one evaluation routine: the trainer's LOSO test and ``brainxl evaluate`` both call
:func:`evaluate_subjects`, which builds the model once, loads the weights and scores whole
subjects in one process.

Every window of each subject (every TR with a full window) is predicted once: no rank
split, no resampling and no partial last batch dropped
(:func:`brainxl.distrib.data.subject_source` is a complete stream), so the numbers at the
end of training, from ``brainxl evaluate`` and from ``brainxl predict`` on the same
recording are the same. Evaluation opens
no training stream: the data shapes, normalisation statistics and fold split are recorded
in the run folder at training time (:func:`write_data_info`, ``data_info.json``) and read
back (:func:`read_data_info`); a run folder from before falls back to the shard manifest
and the statistics module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from brainxl.distrib.rundir import RunDir
from brainxl.distrib.tasks import build_model_and_adapter, resolve_spec

from brainxl.files import atomic_write_text
from brainxl.models.spec import BatchIO, DataShapes, forward_inputs

TaskAdapter = BatchIO


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
    on_subject: Callable[[str], None] | None = None,
) -> list[Any]:
    """``brainxl.metrics.SubjectResult`` per subject; with ``out_dir`` also writes
    ``predictions-<subject>.npz`` and ``metrics-<subject>.json`` there. ``ceilings`` maps
    a subject to its noise ceiling (simulated data); ``on_subject(s)`` is called after
    each subject is scored (progress)."""
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
                RunDir.predictions(out_dir, s),
                keys=np.array(keys),
                pred=pred,
                true=true,
                names=np.array(names),
            )
            bm.to_json(res, RunDir.subject_metrics(out_dir, s))
        if on_subject is not None:
            on_subject(s)
    return results


@dataclass
class EvaluationResult:
    """What :func:`evaluate_subjects` returns: the model it built and the scores."""

    model: nn.Module
    adapter: BatchIO
    results: list[Any]  # brainxl.metrics.SubjectResult per subject


def load_model(
    cfg: Any, shapes: DataShapes, weights: dict[str, torch.Tensor]
) -> tuple[nn.Module, BatchIO]:
    """Build the configured model once for ``shapes`` and load ``weights`` (eval mode).

    The one place a trained model is rebuilt: :func:`evaluate_subjects` and
    ``brainxl predict`` (:func:`brainxl.distrib.trained_run.load_trained_run`) call it.

    Parameters
    ----------
    cfg : RunConfig
    shapes : DataShapes
        The shapes the model was trained for (:func:`read_data_info`).
    weights : dict
        A plain fp32 state dict.

    Returns
    -------
    model : nn.Module
    adapter : BatchIO
    """
    torch.manual_seed(cfg.seed)
    model, adapter = build_model_and_adapter(cfg.model, shapes)
    model.load_state_dict(weights)
    model.eval()
    return model, adapter


def evaluate_subjects(
    cfg: Any,
    shapes: DataShapes,
    norm: Any,
    weights: dict[str, torch.Tensor],
    subjects: Sequence[str],
    out_dir: Path | None = None,
    ceilings: dict[str, Any] | None = None,
    on_subject: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Build the configured model once, load ``weights`` and score ``subjects``.

    Parameters
    ----------
    cfg : RunConfig
    shapes : DataShapes
        The shapes the model was trained for (:func:`read_data_info`).
    norm : shards.stats.NormStats
        The training subjects' normalisation.
    weights : dict
        A plain fp32 state dict.
    subjects : sequence of str
    out_dir : path, optional
        Where ``predictions-<s>.npz`` and ``metrics-<s>.json`` go.
    ceilings : dict, optional
        Noise ceiling per subject (simulated data).
    on_subject : callable, optional
        Called with each subject once it is scored (progress).

    Returns
    -------
    EvaluationResult
    """
    model, adapter = load_model(cfg, shapes, weights)
    results = score_subjects(
        cfg, model, adapter, list(subjects), norm, out_dir, ceilings, on_subject
    )
    return EvaluationResult(model, adapter, results)


def diagnostics(cfg: Any, model: nn.Module, adapter: BatchIO, source: Any) -> dict[str, Any]:
    """The spec's diagnostics (learned HRFs, attention...) on ``source``; {} without."""
    spec = resolve_spec(cfg.model)
    if spec.diagnostics is None:
        return {}
    source.set_epoch(0)
    return spec.diagnostics(model, forward_inputs(source, adapter, model))


# --------------------------------------------------------------------------- data_info.json
def _norm_to_json(norm: Any) -> dict[str, Any] | None:
    if norm is None:
        return None
    out: dict[str, Any] = {"subjects": list(norm.subjects)}
    for m in ("ephys", "bold", "parcels"):
        stats = norm.get(m)
        if stats is not None:
            out[m] = {"mean": [float(v) for v in stats[0]], "std": [float(v) for v in stats[1]]}
    return out


def _norm_from_json(d: dict[str, Any] | None) -> Any:
    from brainxl.shards.stats import NormStats

    if d is None:
        return None
    kw: dict[str, Any] = {"subjects": tuple(d.get("subjects", ()))}
    for m in ("ephys", "bold", "parcels"):
        if m in d:
            kw[f"{m}_mean"] = np.asarray(d[m]["mean"], dtype=np.float32)
            kw[f"{m}_std"] = np.asarray(d[m]["std"], dtype=np.float32)
    return NormStats(**kw)


def write_data_info(run: RunDir, shapes: DataShapes, norm: Any, split: Any) -> None:
    """Record what evaluation needs of the training data in ``data_info.json``."""
    info = {
        "shapes": shapes.to_json(),
        "norm": _norm_to_json(norm),
        "split": {"train": list(split.train), "val": list(split.val), "test": list(split.test)},
    }
    atomic_write_text(run.data_info_path, json.dumps(info, indent=1))


def read_data_info(run: RunDir, cfg: Any) -> tuple[DataShapes, Any, Any]:
    """``(shapes, norm, split)`` of a run, without opening a training stream.

    From ``data_info.json`` when the run recorded it; else (older run folders) from the
    shard manifest: the fold split of the config, the training subjects' statistics
    (:func:`brainxl.shards.stats.fold_statistics`) and their channel lists.
    """
    from brainxl.distrib.data import FoldSplit

    path = run.data_info_path
    if path.is_file():
        d = json.loads(path.read_text())
        sp = d["split"]
        split = FoldSplit(tuple(sp["train"]), tuple(sp["val"]), tuple(sp["test"]))
        return DataShapes.from_json(d["shapes"]), _norm_from_json(d["norm"]), split
    from brainxl.distrib.data import config_split, open_shards

    dc = cfg.data
    shards = open_shards(cfg)
    split = config_split(cfg, shards)
    frag = shards.fragment(split.train[0])
    r = dc.reader
    rows = frag["parcel_names"] if r.modality == "parcels" else frag["ch_names"]
    shapes = DataShapes(
        ch_names=tuple(rows),
        roi_names=tuple(frag["roi_names"]),
        sfreq=float(shards.sfreq),
        window_s=r.window_s,
        n_frames=int(r.n_targets),
        tr=shards.tr,
        modality=r.modality,
    )
    return shapes, shards.fold_statistics(split.train), split
