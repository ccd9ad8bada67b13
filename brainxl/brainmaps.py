"""Figures in brain and sensor space: per-ROI r on the atlas, channel-weight topographies,
power spectra, and the small HTML report of ``brainxl predict --report``.

Each plotting function builds and returns a :class:`matplotlib.figure.Figure` (nilearn
and MNE draw into it); none calls ``show()``.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from brainxl.files import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def plot_roi_values_brain(
    values: np.ndarray,
    roi_names: Sequence[str],
    atlas_img: Any,
    labels_tsv: str | Path | None = None,
    title: str = "Pearson r per ROI",
    symmetric: bool = True,
) -> Figure:
    """The atlas coloured by one value per ROI (nilearn ``plot_stat_map``, three cuts).

    Parameters
    ----------
    values : ndarray, shape (n_rois,)
        E.g. the per-ROI Pearson r; NaN is drawn as 0.
    roi_names : sequence of str
    atlas_img : path or nibabel image
        Integer label image the ROIs come from.
    labels_tsv : path, optional
        ``index``/``name`` table of the labels.
    title : str
    symmetric : bool
        Colour scale symmetric around 0 (diverging) or from 0 up.

    Returns
    -------
    Figure
    """
    from nilearn import plotting

    from brainxl.derivatives import parcel_image

    v = np.nan_to_num(np.asarray(values, dtype=np.float32))
    img = parcel_image(v, atlas_img, roi_names, labels_tsv)
    vmax = float(np.abs(v).max()) or 1.0
    fig = _figure(8, 3)
    plotting.plot_stat_map(
        img,
        bg_img=None,
        display_mode="ortho",
        cut_coords=None,
        figure=fig,
        title=title,
        colorbar=True,
        vmax=vmax,
        symmetric_cbar=symmetric,
        cmap="RdBu_r" if symmetric else "hot",
        black_bg=False,
        draw_cross=False,
        annotate=True,
    )
    return fig


def _montage_positions(ch_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Channels with a position in MNE's ``colin27_1005`` template and their (x, y, z)."""
    import mne

    montage = mne.channels.make_standard_montage("colin27_1005")
    pos = {k.lower(): v for k, v in montage.get_positions()["ch_pos"].items()}
    keep = [c for c in ch_names if c.lower() in pos]
    return keep, np.array([pos[c.lower()] for c in keep])


