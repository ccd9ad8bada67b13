"""The reference baseline: ridge regression from EEG/MEG band power to BOLD.

Features are log band powers per channel over the same window the models see (the
``window_s`` seconds of electrophysiology ending at each TR). Because the haemodynamic
response peaks 4-6 s after neural activity, the window can be split into ``n_segments``
consecutive sub-windows whose band powers become separate features: this is a
finite-impulse-response (FIR) model of the HRF built only from data inside the window
(no look-ahead, no data from other TRs' windows).

:class:`RidgeBaseline` standardises features with training statistics only and picks the
ridge penalty by cross-validation across training subjects only (leave-one-subject-out
inside the training set), so a held-out subject never influences any fitted quantity.
Pure numpy/scipy: the ridge solution uses one SVD per fit for the whole alpha grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainxl.metrics import FoldSummary, evaluate_subject, pearson_per_roi, summarize

DEFAULT_BANDS: tuple[tuple[float, float], ...] = ((1, 4), (4, 8), (8, 13), (13, 30), (30, 45))
"""delta, theta, alpha, beta, gamma (Hz), each ``[low, high)``."""

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 6, 17))


# --------------------------------------------------------------------------- features
def _band_masks(freqs: np.ndarray, bands: Sequence[tuple[float, float]]) -> list[np.ndarray]:
    masks = []
    for lo, hi in bands:
        if not 0 <= lo < hi:
            raise ValueError(f"band ({lo}, {hi}) Hz is invalid: need 0 <= low < high")
        m = (freqs >= lo) & (freqs < hi)
        if not m.any():
            raise ValueError(
                f"band ({lo}, {hi}) Hz contains no frequency bin (resolution "
                f"{freqs[1] - freqs[0]:.2f} Hz, Nyquist {freqs[-1]:.1f} Hz): use longer "
                "windows/fewer segments or drop the band"
            )
        masks.append(m)
    return masks


def _segment_layout(w: int, sfreq: float, n_segments: int) -> tuple[int, int]:
    """Samples per sub-window and per Welch frame (2 s, or the sub-window if shorter)."""
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    seg_len = w // n_segments
    if seg_len < 8:
        raise ValueError(
            f"window of {w} samples split into {n_segments} segments leaves {seg_len} samples "
            "each; use fewer segments or longer windows"
        )
    return seg_len, int(min(seg_len, round(2 * sfreq)))


def band_power_windows(
    windows: np.ndarray,
    sfreq: float,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    n_segments: int = 1,
    chunk: int = 128,
) -> np.ndarray:
    """Log10 band power of each channel in each window (Welch, Hann, 2 s segments).

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_channels, n_samples)
        Electrophysiology windows (µV for EEG), e.g. the reader's ``ephys`` stacked.
    sfreq : float
        Sampling rate in Hz.
    bands : sequence of (low, high)
        Frequency bands in Hz, each ``[low, high)``.
    n_segments : int
        Split each window into this many consecutive equal sub-windows (HRF lag bins,
        earliest first) and compute band powers of each.
    chunk : int
        Windows processed at once (bounds memory).

    Returns
    -------
    features : ndarray, shape (n_windows, n_segments * n_channels * n_bands), float64
        ``features.reshape(n_windows, n_segments, n_channels, n_bands)`` recovers the axes:
        ``log10(power in µV²)`` with power the integral of the PSD over the band.
    """
    from scipy.signal import welch

    windows = np.asarray(windows)
    if windows.ndim != 3:
        raise ValueError(
            f"windows must be shaped (n_windows, n_channels, n_samples), got {windows.shape}"
        )
    n, c, w = windows.shape
    seg_len, nperseg = _segment_layout(w, sfreq, n_segments)
    freqs = np.fft.rfftfreq(nperseg, d=1.0 / sfreq)
    masks = _band_masks(freqs, bands)
    df = freqs[1] - freqs[0]
    out = np.empty((n, n_segments, c, len(bands)), dtype=np.float64)
    for i0 in range(0, n, chunk):
        x = np.asarray(windows[i0 : i0 + chunk], dtype=np.float64)
        # Drop the remainder at the start so the most recent samples are always used.
        x = x[..., w - seg_len * n_segments :].reshape(x.shape[0], c, n_segments, seg_len)
        _, psd = welch(x, fs=sfreq, nperseg=nperseg, axis=-1)  # (b, c, n_segments, n_freqs)
        for b, m in enumerate(masks):
            power = psd[..., m].sum(axis=-1) * df
            out[i0 : i0 + chunk, :, :, b] = np.log10(np.maximum(power, 1e-20)).transpose(0, 2, 1)
    return out.reshape(n, -1)


def band_power_features(
    ephys: np.ndarray,
    sfreq: float,
    tr_times: np.ndarray,
    window_s: float,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    n_segments: int = 1,
    t_start: float = 0.0,
) -> np.ndarray:
    """Log band power over the window ending at each TR of one continuous recording.

    Parameters
    ----------
    ephys : ndarray, shape (n_channels, n_times)
        Electrophysiology in µV; sample ``i`` is at ``t_start + i / sfreq`` seconds
        (``t_start = -lead_in`` for a :class:`shards.ingest.recording.Recording`).
    sfreq : float
    tr_times : ndarray, shape (n_trs,)
        Times (s) at which the windows end (TR onsets, minus any lag).
    window_s : float
        Window length in seconds (the reader's ``window_s``).
    bands, n_segments
        See :func:`band_power_windows`.
    t_start : float

    Returns
    -------
    features : ndarray, shape (n_trs, n_segments * n_channels * n_bands)

    Raises
    ------
    ValueError
        A TR has no complete window (select TRs with :func:`brainxl.metrics.full_window_mask`).
    """
    ephys = np.asarray(ephys)
    if ephys.ndim != 2:
        raise ValueError(f"ephys must be (n_channels, n_times), got shape {ephys.shape}")
    tr_times = np.asarray(tr_times, dtype=np.float64).ravel()
    w = int(round(window_s * sfreq))
    ends = np.round((tr_times - t_start) * sfreq).astype(np.int64)
    starts = ends - w
    bad = np.flatnonzero((starts < 0) | (ends > ephys.shape[1]))
    if bad.size:
        raise ValueError(
            f"{bad.size} TR(s) (first at {tr_times[bad[0]]:.2f} s) have no complete "
            f"{window_s} s window in a recording covering {t_start:.2f} to "
            f"{t_start + ephys.shape[1] / sfreq:.2f} s; keep only TRs with a full window "
            "(brainxl.metrics.full_window_mask)"
        )
    if starts.size == 0:
        return np.empty((0, ephys.shape[0] * len(bands) * n_segments))
    return _band_power_shared_frames(ephys, sfreq, starts, w, bands, n_segments)


def _band_power_shared_frames(
    ephys: np.ndarray,
    sfreq: float,
    starts: np.ndarray,
    w: int,
    bands: Sequence[tuple[float, float]],
    n_segments: int,
) -> np.ndarray:
    """Same result as :func:`band_power_windows` on the cut windows, but each Welch frame
    is transformed once: windows of successive TRs overlap and share most frames."""
    from scipy.signal import welch

    seg_len, nperseg = _segment_layout(w, sfreq, n_segments)
    step = nperseg - nperseg // 2  # scipy's default overlap is nperseg // 2
    n_frames = (seg_len - nperseg) // step + 1
    freqs = np.fft.rfftfreq(nperseg, d=1.0 / sfreq)
    masks = _band_masks(freqs, bands)
    df = freqs[1] - freqs[0]
    first = w - seg_len * n_segments
    rel = first + np.arange(n_segments)[:, None] * seg_len + np.arange(n_frames)[None, :] * step
    frame_starts = starts[:, None, None] + rel[None]  # (n_trs, n_segments, n_frames)
    uniq, inv = np.unique(frame_starts, return_inverse=True)
    c = ephys.shape[0]
    frame_power = np.empty((uniq.size, c, len(bands)))
    offs = np.arange(nperseg)
    for i0 in range(0, uniq.size, 64):
        idx = uniq[i0 : i0 + 64, None] + offs[None, :]  # (b, nperseg)
        frames = np.asarray(ephys[:, idx], dtype=np.float64).transpose(1, 0, 2)  # (b, C, n)
        _, psd = welch(frames, fs=sfreq, nperseg=nperseg, axis=-1)
        for b, m in enumerate(masks):
            frame_power[i0 : i0 + 64, :, b] = psd[..., m].sum(axis=-1) * df
    # Welch averages the frame periodograms; band power is linear in the PSD, so average it.
    power = frame_power[inv.reshape(frame_starts.shape)].mean(axis=2)  # (n, S, C, n_bands)
    return np.log10(np.maximum(power, 1e-20)).reshape(len(starts), -1)


# --------------------------------------------------------------------------- ridge
@dataclass
class Standardizer:
    """Feature-wise z-scoring with statistics from the data it was fitted on.

    Attributes
    ----------
    mean : ndarray, shape (n_features,)
    scale : ndarray, shape (n_features,)
        Standard deviation (1 where a feature is constant).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        """Statistics of ``X`` (n_samples, n_features)."""
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
        return cls(mean=mean, scale=scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale``, shape unchanged."""
        return (X - self.mean) / self.scale


def _ridge_svd(
    X: np.ndarray, Y: np.ndarray, solver: str = "svd"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, V, U^T Y)`` of ``X = U diag(s) V^T``; ``solver="gram"`` gets them from the
    eigendecomposition of ``X^T X`` (much faster for tall ``X``; directions with
    ``s < 1e-7 max(s)`` are dropped)."""
    if solver == "gram":
        evals, V = np.linalg.eigh(X.T @ X)
        s = np.sqrt(np.clip(evals, 0.0, None))
        keep = s > 1e-7 * max(float(s.max()), 1e-300)
        s, V = s[keep], V[:, keep]
        return s, V, (V.T @ (X.T @ Y)) / s[:, None]
    U, s, Vt = np.linalg.svd(X, full_matrices=False)
    return s, Vt.T, U.T @ Y


def _ridge_coef(s: np.ndarray, V: np.ndarray, UtY: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Coefficients (F, R) for per-target penalties ``alpha`` (R,)."""
    d = s[:, None] / (s[:, None] ** 2 + alpha[None, :])
    return V @ (d * UtY)


def _as_2d_list(arrs: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    out = []
    for i, a in enumerate(arrs):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"{what}[{i}] must be 2-D (n_samples, n_columns), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{what}[{i}] contains NaN or infinite values")
        out.append(a)
    return out


class RidgeBaseline:
    """Ridge regression with training-only standardisation and subject-wise CV.

    Parameters
    ----------
    alphas : sequence of float
        Penalty grid (features are z-scored, so the scale is comparable across datasets).
    per_target_alpha : bool
        Choose a penalty per ROI (default) or one shared penalty.
    n_folds_within : int
        Folds (contiguous blocks in time) used when only one training subject is given.
    solver : {"svd", "gram"}
        How the ridge path is computed: an SVD of the design (default) or the
        eigendecomposition of its Gram matrix (same solution, faster for many rows).

    Attributes (after :meth:`fit`)
    -------------------------------
    scaler : Standardizer
        Fitted on the training rows only.
    coef : ndarray, shape (n_features, n_rois)
    intercept : ndarray, shape (n_rois,)
    alpha : ndarray, shape (n_rois,)
        Chosen penalty per ROI.
    cv_scores : ndarray, shape (n_alphas, n_rois)
        Mean validation Pearson r per penalty and ROI.
    cv_scheme : str
        ``"leave-one-subject-out (k subjects)"`` or ``"k contiguous blocks of 1 subject"``.
    """

    def __init__(
        self,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        per_target_alpha: bool = True,
        n_folds_within: int = 5,
        solver: str = "svd",
    ) -> None:
        if solver not in ("svd", "gram"):
            raise ValueError(f"ridge solver must be 'svd' or 'gram', got {solver!r}")
        self.solver = solver
        self.alphas = np.asarray(alphas, dtype=np.float64)
        if self.alphas.ndim != 1 or self.alphas.size == 0 or (self.alphas <= 0).any():
            raise ValueError(f"alphas must be a non-empty list of positive numbers, got {alphas}")
        self.per_target_alpha = per_target_alpha
        self.n_folds_within = n_folds_within
        self.scaler: Standardizer | None = None
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.alpha: np.ndarray | None = None
        self.cv_scores: np.ndarray | None = None
        self.cv_scheme = ""

    def _folds(self, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n = int(offsets[-1])
        if len(sizes) >= 2:
            self.cv_scheme = f"leave-one-subject-out ({len(sizes)} training subjects)"
            blocks = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(sizes))]
        else:
            k = max(2, min(self.n_folds_within, n // 4))
            self.cv_scheme = f"{k} contiguous blocks of 1 training subject"
            blocks = np.array_split(np.arange(n), k)
        all_idx = np.arange(n)
        return [(np.setdiff1d(all_idx, b), b) for b in blocks]

    def fit(self, X_list: Sequence[np.ndarray], Y_list: Sequence[np.ndarray]) -> RidgeBaseline:
        """Fit on training subjects.

        Parameters
        ----------
        X_list : sequence of ndarray, each shape (n_samples_i, n_features)
            Features, one array per training subject.
        Y_list : sequence of ndarray, each shape (n_samples_i, n_rois)
            BOLD targets, paired with ``X_list``.

        Returns
        -------
        self
        """
        Xs = _as_2d_list(X_list, "X_list")
        Ys = _as_2d_list(Y_list, "Y_list")
        if not Xs or len(Xs) != len(Ys):
            raise ValueError(
                f"need one Y per X and at least one subject; got {len(Xs)} X and {len(Ys)} Y"
            )
        for i, (x, y) in enumerate(zip(Xs, Ys)):
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"subject {i}: X has {x.shape[0]} rows but Y has {y.shape[0]}")
            if x.shape[1] != Xs[0].shape[1] or y.shape[1] != Ys[0].shape[1]:
                raise ValueError(f"subject {i}: feature/ROI count differs from subject 0")
        X = np.concatenate(Xs)
        Y = np.concatenate(Ys)
        if X.shape[0] < 4:
            raise ValueError(f"need at least 4 training samples, got {X.shape[0]}")
        n_alpha, n_roi = self.alphas.size, Y.shape[1]
        scores = np.zeros((n_alpha, n_roi))
        counts = np.zeros((n_alpha, n_roi))
        for tr_idx, va_idx in self._folds([x.shape[0] for x in Xs]):
            sc = Standardizer.fit(X[tr_idx])
            y_mean = Y[tr_idx].mean(axis=0)
            s, V, UtY = _ridge_svd(sc.transform(X[tr_idx]), Y[tr_idx] - y_mean, self.solver)
            Xva = sc.transform(X[va_idx])
            for a_i, a in enumerate(self.alphas):
                W = _ridge_coef(s, V, UtY, np.full(n_roi, a))
                r = pearson_per_roi(Xva @ W + y_mean, Y[va_idx])
                ok = np.isfinite(r)
                scores[a_i, ok] += r[ok]
                counts[a_i, ok] += 1
        with np.errstate(invalid="ignore"):
            self.cv_scores = np.where(counts > 0, scores / np.maximum(counts, 1), np.nan)
        filled = np.where(np.isfinite(self.cv_scores), self.cv_scores, -np.inf)
        if self.per_target_alpha:
            best = filled.argmax(axis=0)
            best[~np.isfinite(self.cv_scores).any(axis=0)] = n_alpha // 2
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                per_alpha = np.nanmean(self.cv_scores, axis=1)
            ok = np.isfinite(per_alpha)
            best_shared = int(np.nanargmax(per_alpha)) if ok.any() else n_alpha // 2
            best = np.full(n_roi, best_shared)
        self.alpha = self.alphas[best]
        self.scaler = Standardizer.fit(X)
        self.intercept = Y.mean(axis=0)
        s, V, UtY = _ridge_svd(self.scaler.transform(X), Y - self.intercept, self.solver)
        self.coef = _ridge_coef(s, V, UtY, self.alpha)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict BOLD.

        Parameters
        ----------
        X : ndarray, shape (n_samples, n_features)

        Returns
        -------
        Y : ndarray, shape (n_samples, n_rois)
        """
        if self.coef is None or self.scaler is None or self.intercept is None:
            raise ValueError("RidgeBaseline.predict() called before fit()")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.coef.shape[0]:
            raise ValueError(
                f"X has shape {X.shape}, expected (n_samples, {self.coef.shape[0]}) as in fit()"
            )
        return self.scaler.transform(X) @ self.coef + self.intercept


# --------------------------------------------------------------------------- reader windows
@dataclass
class SubjectFeatures:
    """Band-power features and BOLD targets of one subject, rows ordered in time.

    Attributes
    ----------
    subject : str
    X : ndarray, shape (n_samples, n_features)
    Y : ndarray, shape (n_samples, n_rois)
    tr_index : ndarray of int, shape (n_samples,)
    """

    subject: str
    X: np.ndarray
    Y: np.ndarray
    tr_index: np.ndarray


def _iter_samples(samples: Iterable[Mapping[str, Any]]) -> Iterable[tuple[Any, ...]]:
    """Yield (subject, tr_index, key, ephys (C, W), bold (R,)) from samples or batches."""
    for s in samples:
        ephys = np.asarray(s["ephys"], dtype=np.float32)
        bold = np.asarray(s["bold"], dtype=np.float64)
        if ephys.ndim == 2:
            subs, trs, keys = [s["subject"]], [s.get("tr_index", -1)], [s.get("key", "")]
            ephys, bold = ephys[None], bold[None]
        elif ephys.ndim == 3:
            b = ephys.shape[0]
            subs = list(s["subject"])
            trs = list(np.asarray(s.get("tr_index", np.full(b, -1))).ravel())
            keys = list(s.get("key", [""] * b))
        else:
            raise ValueError(f"sample 'ephys' must be (C, W) or (B, C, W), got {ephys.shape}")
        if bold.ndim != 2 or bold.shape[0] != ephys.shape[0]:
            raise ValueError(
                f"sample 'bold' has shape {bold.shape}; the ridge baseline needs one BOLD "
                "frame per window: set data.reader.n_targets=1"
            )
        for i in range(ephys.shape[0]):
            yield str(subs[i]), int(trs[i]), str(keys[i]), ephys[i], bold[i]


def features_from_windows(
    samples: Iterable[Mapping[str, Any]],
    sfreq: float,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    n_segments: int = 1,
    chunk: int = 256,
) -> dict[str, SubjectFeatures]:
    """Band-power features from the reader's windows, grouped by subject.

    Parameters
    ----------
    samples : iterable of dict
        Reader samples with ``ephys`` (C, W) µV, ``bold`` (R,), ``subject``, ``tr_index``
        (and optionally ``key``, the recording); batched dicts with a leading batch axis
        are accepted too. Numpy arrays or CPU torch tensors.
    sfreq : float
        Sampling rate of ``ephys`` (the dataset's ``sfreq``).
    bands, n_segments
        See :func:`band_power_windows`.

    Returns
    -------
    dict of subject to SubjectFeatures
        Rows sorted by (recording key, tr_index).
    """
    per: dict[str, dict[str, list[Any]]] = {}
    buf: list[np.ndarray] = []
    owners: list[tuple[str, int, str, np.ndarray]] = []

    def flush() -> None:
        if not buf:
            return
        feats = band_power_windows(np.stack(buf), sfreq, bands, n_segments)
        for (sub, tr, key, bold), f in zip(owners, feats):
            d = per.setdefault(sub, {"X": [], "Y": [], "tr": [], "key": []})
            d["X"].append(f)
            d["Y"].append(bold)
            d["tr"].append(tr)
            d["key"].append(key)
        buf.clear()
        owners.clear()

    for sub, tr, key, ephys, bold in _iter_samples(samples):
        if buf and ephys.shape != buf[0].shape:
            raise ValueError(
                f"window of subject {sub} has shape {ephys.shape} but earlier ones "
                f"{buf[0].shape}; all windows must share channels and length"
            )
        buf.append(ephys)
        owners.append((sub, tr, key, bold))
        if len(buf) >= chunk:
            flush()
    flush()
    if not per:
        raise ValueError("no samples were given to features_from_windows()")
    out = {}
    for sub, d in per.items():
        order = sorted(range(len(d["tr"])), key=lambda i: (d["key"][i], d["tr"][i]))
        out[sub] = SubjectFeatures(
            subject=sub,
            X=np.stack(d["X"])[order],
            Y=np.stack(d["Y"])[order],
            tr_index=np.asarray(d["tr"], dtype=np.int64)[order],
        )
    return out


@dataclass
class RidgeBaselineResult:
    """Output of :func:`run_ridge_baseline`.

    Attributes
    ----------
    model : RidgeBaseline
    summary : FoldSummary
        Scores of the held-out subjects.
    predictions : dict of subject to (pred, true)
        Each ndarray of shape (n_samples, n_rois), rows in time order.
    train_subjects : list of str
    """

    model: RidgeBaseline
    summary: FoldSummary
    predictions: dict[str, tuple[np.ndarray, np.ndarray]]
    train_subjects: list[str] = field(default_factory=list)


def run_ridge_baseline(
    train_samples: Iterable[Mapping[str, Any]],
    test_samples: Iterable[Mapping[str, Any]],
    sfreq: float,
    roi_names: Sequence[str],
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    n_segments: int = 4,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    noise_ceilings: Mapping[str, np.ndarray | dict[str, float] | None] | None = None,
) -> RidgeBaselineResult:
    """Fit the band-power ridge baseline on training subjects and score held-out ones.

    Parameters
    ----------
    train_samples, test_samples : iterable of dict
        Reader windows (see :func:`features_from_windows`) of the training and the
        held-out subjects; a subject in both is an error (leakage).
    sfreq : float
    roi_names : sequence of str, length n_rois
    bands : sequence of (low, high)
    n_segments : int
        HRF lag bins per window (default 4: a 16 s window gives 4 s bins).
    alphas : sequence of float
    noise_ceilings : dict of subject to ceiling, optional
        Per held-out subject, as accepted by :func:`brainxl.metrics.evaluate_subject`.

    Returns
    -------
    RidgeBaselineResult
    """
    train = features_from_windows(train_samples, sfreq, bands, n_segments)
    test = features_from_windows(test_samples, sfreq, bands, n_segments)
    return fit_and_score(train, test, roi_names, alphas, noise_ceilings)


def features_from_recordings(
    recordings: Iterable[Any],
    window_s: float,
    lag_s: float = 0.0,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
    n_segments: int = 1,
) -> dict[str, SubjectFeatures]:
    """Band-power features of whole recordings (faster than cutting windows first).

    Parameters
    ----------
    recordings : iterable of shards.ingest.recording.Recording
        Anything with ``subject``, ``ephys`` (C, T) µV, ``sfreq``, ``bold`` (R, n_trs),
        ``tr``, ``lead_in`` and ``roi_names``; runs of a subject are concatenated.
    window_s, lag_s : float
        The reader's window: TR ``k`` uses ``[k*tr - lag_s - window_s, k*tr - lag_s)``.
        TRs without a full window are dropped (as the reader does).
    bands, n_segments
        See :func:`band_power_windows`.

    Returns
    -------
    dict of subject to SubjectFeatures
        ``tr_index`` counts the kept TRs of each run.
    """
    from brainxl.metrics import full_window_mask

    parts: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for rec in recordings:
        n_trs = rec.bold.shape[1]
        trs = np.flatnonzero(full_window_mask(n_trs, rec.tr, window_s, rec.lead_in, lag_s))
        X = band_power_features(
            rec.ephys, rec.sfreq, trs * rec.tr - lag_s, window_s, bands, n_segments,
            t_start=-rec.lead_in,
        )  # fmt: skip
        parts.setdefault(str(rec.subject), []).append((X, rec.bold.T[trs].astype(np.float64), trs))
    if not parts:
        raise ValueError("no recordings were given to features_from_recordings()")
    return {
        sub: SubjectFeatures(
            subject=sub,
            X=np.concatenate([p[0] for p in ps]),
            Y=np.concatenate([p[1] for p in ps]),
            tr_index=np.concatenate([p[2] for p in ps]),
        )
        for sub, ps in parts.items()
    }


def fit_and_score(
    train: Mapping[str, SubjectFeatures],
    test: Mapping[str, SubjectFeatures],
    roi_names: Sequence[str],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    noise_ceilings: Mapping[str, np.ndarray | dict[str, float] | None] | None = None,
) -> RidgeBaselineResult:
    """Fit :class:`RidgeBaseline` on ``train`` subjects and score each ``test`` subject.

    Parameters
    ----------
    train, test : dict of subject to SubjectFeatures
        Disjoint subjects (a subject in both is an error: leakage).
    roi_names : sequence of str, length n_rois
    alphas : sequence of float
    noise_ceilings : dict of subject to ceiling, optional

    Returns
    -------
    RidgeBaselineResult
    """
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(
            f"subjects {overlap} are in both the training and the held-out windows; "
            "exclude held-out subjects from training (data.reader.exclude_subjects)"
        )
    if not train or not test:
        raise ValueError(f"need training and held-out subjects, got {len(train)} and {len(test)}")
    subs = sorted(train)
    model = RidgeBaseline(alphas=alphas).fit([train[s].X for s in subs], [train[s].Y for s in subs])
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    results = []
    ceilings = noise_ceilings or {}
    for sub in sorted(test):
        f = test[sub]
        pred = model.predict(f.X)
        preds[sub] = (pred, f.Y)
        results.append(evaluate_subject(sub, pred, f.Y, roi_names, ceilings.get(sub)))
    return RidgeBaselineResult(
        model=model, summary=summarize(results), predictions=preds, train_subjects=subs
    )


# --------------------------------------------------------------------------- multi-frame
#: Causal lags (in TRs) of the EEG/MEG -> fMRI multi-frame ridge: the band power of the
#: chunk ending at frame ``f`` and of the 7 before it (16 s, the HRF's support).
EEG2FMRI_LAGS: tuple[int, ...] = tuple(range(8))
#: Lags of the fMRI -> EEG/MEG ridge: BOLD frames from 5 TRs after to 2 TRs before the
#: chunk whose envelopes are predicted (BOLD follows neural activity by 4-6 s).
FMRI2EEG_LAGS: tuple[int, ...] = tuple(range(-5, 3))


def frame_band_power(
    windows: np.ndarray,
    sfreq: float,
    n_frames: int,
    bands: Sequence[tuple[float, float]] = DEFAULT_BANDS,
) -> np.ndarray:
    """Log10 band power of each TR chunk of each window.

    Parameters
    ----------
    windows : ndarray, shape (n_windows, n_channels, n_frames * S)
        Electrophysiology windows (sensors or parcels), ``S`` samples per TR.
    sfreq : float
    n_frames : int
        TR chunks per window.
    bands : sequence of (low, high)

    Returns
    -------
    ndarray, shape (n_windows, n_frames, n_channels * n_bands)
        Chunk ``f`` covers samples ``[f * S, (f + 1) * S)`` (Welch, one Hann segment of
        at most 2 s per chunk, as :func:`band_power_windows`).
    """
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.shape[-1] % n_frames:
        raise ValueError(
            f"windows must be (n_windows, n_channels, n_frames * S) with n_frames={n_frames}, "
            f"got {windows.shape}"
        )
    n, c, t = windows.shape
    s = t // n_frames
    chunks = windows.reshape(n, c, n_frames, s).transpose(0, 2, 1, 3).reshape(n * n_frames, c, s)
    return band_power_windows(chunks, sfreq, bands, 1).reshape(n, n_frames, -1)


def lagged_frames(frames: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """Stack each frame's features with those of other frames of the same window.

    Parameters
    ----------
    frames : ndarray, shape (n_windows, n_frames, n_features)
    lags : sequence of int
        Frame offsets: row ``(i, f)`` gets the features of frame ``f - lag`` for each lag
        (positive = earlier frames). Frames outside the window are NaN (never data from
        another window: the models see one window too).

    Returns
    -------
    ndarray, shape (n_windows * n_frames, len(lags) * n_features)
        Rows window-major, frame-minor (the order of ``evaluation.series``).
    """
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (n_windows, n_frames, n_features), got {frames.shape}")
    n, F, K = frames.shape
    out = np.full((n, F, len(lags), K), np.nan)
    for j, lag in enumerate(lags):
        lo, hi = max(0, lag), min(F, F + lag)  # output frames whose source f - lag is inside
        if lo < hi:
            out[:, lo:hi, j] = frames[:, lo - lag : hi - lag]
    return out.reshape(n * F, -1)


class MultiFrameRidge:
    """Ridge from per-frame features of a window to every frame of the window.

    The multi-frame form of :class:`RidgeBaseline` for models that predict ``F`` frames
    per window (SAMBA): row ``(window, f)`` uses the features of frames ``f - lag`` of
    the same window (:func:`lagged_frames`); features of frames outside the window are
    filled with their training mean (zero after standardisation). One set of weights is
    shared by all frames; the penalty is chosen per output by leave-one-subject-out CV.

    With many channels (306 MEG sensors x 5 bands = 1530 features per frame, 12240 with
    8 lags) the ridge's eigendecompositions take hours on a laptop, so per-frame features
    beyond ``max_frame_features`` are first reduced to that many principal components
    (standardised features, PCA fitted on the training subjects' frames only; the
    held-out subject never shapes the basis).

    Parameters
    ----------
    lags : sequence of int
        Frame offsets (see :func:`lagged_frames`).
    alphas : sequence of float
    max_frame_features : int or None
        Largest per-frame feature count used as is (default 512: 64 EEG channels x 5
        bands stay exact); ``None`` never reduces.

    Attributes (after :meth:`fit`)
    -------------------------------
    reducer : sklearn Pipeline or None
        ``StandardScaler`` + ``PCA`` when the features were reduced.
    explained_variance : float or None
        Fraction of the standardised per-frame variance the kept components hold.
    """

    def __init__(
        self,
        lags: Sequence[int],
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        max_frame_features: int | None = 512,
    ) -> None:
        if not len(lags):
            raise ValueError("MultiFrameRidge needs at least one lag")
        if max_frame_features is not None and max_frame_features < 1:
            raise ValueError(f"max_frame_features must be >= 1 or None, got {max_frame_features}")
        self.lags = [int(x) for x in lags]
        self.max_frame_features = max_frame_features
        self.ridge = RidgeBaseline(alphas=alphas, solver="gram")
        self.fill: np.ndarray | None = None
        self.reducer: Any = None

    @property
    def explained_variance(self) -> float | None:
        """Share of the standardised per-frame variance the kept components hold."""
        if self.reducer is None:
            return None
        return float(self.reducer[-1].explained_variance_ratio_.sum())

    def _frames(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 3:
            raise ValueError(f"X must be (n_windows, n_frames, n_features), got {X.shape}")
        if self.reducer is None:
            return X
        n, f, k = X.shape
        return self.reducer.transform(X.reshape(n * f, k)).reshape(n, f, -1)

    def _design(self, X: np.ndarray) -> np.ndarray:
        Z = lagged_frames(self._frames(X), self.lags)
        assert self.fill is not None
        return np.where(np.isnan(Z), self.fill[None, :], Z)

    def fit(self, X_list: Sequence[np.ndarray], Y_list: Sequence[np.ndarray]) -> MultiFrameRidge:
        """Fit on training subjects.

        Parameters
        ----------
        X_list : sequence of ndarray, each shape (n_windows_i, n_frames, n_features)
        Y_list : sequence of ndarray, each shape (n_windows_i, n_frames, n_outputs)

        Returns
        -------
        self
        """
        if not X_list or len(X_list) != len(Y_list):
            raise ValueError(f"need one Y per X, got {len(X_list)} X and {len(Y_list)} Y")
        self.reducer = None
        k = int(np.shape(X_list[0])[-1])
        if self.max_frame_features is not None and k > self.max_frame_features:
            from sklearn.decomposition import PCA
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            rows = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1, k) for x in X_list])
            n_comp = min(self.max_frame_features, rows.shape[0])
            self.reducer = make_pipeline(
                StandardScaler(), PCA(n_components=n_comp, random_state=0)
            ).fit(rows)
        Z = [lagged_frames(self._frames(x), self.lags) for x in X_list]
        allz = np.concatenate(Z)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(allz, axis=0)
        self.fill = np.where(np.isfinite(fill), fill, 0.0)
        Z = [np.where(np.isnan(z), self.fill[None, :], z) for z in Z]
        Ys = [np.asarray(y, dtype=np.float64).reshape(-1, np.shape(y)[-1]) for y in Y_list]
        self.ridge.fit(Z, Ys)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """``X (n_windows, n_frames, n_features)`` -> ``(n_windows, n_frames, n_outputs)``."""
        if self.fill is None:
            raise ValueError("MultiFrameRidge.predict() called before fit()")
        X = np.asarray(X, dtype=np.float64)
        return self.ridge.predict(self._design(X)).reshape(X.shape[0], X.shape[1], -1)


def multiframe_features(
    samples: Iterable[Mapping[str, Any]],
    task: str,
    sfreq: float,
    n_frames: int,
    source_key: str = "ephys",
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-frame features and targets of reader windows, grouped by subject.

    Parameters
    ----------
    samples : iterable of dict
        Reader batches (or samples) with ``subject``, ``bold`` (R, F) and the
        electrophysiology under ``source_key`` (C, F * S); ``key`` and ``tr_index``
        order the windows as the model's evaluation does.
    task : {"eeg2fmri", "fmri2eeg"}
        ``eeg2fmri``: X = :func:`frame_band_power` of the electrophysiology, Y = BOLD.
        ``fmri2eeg``: X = BOLD frames, Y = :func:`brainxl.models.samba.band_envelopes`
        of the electrophysiology (alpha/beta/gamma per row and TR).
    sfreq : float
    n_frames : int
    source_key : {"ephys", "parcels"}

    Returns
    -------
    dict of subject -> (X (n_windows, F, K), Y (n_windows, F, R))
        Windows sorted by their ``key_tr<index>`` identifier.
    """
    import torch

    from brainxl.models.samba import band_envelopes

    if task not in ("eeg2fmri", "fmri2eeg"):
        raise ValueError(f"task must be 'eeg2fmri' or 'fmri2eeg', got {task!r}")
    per: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for batch in samples:
        ephys = np.asarray(batch[source_key], dtype=np.float32)
        bold = np.asarray(batch["bold"], dtype=np.float64)
        if ephys.ndim == 2:
            ephys, bold = ephys[None], bold[None]
            subs, keys, trs = [batch["subject"]], [batch.get("key", "")], [batch.get("tr_index", 0)]
        else:
            subs = list(batch["subject"])
            keys = list(batch.get("key", [""] * len(ephys)))
            trs = list(np.asarray(batch.get("tr_index", np.zeros(len(ephys)))).ravel())
        if bold.ndim != 3 or bold.shape[-1] != n_frames:
            raise ValueError(
                f"'bold' has shape {bold.shape}; the multi-frame ridge needs (B, R, {n_frames}): "
                f"set data.reader.n_targets={n_frames}"
            )
        bold_f = bold.transpose(0, 2, 1)  # (B, F, R)
        if task == "eeg2fmri":
            X, Y = frame_band_power(ephys, sfreq, n_frames), bold_f
        else:
            block = ephys.shape[-1] // n_frames
            env = band_envelopes(torch.from_numpy(ephys), sfreq, block).numpy()
            X, Y = bold_f, env.transpose(0, 2, 1).astype(np.float64)
        for i in range(len(X)):
            ident = f"{keys[i]}_tr{int(trs[i])}"
            per.setdefault(str(subs[i]), []).append((ident, X[i], Y[i]))
    if not per:
        raise ValueError("no samples were given to multiframe_features()")
    out = {}
    for sub, rows in per.items():
        rows.sort(key=lambda r: r[0])
        seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for ident, x, y in rows:
            seen.setdefault(ident, (x, y))
        out[sub] = (
            np.stack([v[0] for v in seen.values()]),
            np.stack([v[1] for v in seen.values()]),
        )
    return out


def run_multiframe_ridge(
    train_samples: Iterable[Mapping[str, Any]],
    test_samples: Iterable[Mapping[str, Any]],
    task: str,
    sfreq: float,
    n_frames: int,
    names: Sequence[str],
    source_key: str = "ephys",
    lags: Sequence[int] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    noise_ceilings: Mapping[str, np.ndarray | dict[str, float] | None] | None = None,
) -> RidgeBaselineResult:
    """Fit the multi-frame ridge on training subjects, score held-out ones.

    The scores are computed exactly as a SAMBA run's: every (window, frame) row of the
    held-out subject, per output column (BOLD ROI, or parcel/channel x band).

    Parameters
    ----------
    train_samples, test_samples : iterable of dict
        Reader batches of the training and of the held-out subjects (disjoint).
    task : {"eeg2fmri", "fmri2eeg"}
    sfreq : float
    n_frames : int
    names : sequence of str
        Output column names (ROIs, or ``"<parcel>:<band>"`` for fmri2eeg).
    source_key : {"ephys", "parcels"}
    lags : sequence of int, optional
        Default :data:`EEG2FMRI_LAGS` or :data:`FMRI2EEG_LAGS`.
    alphas : sequence of float
    noise_ceilings : dict of subject to ceiling, optional (eeg2fmri only)

    Returns
    -------
    RidgeBaselineResult
        ``model`` is the :class:`MultiFrameRidge`'s inner :class:`RidgeBaseline`;
        ``predictions`` hold ``(n_windows * F, n_outputs)`` rows.
    """
    if lags is None:
        lags = EEG2FMRI_LAGS if task == "eeg2fmri" else FMRI2EEG_LAGS
    train = multiframe_features(train_samples, task, sfreq, n_frames, source_key)
    test = multiframe_features(test_samples, task, sfreq, n_frames, source_key)
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"subjects {overlap} are in both the training and the held-out windows")
    subs = sorted(train)
    model = MultiFrameRidge(lags, alphas).fit(
        [train[s][0] for s in subs], [train[s][1] for s in subs]
    )
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    results = []
    ceilings = noise_ceilings or {}
    for sub in sorted(test):
        X, Y = test[sub]
        pred = model.predict(X).reshape(-1, Y.shape[-1])
        true = Y.reshape(-1, Y.shape[-1])
        preds[sub] = (pred, true)
        results.append(evaluate_subject(sub, pred, true, list(names), ceilings.get(sub)))
    return RidgeBaselineResult(
        model=model.ridge, summary=summarize(results), predictions=preds, train_subjects=subs
    )
