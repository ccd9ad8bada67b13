"""NeuroBOLT's spatial filters initialised from unlabelled EEG: ``model.spatial_init``.

``model.spatial_init=SHARDS`` (one or more EEG-only shard folders, comma-separated) fits
an independent component analysis (scikit-learn's ``FastICA``) to the windows of those
recordings that carry every channel of the run's montage, each channel scaled by its
recording's statistics as ``data.reader.ephys_norm=subject`` scales the fine-tuning
input, and starts NeuroBOLT's ``spatial_filters`` at the unmixing rows instead of at
random: the pretraining of the spatial filters, from EEG without BOLD. No fine-tuning
subject is read. With more filters than channels the rest start at random.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: Most seconds of EEG the ICA reads (spread over the recordings by a seeded draw).
MAX_SECONDS = 3600.0
#: FastICA iterations before it is reported as not converged.
MAX_ITER = 1000


@dataclass
class UnmixingReport:
    """What :func:`fit_unmixing` read and fitted.

    Attributes
    ----------
    n_components, n_channels : int
        Independent components fitted, channels of the montage.
    n_windows, n_recordings : int
        Windows read and the recordings they come from.
    seconds : float
        EEG read (s).
    converged : bool
        FastICA stopped before ``MAX_ITER`` iterations.
    elapsed : float
        Wall time of reading and fitting (s).
    """

    n_components: int
    n_channels: int
    n_windows: int
    n_recordings: int
    seconds: float
    converged: bool
    elapsed: float

    def __str__(self) -> str:
        state = "converged" if self.converged else f"NOT converged in {MAX_ITER} iterations"
        return (
            f"ICA of {self.n_channels} channels -> {self.n_components} filters from "
            f"{self.seconds / 60:.1f} min of EEG ({self.n_windows} windows of "
            f"{self.n_recordings} recordings), {state}, {self.elapsed:.1f} s"
        )


def split_sources(spec: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard folders of ``model.spatial_init`` (a comma-separated string, a path or a list)."""
    if isinstance(spec, Path):
        spec = str(spec)
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    return [s.strip() for s in items if s.strip()]


def fit_unmixing(
    sources: str | Path | Sequence[str | Path],
    ch_names: Sequence[str],
    n_components: int,
    *,
    window_s: int = 8,
    max_seconds: float = MAX_SECONDS,
    seed: int = 0,
) -> tuple[np.ndarray, UnmixingReport]:
    """ICA unmixing of the channels ``ch_names`` fitted on EEG-only shards.

    Parameters
    ----------
    sources : str or sequence of path
        EEG-only shard folders (``brainxl shard --eeg-only``).
    ch_names : sequence of str
        The montage (vocabulary names, as the shard manifests hold them).
    n_components : int
        Components wanted; at most ``len(ch_names)`` are fitted.
    window_s : int
        Window length the recordings are read in (s).
    max_seconds : float
        Most EEG to read; windows are drawn at random (``seed``) beyond that.
    seed : int
        Seeds the draw of windows and FastICA.

    Returns
    -------
    unmixing : ndarray, shape (min(n_components, C), C)
        Rows map the scaled channels to components of unit variance.
    report : UnmixingReport

    Raises
    ------
    ValueError
        No recording of ``sources`` carries every channel of ``ch_names`` (the message
        names the folders and the channels most often missing), or a bad count.
    """
    from sklearn.decomposition import FastICA

    from brainxl.shards.pretrain_stream import PretrainStream

    t0 = time.perf_counter()
    folders = split_sources(sources)
    names = list(ch_names)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if not folders:
        raise ValueError("model.spatial_init: no shard folder given")
    stream = PretrainStream(
        folders,
        window_s=window_s,
        token_budget=1 << 30,  # batches are not formed here
        seed=seed,
        channel_norm="recording",
        bucket_batches=0,
    )
    infos, missing = {}, {}  # window -> its info, for windows with every channel
    for w in range(stream.n_windows):
        info = stream.window_info(w)
        lacking = [c for c in names if c not in info["ch_names"]]
        if lacking:
            for c in lacking:
                missing[c] = missing.get(c, 0) + 1
        else:
            infos[w] = info
    if not infos:
        worst = sorted(missing, key=missing.get, reverse=True)[:5]
        raise ValueError(
            f"model.spatial_init: no recording of {', '.join(folders)} has all "
            f"{len(names)} channels of the run (missing e.g. {worst}); pretrain the "
            "filters on recordings of this montage or a larger one"
        )
    rng = np.random.default_rng(seed)
    n_keep = max(1, int(max_seconds // window_s))
    keep = list(infos)
    if len(keep) > n_keep:
        keep = sorted(rng.choice(keep, size=n_keep, replace=False).tolist())
    parts, recordings = [], set()
    for w in keep:
        info = infos[w]
        rows = [info["ch_names"].index(c) for c in names]
        parts.append(stream.scaled_window(w)[rows])
        recordings.add(info["recording"])
    x = np.concatenate(parts, axis=1).astype(np.float64)
    k = min(int(n_components), len(names))
    ica = FastICA(n_components=k, whiten="unit-variance", random_state=seed, max_iter=MAX_ITER)
    ica.fit(x.T)
    report = UnmixingReport(
        n_components=k,
        n_channels=len(names),
        n_windows=len(keep),
        n_recordings=len(recordings),
        seconds=float(len(keep) * window_s),
        converged=int(ica.n_iter_) < MAX_ITER,
        elapsed=time.perf_counter() - t0,
    )
    return np.asarray(ica.components_, dtype=np.float64), report


def spatial_filters_of(model: nn.Module) -> nn.Module:
    """``model``'s :class:`~brainxl.models.neurobolt.SpatialFilters`.

    Raises
    ------
    ValueError
        The model has none (naming the setting that adds them).
    """
    sf = getattr(model, "spatial_filters", None)
    if sf is None:
        raise ValueError(
            "model.spatial_init initialises NeuroBOLT's spatial filters; set "
            "model.overrides.spatial_filters=K (K > 0) or drop model.spatial_init"
        )
    return sf


def apply_unmixing(model: nn.Module, unmixing: np.ndarray, ch_idx: Sequence[int]) -> int:
    """Start ``model``'s spatial filters at the rows of ``unmixing``.

    Filter ``j < len(unmixing)`` becomes component ``j`` on the montage's channels
    (vocabulary rows ``ch_idx``) and zero on every other row; its output on that montage
    is then the component (unit variance on the scaled input). Later filters keep their
    random start.

    Parameters
    ----------
    model : nn.Module
        A NeuroBOLT built with ``spatial_filters`` > 0.
    unmixing : ndarray, shape (k, C)
    ch_idx : sequence of int
        Vocabulary rows of the montage's C channels, in the order of ``unmixing``'s
        columns.

    Returns
    -------
    int
        Filters initialised.

    Raises
    ------
    ValueError
        The model has no spatial filters, or the shapes disagree.
    """
    sf = spatial_filters_of(model)
    k, c = unmixing.shape
    if c != len(ch_idx):
        raise ValueError(f"unmixing has {c} columns for {len(ch_idx)} channels")
    k = min(k, sf.weight.shape[1])
    rows = torch.as_tensor(np.asarray(ch_idx, dtype=np.int64) + 1)
    w = torch.as_tensor(unmixing[:k].T * (c**0.5 / sf.gain), dtype=sf.weight.dtype)
    with torch.no_grad():
        sf.weight[:, :k] = 0.0
        sf.weight[rows, :k] = w
    return k