def plot_channel_weight_topomaps(
    weights: np.ndarray,
    ch_names: Sequence[str],
    roi_names: Sequence[str],
    max_rois: int = 8,
) -> Figure:
    """Scalp topography (MNE ``plot_topomap``) of each ROI's channel weights.

    Parameters
    ----------
    weights : ndarray, shape (n_rois, n_channels)
        E.g. NeuroBOLT's channel readout (:func:`neurobolt_channel_weights`).
    ch_names : sequence of str
        Standard 10-05 names (channels without a template position are left out).
    roi_names : sequence of str
    max_rois : int
        The ROIs with the largest total weight are drawn, at most this many.

    Returns
    -------
    Figure
    """
    import mne

    weights = np.asarray(weights, dtype=np.float64)
    keep, xyz = _montage_positions(ch_names)
    if len(keep) < 3:
        raise ValueError(
            f"only {len(keep)} of the channels {list(ch_names)[:6]}... have a standard "
            "scalp position; a topography needs at least 3"
        )
    idx = [list(ch_names).index(c) for c in keep]
    info = mne.create_info(keep, 100.0, "eeg")
    info.set_montage(
        mne.channels.make_dig_montage(ch_pos=dict(zip(keep, xyz)), coord_frame="head"),
        on_missing="ignore",
    )
    order = np.argsort(-np.abs(weights).sum(axis=1))[:max_rois]
    n = len(order)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(2.6 * cols, 2.6 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, r in zip(axes, order):
        w = weights[r, idx]
        lim = float(np.abs(w).max()) or 1.0
        mne.viz.plot_topomap(w, info, axes=ax, show=False, cmap="RdBu_r", vlim=(-lim, lim))
        ax.set_title(str(roi_names[r]), fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    dropped = len(ch_names) - len(keep)
    note = f" ({dropped} channels without a template position left out)" if dropped else ""
    fig.suptitle("Channel weights of each ROI's readout" + note, fontsize=10)
    return fig


def neurobolt_channel_weights(model: Any, ch_idx: Sequence[int]) -> np.ndarray | None:
    """Per-ROI channel weights of NeuroBOLT's channel readout (None without one).

    The readout gives each ROI ``rank`` feature directions and, per direction, a weight
    for every channel; the weight of channel ``c`` for ROI ``r`` shown here is the norm
    over directions, ``||A[c, r, :]||``, signed by the direction with the largest
    magnitude.

    Returns
    -------
    ndarray, shape (n_rois, n_channels) or None
    """
    import torch

    readout = getattr(model, "channel_readout", None)
    if readout is None or not hasattr(readout, "channels"):
        return None
    with torch.no_grad():
        a = readout.channels.detach().float().cpu().numpy()
    a = a[np.asarray(ch_idx, dtype=int) + 1]  # (C, R, K)
    norm = np.linalg.norm(a, axis=2)
    sign = np.sign(np.take_along_axis(a, np.abs(a).argmax(axis=2)[..., None], axis=2)[..., 0])
    return (norm * sign).T


def plot_power_spectra(
    pred: np.ndarray,
    true: np.ndarray | None,
    sfreq: float,
    names: Sequence[str],
    max_panels: int = 6,
) -> Figure:
    """Predicted against true power spectra (Welch), mean over channels and a few singles.

    Parameters
    ----------
    pred, true : ndarray, shape (n_times, n_channels)
        Electrophysiology (``true`` may be None: predictions only).
    sfreq : float
    names : sequence of str
    max_panels : int
        Single-channel panels after the mean panel.

    Returns
    -------
    Figure
    """
    from scipy.signal import welch

    nper = int(min(pred.shape[0], max(8, round(4 * sfreq))))
    f, pp = welch(pred, fs=sfreq, nperseg=nper, axis=0)
    pt = None if true is None else welch(true, fs=sfreq, nperseg=nper, axis=0)[1]
    chans = list(range(min(max_panels, pred.shape[1])))
    n = 1 + len(chans)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(3.2 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    panels = [("mean over channels", pp.mean(axis=1), None if pt is None else pt.mean(axis=1))]
    panels += [(str(names[c]), pp[:, c], None if pt is None else pt[:, c]) for c in chans]
    for ax, (title, a, b) in zip(axes, panels):
        ax.semilogy(f[1:], a[1:], color="tab:orange", label="predicted")
        if b is not None:
            ax.semilogy(f[1:], b[1:], color="k", lw=1, label="true")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Hz", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_prediction_timeseries(
    data: np.ndarray, times: np.ndarray, names: Sequence[str], max_series: int = 4
) -> Figure:
    """A few predicted time series (the ones with the largest variance), stacked.

    Parameters
    ----------
    data : ndarray, shape (n_times, n_series)
    times : ndarray, shape (n_times,)
        Seconds.
    names : sequence of str
    max_series : int

    Returns
    -------
    Figure
    """
    order = np.argsort(-np.nanvar(data, axis=0))[:max_series]
    fig = _figure(9, 1.5 * len(order) + 0.6)
    axes = np.atleast_1d(fig.subplots(len(order), 1, sharex=True))
    for ax, j in zip(axes, order):
        ax.plot(times, data[:, j], color="tab:blue", lw=1)
        ax.set_ylabel(str(names[j]), fontsize=8)
    axes[-1].set_xlabel("time from volume 0 (s)")
    fig.tight_layout()
    return fig


def insert_after(
    figures: Mapping[str, Figure], after: str, new: Mapping[str, Figure]
) -> dict[str, Figure]:
    """``figures`` with ``new`` placed right after ``after`` (at the end if absent)."""
    out: dict[str, Figure] = {}
    for name, fig in figures.items():
        out[name] = fig
        if name == after:
            out.update(new)
    out.update({k: v for k, v in new.items() if k not in out})
    return out


def write_html_report(
    path: str | Path,
    figures: Mapping[str, Figure],
    title: str,
    lines: Sequence[str] = (),
) -> Path:
    """A self-contained HTML page: a title, a few lines of text, the figures as PNGs."""
    e = html.escape
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title></head><body style='font-family:sans-serif'>",
        f"<h1>{e(title)}</h1>",
    ]
    h += [f"<p>{e(line)}</p>" for line in lines]
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        h += [f"<h2>{e(name)}</h2>", f'<img alt="{e(name)}" src="data:image/png;base64,{b64}">']
    h.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(h))
    return path
