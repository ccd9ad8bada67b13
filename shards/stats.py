"""Normalisation statistics: per-subject sufficient statistics, combined per fold.

The shard writer stores, per subject, ``count``, ``sum`` and ``sumsq`` per ephys channel,
BOLD ROI and parcel (float64, over every stored time point of the full runs). A LOSO fold
then combines the training subjects only, so held-out data never leaks into the
normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from brainxl.shards.ingest.recording import Recording

MODALITIES = ("ephys", "bold", "parcels")
#: Scales of pretraining windows: microvolts as stored, or each recording's channels
#: z-scored (see :class:`shards.pretrain_stream.PretrainStream`).
CHANNEL_NORMS = ("none", "recording")


@dataclass
class NormStats:
    """Mean and standard deviation per row of each modality.

    Attributes
    ----------
    ephys_mean, ephys_std : ndarray, shape (n_channels,), float32
    bold_mean, bold_std : ndarray, shape (n_rois,), float32
    parcels_mean, parcels_std : ndarray, shape (n_parcels,), float32 or None
    subjects : list of str
        The subjects the statistics come from.
    """

    ephys_mean: np.ndarray
    ephys_std: np.ndarray
    bold_mean: np.ndarray
    bold_std: np.ndarray
    parcels_mean: np.ndarray | None = None
    parcels_std: np.ndarray | None = None
    subjects: tuple[str, ...] = ()

    def get(self, modality: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Return ``(mean, std)`` of ``"ephys"``, ``"bold"`` or ``"parcels"`` (None if absent)."""
        mean = getattr(self, f"{modality}_mean")
        return None if mean is None else (mean, getattr(self, f"{modality}_std"))


def _accumulate(acc: dict[str, Any] | None, x: np.ndarray) -> dict[str, Any]:
    x64 = np.asarray(x, dtype=np.float64)
    s, ss = x64.sum(axis=1), np.square(x64).sum(axis=1)
    if acc is None:
        return {"count": int(x64.shape[1]), "sum": s, "sumsq": ss}
    if acc["sum"].shape != s.shape:
        raise ValueError(f"row count changed between runs ({acc['sum'].shape[0]} vs {s.shape[0]})")
    return {
        "count": acc["count"] + int(x64.shape[1]),
        "sum": acc["sum"] + s,
        "sumsq": acc["sumsq"] + ss,
    }


def row_sums(x: np.ndarray) -> dict[str, Any]:
    """Sufficient statistics of one array's rows, JSON-ready.

    Parameters
    ----------
    x : ndarray, shape (rows, time)

    Returns
    -------
    sums : dict
        ``{"count": time points, "sum": [...], "sumsq": [...]}`` (float64, one per row).
    """
    return _as_json(_accumulate(None, x))


def _as_json(acc: dict[str, Any]) -> dict[str, Any]:
    return {"count": acc["count"], "sum": acc["sum"].tolist(), "sumsq": acc["sumsq"].tolist()}


def pooled_mean_std(
    sums: Sequence[Mapping[str, Any]], eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation per row of pooled :func:`row_sums`.

    Parameters
    ----------
    sums : sequence of dict
        ``count``, ``sum`` and ``sumsq`` of each part (same number of rows in each).
    eps : float
        Lower bound of the standard deviation (flat rows are not blown up).

    Returns
    -------
    mean, std : ndarray, shape (rows,), float32
    """
    n = float(sum(h["count"] for h in sums))
    s = np.sum([np.asarray(h["sum"], dtype=np.float64) for h in sums], axis=0)
    ss = np.sum([np.asarray(h["sumsq"], dtype=np.float64) for h in sums], axis=0)
    mean = s / max(n, 1.0)
    var = np.maximum(ss / max(n, 1.0) - mean**2, 0.0)
    return mean.astype(np.float32), np.maximum(np.sqrt(var), eps).astype(np.float32)


def recording_sums(recordings: Iterable[Recording]) -> dict[str, dict[str, Any]]:
    """Sufficient statistics of one subject's recordings, JSON-ready.

    Parameters
    ----------
    recordings : iterable of Recording
        All runs of one subject (same channels, ROIs and parcels in every run).

    Returns
    -------
    sums : dict
        ``{"ephys": {"count": n, "sum": [...], "sumsq": [...]}, "bold": ..., "parcels": ...}``
        (``parcels`` only when present). ``count`` is time points; the lists have one
        float per row.
    """
    acc: dict[str, dict[str, Any] | None] = {m: None for m in MODALITIES}
    for rec in recordings:
        try:
            acc["ephys"] = _accumulate(acc["ephys"], rec.ephys)
            acc["bold"] = _accumulate(acc["bold"], rec.bold)
            if rec.parcels is not None:
                acc["parcels"] = _accumulate(acc["parcels"], rec.parcels)
        except ValueError as err:
            raise ValueError(f"{rec.source_files.get('ephys', rec.key)}: {err}") from None
    return {m: _as_json(a) for m, a in acc.items() if a is not None}


def fold_statistics(
    manifest: Mapping[str, Any] | str | Path, subjects: Iterable[str], eps: float = 1e-6
) -> NormStats:
    """Combine the stored statistics of the given (training) subjects.

    Parameters
    ----------
    manifest : dict or path
        A manifest (``ShardSet.manifest``) or the shard root folder.
    subjects : iterable of str
        Subject labels without ``sub-`` (e.g. all but the held-out LOSO subject).
    eps : float
        Lower bound of the standard deviation (flat rows are not blown up).

    Returns
    -------
    stats : NormStats
        Pooled mean and population standard deviation per row.
    """
    if not isinstance(manifest, Mapping):
        from brainxl.shards.shardset import ShardSet

        manifest = ShardSet(manifest).manifest
    if manifest.get("kind") == "eeg-only":
        raise ValueError(
            f"{manifest.get('source', '')}: EEG-only shards (no BOLD) have no fold statistics "
            "for translation; point data.shards at shards written without --eeg-only"
        )
    subjects = list(subjects)
    if not subjects:
        raise ValueError("fold_statistics needs at least one subject")
    known = manifest["subjects"]
    missing = [s for s in subjects if s not in known]
    if missing:
        raise ValueError(
            f"subjects {missing} are not in the manifest (it has {sorted(known)}); "
            "fix the subject list or re-run `brainxl shard`"
        )
    out: dict[str, np.ndarray | None] = {}
    for m in MODALITIES:
        have = [known[s]["stats"].get(m) for s in subjects]
        if all(h is None for h in have):
            out[f"{m}_mean"] = out[f"{m}_std"] = None
            continue
        if any(h is None for h in have):
            raise ValueError(f"some of subjects {subjects} have no {m} statistics in the manifest")
        lengths = {len(h["sum"]) for h in have}
        if len(lengths) != 1:
            raise ValueError(f"subjects {subjects} disagree on the number of {m} rows: {lengths}")
        out[f"{m}_mean"], out[f"{m}_std"] = pooled_mean_std(have, eps)
    if out["ephys_mean"] is None or out["bold_mean"] is None:
        raise ValueError(f"the manifest lacks ephys or bold statistics for {subjects}")
    return NormStats(**out, subjects=tuple(subjects))  # type: ignore[arg-type]
