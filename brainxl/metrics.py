"""Evaluation metrics: per-ROI correlations, noise ceilings and summaries across subjects.

Every metric compares a predicted and a true BOLD matrix of shape ``(n_times, n_rois)``
column by column (one value per ROI, computed over time). Summaries follow the
leave-one-subject-out (LOSO) protocol: each subject contributes its mean over ROIs, the
mean across subjects gets a 95% Student-t interval, and per-ROI values are averaged
across subjects with a count of the subjects where they were defined.

A constant column (zero variance, e.g. a dead ROI or a model predicting a constant) has no
correlation: it gives ``nan``, and summaries use ``nanmean`` and report how many values
were defined. Everything here is numpy/scipy, except the correlation itself
(:func:`brainxl.objectives.correlation`, shared with the training losses).
"""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainxl.files import atomic_write_text

SIM_DERIVATIVES = "brainxl-sim"
"""Name of the simulator's derivatives pipeline folder (``derivatives/brainxl-sim``)."""

SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- per-ROI metrics
def _check_pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.ndim == 1:
        pred = pred[:, None]
    if true.ndim == 1:
        true = true[:, None]
    if pred.ndim != 2 or pred.shape != true.shape:
        raise ValueError(
            f"pred has shape {pred.shape} and true has shape {true.shape}; both must be "
            "(n_times, n_rois) with the same shape (transpose a (n_rois, n_times) array)"
        )
    if pred.shape[0] < 2:
        raise ValueError(f"need at least 2 time points per ROI to correlate, got {pred.shape[0]}")
    return pred, true


def _corr_columns(a: np.ndarray, b: np.ndarray, centre: bool) -> np.ndarray:
    """Column-wise (centred or uncentred) correlation; nan where a column has no spread.

    The value is :func:`brainxl.objectives.correlation` (the project's one correlation),
    in float64; this adds the metric's rules for undefined columns and the clip to [-1, 1].
    """
    import torch

    from brainxl.objectives import correlation

    # Exactly constant (centred) or all-zero (uncentred) columns; testing the computed
    # norm instead would miss them, because the column mean carries rounding error.
    if centre:
        bad = (np.ptp(a, axis=0) == 0) | (np.ptp(b, axis=0) == 0)
    else:
        bad = ~a.any(axis=0) | ~b.any(axis=0)
    bad |= ~np.isfinite(a).all(axis=0) | ~np.isfinite(b).all(axis=0)
    ta = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))
    tb = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64))
    r = correlation(ta, tb, dim=0, centered=centre, eps=0.0).numpy()
    r = np.clip(r, -1.0, 1.0)
    r[bad] = np.nan
    return r


