"""Figures of a run: per-ROI r against the noise ceiling, predictions, HRFs, attention, curves.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``: no
global state, no GUI backend, nothing to close) and returns it; none calls ``show()``.
Save one with ``fig.savefig(path)`` or let :func:`brainxl.report.write_report` do it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from brainxl.metrics import FoldSummary, pearson_per_roi

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_WHICH = ("best", "median", "worst")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _names(names: Sequence[str] | None, n: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(n)]
    names = list(names)
    if len(names) != n:
        raise ValueError(f"{len(names)} names given for {n} {prefix.strip()} rows")
    return names


def plot_roi_r_vs_ceiling(
    summary_or_r: FoldSummary | np.ndarray,
    ceiling: np.ndarray | None = None,
    roi_names: Sequence[str] | None = None,
    max_labels: int = 40,
) -> Figure:
    """Per-ROI Pearson r (mean across held-out subjects) against the noise ceiling.

    Parameters
    ----------
    summary_or_r : FoldSummary or ndarray, shape (n_rois,)
        A summary (its ``roi_r``, ``roi_ceiling``, ``roi_names`` are used) or per-ROI r.
    ceiling : ndarray, shape (n_rois,), optional
        Overrides the summary's ceiling; without any ceiling only the bars are drawn.
    roi_names : sequence of str, optional
    max_labels : int
        ROI names are written on the axis only up to this many ROIs.

    Returns
    -------
    Figure
        Bars of r per ROI (sorted by r) with the ceiling as markers, and, with a ceiling,
        a scatter of r against the ceiling with the identity line.
    """
    if isinstance(summary_or_r, FoldSummary):
        r = np.asarray(summary_or_r.roi_r, dtype=float)
        ceiling = summary_or_r.roi_ceiling if ceiling is None else ceiling
        roi_names = summary_or_r.roi_names if roi_names is None else roi_names
    else:
        r = np.asarray(summary_or_r, dtype=float).ravel()
    names = _names(roi_names, r.size, "roi ")
    c = None if ceiling is None else np.asarray(ceiling, dtype=float).ravel()
    if c is not None and c.shape != r.shape:
        raise ValueError(f"ceiling has shape {c.shape} but r has shape {r.shape}")
    fig = _figure(12 if c is not None else 8, 4)
    axes = fig.subplots(1, 2 if c is not None else 1, squeeze=False)[0]
    order = np.argsort(np.where(np.isfinite(r), -r, np.inf))
    x = np.arange(r.size)
    ax = axes[0]
    ax.bar(x, r[order], color="tab:blue", label="model r")
    if c is not None:
        ax.plot(x, c[order], "_", color="k", markersize=10, mew=2, label="noise ceiling")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel("ROI (sorted by r)")
    ax.set_ylabel("Pearson r")
    ax.set_title(f"Per-ROI r (mean over ROIs {np.nanmean(r) if np.isfinite(r).any() else 0:.3f})")
    if r.size <= max_labels:
        ax.set_xticks(x, [names[i] for i in order], rotation=90, fontsize=7)
    ax.legend(loc="upper right", fontsize=8)
    if c is not None:
        ax2 = axes[1]
        ok = np.isfinite(r) & np.isfinite(c)
        ax2.scatter(c[ok], r[ok], s=18, color="tab:blue")
        lo = float(min(0.0, np.nanmin(np.r_[r[ok], c[ok]]) if ok.any() else 0.0))
        ax2.plot([lo, 1], [lo, 1], "k--", lw=0.8, label="r = ceiling")
        ax2.set_xlabel("noise ceiling r(observed, noise-free)")
        ax2.set_ylabel("model r")
        ax2.set_title("r against the noise ceiling")
        ax2.legend(loc="upper left", fontsize=8)
    return fig


def plot_pred_vs_true(
    pred: np.ndarray,
    true: np.ndarray,
    roi_names: Sequence[str] | None = None,
    which: Sequence[str] = _WHICH,
    tr: float | None = None,
    zscore: bool = True,
) -> Figure:
    """Predicted against observed BOLD over time for the best/median/worst ROI by r.

    Parameters
    ----------
    pred, true : ndarray, shape (n_times, n_rois)
    roi_names : sequence of str, optional
    which : sequence of {"best", "median", "worst"}
    tr : float, optional
        Repetition time in seconds (x axis in seconds; TR index otherwise).
    zscore : bool
        Standardise each series so shapes can be compared (ridge-like models shrink).

    Returns
    -------
    Figure
        One row per entry of ``which``.
    """
    pred = np.asarray(pred, dtype=float)
    true = np.asarray(true, dtype=float)
    r = pearson_per_roi(pred, true)
    names = _names(roi_names, r.size, "roi ")
    for w in which:
        if w not in _WHICH:
            raise ValueError(f"which={w!r}: choose from {_WHICH}")
    valid = np.flatnonzero(np.isfinite(r))
    if valid.size == 0:
        valid = np.arange(r.size)
    ranked = valid[np.argsort(-np.nan_to_num(r[valid], nan=-2.0))]
    pick = {"best": ranked[0], "median": ranked[len(ranked) // 2], "worst": ranked[-1]}
    t = np.arange(pred.shape[0]) * (tr if tr else 1.0)
    fig = _figure(10, 2.2 * len(which) + 0.5)
    axes = fig.subplots(len(which), 1, squeeze=False, sharex=True)[:, 0]

    def z(v: np.ndarray) -> np.ndarray:
        if not zscore:
            return v
        sd = v.std()
        return (v - v.mean()) / (sd if sd > 0 else 1.0)

    for ax, w in zip(axes, which):
        j = int(pick[w])
        ax.plot(t, z(true[:, j]), color="k", lw=1.0, label="observed")
        ax.plot(t, z(pred[:, j]), color="tab:red", lw=1.0, label="predicted")
        ax.set_title(f"{w}: {names[j]} (r = {r[j]:.3f})", fontsize=9)
        ax.set_ylabel("z-scored BOLD" if zscore else "BOLD")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("time (s)" if tr else "TR")
    return fig


def plot_hrfs(
    learned: np.ndarray,
    true: np.ndarray | None = None,
    dt: float = 1.0,
    names: Sequence[str] | None = None,
    max_panels: int = 16,
) -> Figure:
    """Learned haemodynamic response functions (SAMBA) against the true ones.

    Parameters
    ----------
    learned : ndarray, shape (n_parcels, n_lags)
    true : ndarray, shape (n_parcels, n_lags), optional
        The simulator's HRFs on the same time grid.
    dt : float
        Spacing of the lags in seconds.
    names : sequence of str, optional
        Parcel names.
    max_panels : int
        At most this many parcels are drawn (evenly spaced over the parcels).

    Returns
    -------
    Figure
    """
    learned = np.atleast_2d(np.asarray(learned, dtype=float))
    if true is not None:
        true = np.atleast_2d(np.asarray(true, dtype=float))
        if true.shape != learned.shape:
            raise ValueError(f"true HRFs have shape {true.shape}, learned {learned.shape}")
    p, n_lags = learned.shape
    names = _names(names, p, "parcel ")
    idx = np.unique(np.linspace(0, p - 1, min(p, max_panels)).round().astype(int))
    ncol = min(4, idx.size)
    nrow = math.ceil(idx.size / ncol)
    fig = _figure(3 * ncol, 2.2 * nrow + 0.4)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    lags = np.arange(n_lags) * dt
    for ax, i in zip(axes, idx):
        ax.plot(lags, learned[i], color="tab:red", label="learned")
        if true is not None:
            ax.plot(lags, true[i], color="k", ls="--", label="true")
            r = pearson_per_roi(learned[i], true[i])[0]
            ax.set_title(f"{names[i]} (r = {r:.2f})", fontsize=9)
        else:
            ax.set_title(names[i], fontsize=9)
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_xlabel("lag (s)", fontsize=8)
    for ax in axes[idx.size :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.suptitle("Haemodynamic response functions")
    return fig


def plot_wavelet_attention(
    weights: np.ndarray,
    scale_names: Sequence[str] | None = None,
    parcel_names: Sequence[str] | None = None,
    max_labels: int = 40,
) -> Figure:
    """Attention weights over wavelet scales per parcel (heatmap and mean per scale).

    Parameters
    ----------
    weights : ndarray, shape (n_parcels, n_scales) or (n_batch, n_parcels, n_scales)
        A batch axis is averaged over.
    scale_names : sequence of str, optional
        E.g. ``["D1 (50-100 Hz)", ...]``.
    parcel_names : sequence of str, optional

    Returns
    -------
    Figure
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim == 3:
        w = w.mean(axis=0)
    if w.ndim != 2:
        raise ValueError(
            f"weights must be (n_parcels, n_scales) or (B, n_parcels, n_scales), got {w.shape}"
        )
    p, s = w.shape
    scales = _names(scale_names, s, "scale ")
    parcels = _names(parcel_names, p, "parcel ")
    fig = _figure(11, max(3.5, min(10, 0.18 * p + 1.5)))
    ax, ax2 = fig.subplots(1, 2, width_ratios=[3, 1.2])
    im = ax.imshow(w, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xticks(np.arange(s), scales, rotation=45, ha="right", fontsize=8)
    if p <= max_labels:
        ax.set_yticks(np.arange(p), parcels, fontsize=7)
    ax.set_ylabel("parcel")
    ax.set_title("Wavelet attention per parcel")
    fig.colorbar(im, ax=ax, shrink=0.8)
    mean = w.mean(axis=0)
    sd = w.std(axis=0)
    ax2.barh(np.arange(s), mean, xerr=sd, color="tab:green")
    ax2.set_yticks(np.arange(s), scales, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("mean weight (± sd over parcels)")
    return fig


_NON_METRIC = {"step", "split", "epoch", "time", "timestamp", "subject", "fold", "rank"}


def plot_training_curves(
    records: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None
) -> Figure:
    """Training curves from ``metrics.jsonl`` records.

    Parameters
    ----------
    records : sequence of dict
        Each with ``step``, ``split`` (``"train"``, ``"val"``, ...) and numeric metrics
        (``loss``, ``r``, ``lr``, ...); records lacking a metric are skipped for it.
    metrics : sequence of str, optional
        Metrics to draw (one panel each); default: every numeric key, ``loss`` and ``r``
        first, at most 6.

    Returns
    -------
    Figure
    """
    records = [r for r in records if "step" in r]
    if not records:
        raise ValueError("no records with a 'step' key: is this a brainxl metrics.jsonl?")
    if metrics is None:
        found: list[str] = []
        for rec in records:
            for k, v in rec.items():
                if k not in _NON_METRIC and k not in found and isinstance(v, (int, float)):
                    found.append(k)
        metrics = [m for m in ("loss", "r") if m in found] + [
            m for m in found if m not in ("loss", "r")
        ]
        metrics = metrics[:6]
    if not metrics:
        raise ValueError("the records hold no numeric metric besides step/split")
    ncol = min(3, len(metrics))
    nrow = math.ceil(len(metrics) / ncol)
    fig = _figure(4.2 * ncol, 3 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    splits = sorted({str(r.get("split", "train")) for r in records})
    for ax, m in zip(axes, metrics):
        for sp in splits:
            pts = sorted(
                (float(r["step"]), float(r[m]))
                for r in records
                if str(r.get("split", "train")) == sp and isinstance(r.get(m), (int, float))
            )
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, marker="o" if len(pts) < 30 else None, ms=3, label=sp)
        ax.set_title(m)
        ax.set_xlabel("step")
        if m == "loss" or m.endswith("loss"):
            vals = [float(r[m]) for r in records if isinstance(r.get(m), (int, float))]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 50:
                ax.set_yscale("log")
        ax.legend(fontsize=8)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return fig


def standard_figures(
    summary: FoldSummary,
    predictions: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    tr: float | None = None,
    learned_hrfs: np.ndarray | None = None,
    true_hrfs: np.ndarray | None = None,
    hrf_dt: float = 1.0,
    attention: np.ndarray | None = None,
    scale_names: Sequence[str] | None = None,
    records: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Figure]:
    """The report's figure set from whatever the run has (missing inputs are skipped).

    Parameters
    ----------
    summary : FoldSummary
    predictions : dict of subject to (pred, true), each shape (n_times, n_rois), optional
        One ``pred_vs_true_sub-XX`` figure per subject.
    tr : float, optional
    learned_hrfs, true_hrfs : ndarray, shape (n_parcels, n_lags), optional
    hrf_dt : float
    attention : ndarray, shape (n_parcels, n_scales) or (B, n_parcels, n_scales), optional
    scale_names : sequence of str, optional
    records : sequence of dict, optional
        ``metrics.jsonl`` records for the training curves.

    Returns
    -------
    dict of str to Figure
        Names are safe file names, in display order (feed to ``write_report``).
    """
    figs: dict[str, Figure] = {
        "roi_r_vs_ceiling": plot_roi_r_vs_ceiling(summary),
        "per_subject": plot_per_subject(summary),
    }
    for sub, (pred, true) in (predictions or {}).items():
        figs[f"pred_vs_true_sub-{sub}"] = plot_pred_vs_true(pred, true, summary.roi_names, tr=tr)
    if learned_hrfs is not None:
        names = summary.roi_names if len(summary.roi_names) == len(learned_hrfs) else None
        figs["hrfs"] = plot_hrfs(learned_hrfs, true_hrfs, hrf_dt, names)
    if attention is not None:
        figs["wavelet_attention"] = plot_wavelet_attention(attention, scale_names)
    if records:
        figs["training_curves"] = plot_training_curves(records)
    return figs


def plot_per_subject(summary: FoldSummary) -> Figure:
    """Mean r per held-out subject with the across-subject mean and 95% interval.

    With a noise ceiling a second panel shows each subject's fraction of it.

    Parameters
    ----------
    summary : FoldSummary

    Returns
    -------
    Figure
    """
    subs = summary.per_subject
    has_ceiling = summary.fraction_of_ceiling is not None
    fig = _figure(max(5, 0.5 * len(subs) + 3) * (2 if has_ceiling else 1), 3.8)
    axes = fig.subplots(1, 2 if has_ceiling else 1, squeeze=False)[0]
    x = np.arange(len(subs))
    labels = [f"sub-{s.subject}" for s in subs]

    def panel(ax: Any, vals: list[float], iv: Any, ylabel: str) -> None:
        ax.bar(x, np.nan_to_num(vals), color="tab:blue")
        ax.axhline(iv.mean, color="k", lw=1, zorder=4, label=f"mean {iv.mean:.3f}")
        if iv.n >= 2:
            ax.axhspan(iv.low, iv.high, color="0.3", alpha=0.3, zorder=3, label="95% CI")
        else:
            ax.text(0.02, 0.95, "n=1: interval undefined", transform=ax.transAxes, va="top")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8, loc="lower right")

    panel(axes[0], [s.mean_r for s in subs], summary.r, "mean Pearson r over ROIs")
    axes[0].set_title("Held-out subjects")
    if has_ceiling:
        panel(
            axes[1],
            [s.mean_fraction_of_ceiling for s in subs],
            summary.fraction_of_ceiling,
            "fraction of noise ceiling",
        )
        axes[1].set_title("Fraction of the noise ceiling")
    return fig