def pearson_per_roi(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation over time, one per ROI.

    Parameters
    ----------
    pred, true : ndarray, shape (n_times, n_rois)
        Predicted and observed BOLD (a 1-D array is one ROI).

    Returns
    -------
    r : ndarray, shape (n_rois,)
        ``nan`` where either column is constant (or contains NaN).
    """
    pred, true = _check_pair(pred, true)
    return _corr_columns(pred, true, centre=True)


def _rank_columns(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=0, method="average")


def spearman_per_roi(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Spearman rank correlation over time, one per ROI (Pearson r of average ranks).

    Parameters
    ----------
    pred, true : ndarray, shape (n_times, n_rois)

    Returns
    -------
    rho : ndarray, shape (n_rois,)
        ``nan`` where either column is constant (or contains NaN).
    """
    pred, true = _check_pair(pred, true)
    nan_cols = np.isnan(pred).any(axis=0) | np.isnan(true).any(axis=0)
    rho = _corr_columns(_rank_columns(pred), _rank_columns(true), centre=True)
    rho[nan_cols] = np.nan
    return rho


def cosine_per_roi(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Uncentred cosine similarity over time, one per ROI.

    Unlike Pearson r it is sensitive to offsets: a prediction with the right shape but the
    wrong baseline scores lower.

    Parameters
    ----------
    pred, true : ndarray, shape (n_times, n_rois)

    Returns
    -------
    cos : ndarray, shape (n_rois,)
        ``nan`` where either column is all zeros (or contains NaN).
    """
    pred, true = _check_pair(pred, true)
    return _corr_columns(pred, true, centre=False)


def noise_ceiling(observed: np.ndarray, noisefree: np.ndarray) -> np.ndarray:
    """Noise ceiling per ROI: Pearson r between the observed and the noise-free BOLD.

    No model can be expected to correlate with the observed BOLD better than the noise-free
    signal does. Pass the same time points (the TRs with a full electrophysiology window,
    see :func:`full_window_mask`) as the predictions are scored on.

    Parameters
    ----------
    observed, noisefree : ndarray, shape (n_times, n_rois)

    Returns
    -------
    ceiling : ndarray, shape (n_rois,)
    """
    return pearson_per_roi(observed, noisefree)


def full_window_mask(
    n_trs: int, tr: float, window_s: float, lead_in: float = 0.0, lag_s: float = 0.0
) -> np.ndarray:
    """Which TRs have a complete electrophysiology window before them.

    The window of TR ``k`` spans ``[k*tr - lag_s - window_s, k*tr - lag_s)`` seconds and
    the recording starts at ``-lead_in`` seconds (as in :class:`shards.ingest.recording.Recording`).

    Returns
    -------
    mask : ndarray of bool, shape (n_trs,)
    """
    if tr <= 0 or window_s <= 0:
        raise ValueError(f"tr ({tr}) and window_s ({window_s}) must be positive")
    starts = np.arange(n_trs) * tr - lag_s - window_s
    return starts >= -lead_in - 1e-9


def _nanmean(x: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def fraction_of_ceiling(r: np.ndarray, ceiling: np.ndarray) -> np.ndarray:
    """Per-ROI ``r / ceiling``; ``nan`` where the ceiling is not positive or undefined.

    Parameters
    ----------
    r, ceiling : ndarray, shape (n_rois,)

    Returns
    -------
    fraction : ndarray, shape (n_rois,)
    """
    r = np.asarray(r, dtype=np.float64)
    ceiling = np.asarray(ceiling, dtype=np.float64)
    out = np.full(r.shape, np.nan)
    ok = np.isfinite(ceiling) & (ceiling > 0) & np.isfinite(r)
    out[ok] = r[ok] / ceiling[ok]
    return out


def _ratio_of_means(r: np.ndarray, ceiling: np.ndarray) -> float:
    """``mean(r) / mean(ceiling)`` over ROIs where both are defined and the ceiling > 0."""
    ok = np.isfinite(r) & np.isfinite(ceiling) & (ceiling > 0)
    if not ok.any():
        return float("nan")
    return float(r[ok].mean() / ceiling[ok].mean())


# --------------------------------------------------------------------------- noise ceiling IO
def _strip_sub(subject: str) -> str:
    return subject[4:] if subject.startswith("sub-") else subject


def load_noise_ceiling(
    bids_root: str | os.PathLike[str], subject: str, task: str | None = None
) -> dict[str, float] | None:
    """Read the simulator's per-parcel noise ceiling of one subject.

    The simulator writes ``derivatives/brainxl-sim/sub-XX/[ses-YY/]func/
    sub-XX_..._desc-noiseceiling_stats.tsv`` with columns ``name`` and ``r`` (Pearson r of
    observed vs noise-free BOLD over all TRs of the run). With several runs (or sessions)
    the values are averaged per parcel.

    Parameters
    ----------
    bids_root : path
        The BIDS dataset root.
    subject : str
        ``"01"`` or ``"sub-01"``.
    task : str, optional
        Only use runs of this task.

    Returns
    -------
    ceiling : dict of str to float, or None
        ``None`` when the dataset is not simulated (no ``derivatives/brainxl-sim``).

    Raises
    ------
    ValueError
        The dataset is simulated but the subject has no ceiling file, or a file is malformed.
    """
    root = Path(bids_root)
    deriv = root / "derivatives" / SIM_DERIVATIVES
    if not deriv.is_dir():
        return None
    sub = _strip_sub(subject)
    pattern = f"sub-{sub}_*desc-noiseceiling_stats.tsv"
    files = sorted((deriv / f"sub-{sub}").rglob(pattern))
    if task is not None:
        files = [f for f in files if f"_task-{task}_" in f.name]
    if not files:
        raise ValueError(
            f"{deriv / f'sub-{sub}'}: no {pattern} found although this is a simulated dataset; "
            "re-run `brainxl simulate` for this dataset or check the subject label"
        )
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for path in files:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            if reader.fieldnames is None or not {"name", "r"} <= set(reader.fieldnames):
                raise ValueError(
                    f"{path}: expected tab-separated columns 'name' and 'r', got "
                    f"{reader.fieldnames}; regenerate it with `brainxl simulate`"
                )
            for row in reader:
                if row["r"] in ("n/a", ""):  # BIDS missing value
                    sums.setdefault(row["name"], 0.0)
                    counts.setdefault(row["name"], 0)
                    continue
                try:
                    val = float(row["r"])
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f"{path}: r value {row['r']!r} of {row['name']!r} is not a number; "
                        "regenerate it with `brainxl simulate`"
                    ) from err
                sums[row["name"]] = sums.get(row["name"], 0.0) + val
                counts[row["name"]] = counts.get(row["name"], 0) + 1
    return {name: sums[name] / counts[name] if counts[name] else float("nan") for name in sums}


def _read_matrix_tsv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path) as fh:
        header = fh.readline().rstrip("\n").split("\t")
    try:
        data = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    except ValueError as err:
        raise ValueError(f"{path}: not a numeric TSV ({err}); regenerate it") from err
    if data.shape[1] != len(header):
        raise ValueError(f"{path}: {data.shape[1]} columns but {len(header)} names in the header")
    return header, data


def load_noise_ceiling_on_trs(
    bids_root: str | os.PathLike[str],
    subject: str,
    tr_indices: Sequence[int] | np.ndarray | None = None,
    task: str | None = None,
) -> dict[str, float] | None:
    """Noise ceiling recomputed on the scored TRs from the simulator's time series.

    Reads the observed and noise-free ROI BOLD (``..._timeseries.tsv`` and
    ``..._desc-noisefree_timeseries.tsv`` under ``derivatives/brainxl-sim/sub-XX``), keeps
    the rows ``tr_indices`` of every run (the TRs with a full window, as the predictions),
    concatenates the runs and applies :func:`noise_ceiling`.

    Parameters
    ----------
    bids_root : path
    subject : str
    tr_indices : sequence of int, optional
        TRs kept in each run; all TRs if omitted.
    task : str, optional

    Returns
    -------
    ceiling : dict of str to float, or None
        ``None`` when the dataset is not simulated.
    """
    deriv = Path(bids_root) / "derivatives" / SIM_DERIVATIVES
    if not deriv.is_dir():
        return None
    sub = _strip_sub(subject)
    clean_files = sorted((deriv / f"sub-{sub}").rglob(f"sub-{sub}_*desc-noisefree_timeseries.tsv"))
    if task is not None:
        clean_files = [f for f in clean_files if f"_task-{task}_" in f.name]
    if not clean_files:
        raise ValueError(
            f"{deriv / f'sub-{sub}'}: no *_desc-noisefree_timeseries.tsv although this is a "
            "simulated dataset; re-run `brainxl simulate` or check the subject label"
        )
    obs_all, clean_all, names = [], [], None
    for cf in clean_files:
        of = cf.with_name(cf.name.replace("_desc-noisefree", ""))
        if not of.exists():
            raise ValueError(f"{of}: missing (the observed ROI BOLD next to {cf.name})")
        cn, clean = _read_matrix_tsv(cf)
        on, obs = _read_matrix_tsv(of)
        if cn != on or clean.shape != obs.shape:
            raise ValueError(f"{cf} and {of} disagree on parcels or length; regenerate them")
        if names is not None and cn != names:
            raise ValueError(f"{cf}: parcels differ from the subject's other runs")
        names = cn
        if tr_indices is not None:
            idx = np.asarray(tr_indices, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= obs.shape[0]):
                raise ValueError(
                    f"{of}: has {obs.shape[0]} TRs but TR index {int(idx.max())} was requested"
                )
            obs, clean = obs[idx], clean[idx]
        obs_all.append(obs)
        clean_all.append(clean)
    ceiling = noise_ceiling(np.concatenate(obs_all), np.concatenate(clean_all))
    return dict(zip(names or [], (float(c) for c in ceiling)))


def ceiling_array(ceiling: dict[str, float] | None, roi_names: Sequence[str]) -> np.ndarray | None:
    """Order a ``{name: r}`` ceiling like ``roi_names``; missing names give ``nan``.

    Returns
    -------
    ceiling : ndarray, shape (n_rois,) or None
    """
    if ceiling is None:
        return None
    return np.array([ceiling.get(n, np.nan) for n in roi_names], dtype=np.float64)


# --------------------------------------------------------------------------- intervals
def t_interval(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float, int]:
    """Mean and Student-t confidence interval of the finite values.

    Parameters
    ----------
    values : sequence of float
        One value per independent unit (held-out subject); NaNs are skipped.
    confidence : float

    Returns
    -------
    mean, low, high : float
        ``low``/``high`` are ``nan`` with fewer than two finite values (undefined).
    n : int
        Number of finite values used.
    """
    from scipy.stats import t as student_t

    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan"), n
    half = float(student_t.ppf(0.5 + confidence / 2, df=n - 1) * x.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half, n


# --------------------------------------------------------------------------- results
def _arr(x: Any) -> np.ndarray | None:
    return None if x is None else np.asarray(x, dtype=np.float64)


def _jsonable(x: np.ndarray | None) -> list[float | None] | None:
    if x is None:
        return None
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(x, dtype=np.float64)]


def _from_jsonable(x: list[float | None] | None) -> np.ndarray | None:
    if x is None:
        return None
    return np.array([np.nan if v is None else v for v in x], dtype=np.float64)


def _f(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _unf(x: float | None) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class SubjectResult:
    """Metrics of one (held-out) subject.

    Attributes
    ----------
    subject : str
    roi_names : list of str, length n_rois
    r, rho, cos : ndarray, shape (n_rois,)
        Pearson r, Spearman rho and uncentred cosine per ROI (``nan`` = undefined).
    n_times : int
        Time points (TRs) scored.
    noise_ceiling : ndarray, shape (n_rois,), optional
        Pearson r of observed vs noise-free BOLD (simulated data only).
    fraction_of_ceiling : ndarray, shape (n_rois,), optional
        ``r / noise_ceiling`` per ROI (``nan`` where the ceiling is not positive).
    """

    subject: str
    roi_names: list[str]
    r: np.ndarray
    rho: np.ndarray
    cos: np.ndarray
    n_times: int
    noise_ceiling: np.ndarray | None = None
    fraction_of_ceiling: np.ndarray | None = None

    @property
    def mean_r(self) -> float:
        """Mean Pearson r over the ROIs where it is defined."""
        return float(_nanmean(self.r))

    @property
    def mean_rho(self) -> float:
        """Mean Spearman rho over the ROIs where it is defined."""
        return float(_nanmean(self.rho))

    @property
    def mean_cos(self) -> float:
        """Mean cosine similarity over the ROIs where it is defined."""
        return float(_nanmean(self.cos))

    @property
    def n_valid_rois(self) -> int:
        """ROIs with a defined Pearson r."""
        return int(np.isfinite(self.r).sum())

    @property
    def mean_ceiling(self) -> float:
        """Mean noise ceiling over ROIs (``nan`` without a ceiling)."""
        return float("nan") if self.noise_ceiling is None else float(_nanmean(self.noise_ceiling))

    @property
    def mean_fraction_of_ceiling(self) -> float:
        """``mean(r) / mean(ceiling)`` over ROIs where both are defined (ratio of means,
        stable when some ceilings are near zero); ``nan`` without a ceiling."""
        if self.noise_ceiling is None:
            return float("nan")
        return _ratio_of_means(self.r, self.noise_ceiling)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN written as ``null``)."""
        return {
            "subject": self.subject,
            "roi_names": list(self.roi_names),
            "r": _jsonable(self.r),
            "rho": _jsonable(self.rho),
            "cos": _jsonable(self.cos),
            "n_times": int(self.n_times),
            "noise_ceiling": _jsonable(self.noise_ceiling),
            "fraction_of_ceiling": _jsonable(self.fraction_of_ceiling),
            "mean_r": _f(self.mean_r),
            "mean_rho": _f(self.mean_rho),
            "mean_cos": _f(self.mean_cos),
            "mean_fraction_of_ceiling": _f(self.mean_fraction_of_ceiling),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubjectResult:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                subject=str(d["subject"]),
                roi_names=list(d["roi_names"]),
                r=_from_jsonable(d["r"]),
                rho=_from_jsonable(d["rho"]),
                cos=_from_jsonable(d["cos"]),
                n_times=int(d["n_times"]),
                noise_ceiling=_from_jsonable(d.get("noise_ceiling")),
                fraction_of_ceiling=_from_jsonable(d.get("fraction_of_ceiling")),
            )
        except KeyError as err:
            raise ValueError(f"subject result is missing the key {err}") from err


def evaluate_subject(
    subject: str,
    pred: np.ndarray,
    true: np.ndarray,
    roi_names: Sequence[str],
    noise_ceiling: np.ndarray | dict[str, float] | None = None,
) -> SubjectResult:
    """Score one subject's predictions.

    Parameters
    ----------
    subject : str
    pred, true : ndarray, shape (n_times, n_rois)
        Predicted and observed BOLD on the scored TRs (order over time does not matter as
        long as rows pair up; runs may be concatenated).
    roi_names : sequence of str, length n_rois
    noise_ceiling : ndarray, shape (n_rois,), or dict of name to r, optional
        From :func:`noise_ceiling` or :func:`load_noise_ceiling`.

    Returns
    -------
    SubjectResult
    """
    pred, true = _check_pair(pred, true)
    roi_names = list(roi_names)
    if len(roi_names) != pred.shape[1]:
        raise ValueError(
            f"subject {subject}: {len(roi_names)} ROI names for {pred.shape[1]} ROI columns; "
            "pass arrays shaped (n_times, n_rois)"
        )
    ceiling = (
        ceiling_array(noise_ceiling, roi_names)
        if isinstance(noise_ceiling, dict)
        else _arr(noise_ceiling)
    )
    if ceiling is not None and ceiling.shape != (len(roi_names),):
        raise ValueError(
            f"subject {subject}: noise ceiling has shape {ceiling.shape}, expected "
            f"({len(roi_names)},)"
        )
    r = pearson_per_roi(pred, true)
    return SubjectResult(
        subject=_strip_sub(str(subject)),
        roi_names=roi_names,
        r=r,
        rho=spearman_per_roi(pred, true),
        cos=cosine_per_roi(pred, true),
        n_times=int(pred.shape[0]),
        noise_ceiling=ceiling,
        fraction_of_ceiling=None if ceiling is None else fraction_of_ceiling(r, ceiling),
    )


@dataclass
class Interval:
    """A mean across subjects with its confidence interval (``nan`` bounds if n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = 0.95) -> Interval:
        """Student-t interval of the finite ``values``."""
        m, lo, hi, n = t_interval(values, confidence)
        return cls(m, lo, hi, n, confidence)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "mean": _f(self.mean),
            "low": _f(self.low),
            "high": _f(self.high),
            "n": self.n,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Interval:
        """Inverse of :meth:`to_dict`."""
        return cls(
            _unf(d["mean"]), _unf(d["low"]), _unf(d["high"]), int(d["n"]), d.get("confidence", 0.95)
        )

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.3f} (n={self.n}: interval undefined)"
        pct = round(self.confidence * 100)
        return f"{self.mean:.3f} [{pct}% CI {self.low:.3f}, {self.high:.3f}] (n={self.n})"


@dataclass
class FoldSummary:
    """Summary across held-out subjects (one LOSO fold, or several merged).

    Attributes
    ----------
    subjects : list of str
    roi_names : list of str, length n_rois
    per_subject : list of SubjectResult
    r, rho, cos : Interval
        Mean across subjects of each subject's mean over ROIs, with a 95% t-interval
        across subjects (undefined, ``nan``, with a single subject; see ``notes``).
    fraction_of_ceiling : Interval or None
        Across subjects of each subject's ``mean(r) / mean(ceiling)``.
    roi_r, roi_rho, roi_cos : ndarray, shape (n_rois,)
        Per-ROI mean across subjects (nanmean).
    roi_n : ndarray of int, shape (n_rois,)
        Subjects where the ROI's r was defined.
    roi_ceiling, roi_fraction : ndarray, shape (n_rois,), or None
        Per-ROI mean ceiling and mean fraction of it across subjects that have one.
    notes : list of str
        Caveats (single subject, undefined ROIs, ...), meant to be printed.
    """

    subjects: list[str]
    roi_names: list[str]
    per_subject: list[SubjectResult]
    r: Interval
    rho: Interval
    cos: Interval
    fraction_of_ceiling: Interval | None
    roi_r: np.ndarray
    roi_rho: np.ndarray
    roi_cos: np.ndarray
    roi_n: np.ndarray
    roi_ceiling: np.ndarray | None = None
    roi_fraction: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mean_r(self) -> float:
        """Mean across subjects of the per-subject mean r (the LOSO objective)."""
        return self.r.mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; the per-subject results carry everything needed to re-summarise."""
        return {
            "schema": SCHEMA_VERSION,
            "kind": "FoldSummary",
            "subjects": list(self.subjects),
            "roi_names": list(self.roi_names),
            "per_subject": [s.to_dict() for s in self.per_subject],
            "r": self.r.to_dict(),
            "rho": self.rho.to_dict(),
            "cos": self.cos.to_dict(),
            "fraction_of_ceiling": (
                None if self.fraction_of_ceiling is None else self.fraction_of_ceiling.to_dict()
            ),
            "roi_r": _jsonable(self.roi_r),
            "roi_rho": _jsonable(self.roi_rho),
            "roi_cos": _jsonable(self.roi_cos),
            "roi_n": [int(v) for v in self.roi_n],
            "roi_ceiling": _jsonable(self.roi_ceiling),
            "roi_fraction": _jsonable(self.roi_fraction),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FoldSummary:
        """Rebuild from :meth:`to_dict` output by re-summarising the per-subject results
        (so a summary edited by hand cannot disagree with its subjects)."""
        if d.get("kind") != "FoldSummary":
            raise ValueError(f"not a FoldSummary (kind={d.get('kind')!r})")
        if int(d.get("schema", 0)) > SCHEMA_VERSION:
            raise ValueError(
                f"summary schema {d.get('schema')} is newer than this brainxl ({SCHEMA_VERSION}); "
                "upgrade brainxl"
            )
        return summarize([SubjectResult.from_dict(s) for s in d["per_subject"]])


def summarize(results: Sequence[SubjectResult], confidence: float = 0.95) -> FoldSummary:
    """Summarise held-out subjects: means with t-intervals across subjects and per-ROI means.

    Parameters
    ----------
    results : sequence of SubjectResult
        One per held-out subject; all must share ``roi_names``.
    confidence : float

    Returns
    -------
    FoldSummary
    """
    results = list(results)
    if not results:
        raise ValueError("summarize() needs at least one SubjectResult")
    names = [s.subject for s in results]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(
            f"subjects {dupes} appear more than once; each held-out subject must be scored once "
            "(concatenate its runs before evaluate_subject)"
        )
    roi_names = list(results[0].roi_names)
    for s in results[1:]:
        if list(s.roi_names) != roi_names:
            raise ValueError(
                f"subject {s.subject} has ROIs {s.roi_names[:3]}... but subject "
                f"{results[0].subject} has {roi_names[:3]}...; all subjects must use the same "
                "atlas in the same order"
            )
    notes: list[str] = []
    r_mat = np.stack([s.r for s in results])
    roi_n = np.isfinite(r_mat).sum(axis=0).astype(int)
    n_subjects = len(results)
    if n_subjects == 1:
        notes.append("one held-out subject: the 95% interval across subjects is undefined")
    undefined = [roi_names[i] for i in np.flatnonzero(roi_n < n_subjects)]
    if undefined:
        notes.append(
            f"{len(undefined)} ROI(s) had an undefined r (constant series) in some subject and "
            f"were averaged over fewer subjects: {', '.join(undefined[:10])}"
            + (" ..." if len(undefined) > 10 else "")
        )
    with_ceiling = [s for s in results if s.noise_ceiling is not None]
    frac = None
    roi_ceiling = roi_fraction = None
    if with_ceiling:
        frac = Interval.of([s.mean_fraction_of_ceiling for s in with_ceiling], confidence)
        roi_ceiling = np.asarray(_nanmean(np.stack([s.noise_ceiling for s in with_ceiling]), 0))
        roi_fraction = np.asarray(
            _nanmean(np.stack([s.fraction_of_ceiling for s in with_ceiling]), 0)
        )
        if len(with_ceiling) < n_subjects:
            notes.append(
                f"noise ceiling known for {len(with_ceiling)} of {n_subjects} subjects only"
            )
    return FoldSummary(
        subjects=names,
        roi_names=roi_names,
        per_subject=results,
        r=Interval.of([s.mean_r for s in results], confidence),
        rho=Interval.of([s.mean_rho for s in results], confidence),
        cos=Interval.of([s.mean_cos for s in results], confidence),
        fraction_of_ceiling=frac,
        roi_r=np.asarray(_nanmean(r_mat, 0)),
        roi_rho=np.asarray(_nanmean(np.stack([s.rho for s in results]), 0)),
        roi_cos=np.asarray(_nanmean(np.stack([s.cos for s in results]), 0)),
        roi_n=roi_n,
        roi_ceiling=roi_ceiling,
        roi_fraction=roi_fraction,
        notes=notes,
    )


def merge_summaries(summaries: Sequence[FoldSummary], confidence: float = 0.95) -> FoldSummary:
    """Merge LOSO folds (one or more held-out subjects each) into one summary.

    The interval is recomputed across all held-out subjects; a subject held out in two
    folds is an error (it would be counted twice).

    Parameters
    ----------
    summaries : sequence of FoldSummary

    Returns
    -------
    FoldSummary
    """
    if not summaries:
        raise ValueError("merge_summaries() needs at least one FoldSummary")
    return summarize([s for fold in summaries for s in fold.per_subject], confidence)


def paired_difference(
    model: FoldSummary, baseline: FoldSummary, confidence: float = 0.95
) -> Interval:
    """Mean over common subjects of (model mean r - baseline mean r), with a t-interval.

    Pairing by subject removes the between-subject spread, so this is the interval to
    quote when saying the model beats the baseline.
    """
    base = {s.subject: s.mean_r for s in baseline.per_subject}
    common = [s for s in model.per_subject if s.subject in base]
    if not common:
        raise ValueError(
            f"model subjects {model.subjects} and baseline subjects {baseline.subjects} do not "
            "overlap; score the baseline on the same held-out subjects"
        )
    return Interval.of([s.mean_r - base[s.subject] for s in common], confidence)


def format_comparison(
    model: FoldSummary,
    baseline: FoldSummary,
    model_name: str = "model",
    baseline_name: str = "ridge (band power)",
) -> str:
    """Plain-text comparison for the console: per subject and mean r of both, and the
    paired difference with its 95% interval."""
    base = {s.subject: s.mean_r for s in baseline.per_subject}
    width = max(len(model_name), len(baseline_name), 7)
    lines = [f"{'subject':<10} {model_name:>{width}} {baseline_name:>{width}}"]
    for s in model.per_subject:
        b = base.get(s.subject, float("nan"))
        lines.append(f"sub-{s.subject:<6} {s.mean_r:>{width}.3f} {b:>{width}.3f}")
    lines.append(f"{model_name} mean r: {model.r}")
    lines.append(f"{baseline_name} mean r: {baseline.r}")
    lines.append(f"difference (paired by subject): {paired_difference(model, baseline)}")
    return "\n".join(lines)


def to_json(obj: SubjectResult | FoldSummary, path: str | os.PathLike[str] | None = None) -> str:
    """Serialise a result or summary to JSON (NaN as ``null``); also write it if ``path``.

    The file is written atomically (temporary file + rename), so an existing file is never
    left half-written.
    """
    d = obj.to_dict()
    if isinstance(obj, SubjectResult):
        d = {"schema": SCHEMA_VERSION, "kind": "SubjectResult", **d}
    text = json.dumps(d, indent=2, allow_nan=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text + "\n")
    return text


def from_json(text_or_path: str | os.PathLike[str]) -> SubjectResult | FoldSummary:
    """Load what :func:`to_json` wrote (a JSON string or a file path)."""
    src = "<string>"
    if isinstance(text_or_path, os.PathLike) or not str(text_or_path).lstrip().startswith("{"):
        src = str(text_or_path)
        try:
            text = Path(text_or_path).read_text()
        except OSError as err:
            raise ValueError(f"{src}: cannot read metrics JSON ({err})") from err
    else:
        text = str(text_or_path)
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{src}: not valid JSON ({err}); re-run `brainxl evaluate`") from err
    kind = d.get("kind") if isinstance(d, dict) else None
    try:
        if kind == "FoldSummary":
            return FoldSummary.from_dict(d)
        if kind == "SubjectResult":
            return SubjectResult.from_dict(d)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{src}: malformed {kind} ({err}); re-run `brainxl evaluate`") from err
    raise ValueError(
        f"{src}: expected a brainxl FoldSummary or SubjectResult JSON (kind={kind!r}); "
        "re-run `brainxl evaluate`"
    )


def load_true_hrfs(
    bids_root: str | os.PathLike[str], subject: str, dt: float = 0.1
) -> np.ndarray | None:
    """The simulator's HRF kernels of one subject on a ``dt`` grid, unit peak.

    Reads ``derivatives/brainxl-sim/sub-XX/sub-XX_desc-hrf_kernels.tsv`` (a ``time_s``
    column, then one column per parcel).

    Returns
    -------
    ndarray, shape (n_parcels, n_lags) or None
        None when the dataset is not simulated or the file is missing.
    """
    sub = subject if subject.startswith("sub-") else f"sub-{subject}"
    path = Path(bids_root) / "derivatives" / SIM_DERIVATIVES / sub / f"{sub}_desc-hrf_kernels.tsv"
    if not path.is_file():
        return None
    table = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    t, k = table[:, 0], table[:, 1:].T
    grid = np.arange(0.0, t[-1] + 1e-9, dt)
    k = np.stack([np.interp(grid, t, row) for row in k])
    peak = np.abs(k).max(axis=1, keepdims=True)
    return k / np.where(peak > 0, peak, 1.0)
