"""Whole-recording inference with a trained run (``brainxl predict``).

A :class:`distrib.trained_run.TrainedRun` is a run's model with its best-validation (or
final) weights, the channel/ROI lists of its shards and the normalisation statistics of
its TRAINING subjects. :func:`predict_recording` cuts every window of a :class:`RecordingInput` the
reader would cut (one per TR that has a full electrophysiology window), predicts them in
batches and stitches the outputs into time series: one BOLD frame per TR (NeuroBOLT), or
overlapping multi-frame/electrophysiology windows averaged (SAMBA).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from brainxl.distrib.trained_run import TrainedRun


@dataclass
class RecordingInput:
    """One recording to predict from: electrophysiology, BOLD, or both.

    Attributes
    ----------
    key : str
        ``sub-01_task-rest_run-1`` (BIDS entities of the source).
    entities : dict of str to str
        ``subject``, ``session``, ``task``, ``run`` (``""`` when absent).
    source : str
        The file named in messages (the electrophysiology or the BOLD file).
    tr : float
        Repetition time (s): the TR grid predictions are made on.
    sfreq : float
        Electrophysiology rate (Hz), the run's rate.
    lead_in : float
        Seconds of electrophysiology before volume 0.
    ephys : ndarray, shape (n_channels, n_times) or None
        Preprocessed sensors in stored units (µV for EEG).
    ch_names : list of str
    parcels : ndarray, shape (n_parcels, n_times) or None
    parcel_names : list of str
    bold : ndarray, shape (n_rois, n_trs) or None
        Observed BOLD (the model's input for fMRI -> EEG, the truth for EEG -> fMRI).
    roi_names : list of str
    n_trs : int or None
        Volumes of the run (None: as many as the electrophysiology covers).
    files : dict of str to str
        Which files the data came from.
    notes : list of str
        What was inferred or dropped (reported with the outputs).
    """

    key: str
    entities: dict[str, str]
    source: str
    tr: float
    sfreq: float
    lead_in: float = 0.0
    ephys: np.ndarray | None = None
    ch_names: list[str] = field(default_factory=list)
    parcels: np.ndarray | None = None
    parcel_names: list[str] = field(default_factory=list)
    bold: np.ndarray | None = None
    roi_names: list[str] = field(default_factory=list)
    n_trs: int | None = None
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.entities.get("subject", "")

    @classmethod
    def from_recording(cls, rec: Any) -> RecordingInput:
        """Wrap a :class:`shards.ingest.recording.Recording` (electrophysiology + BOLD)."""
        ents = {"subject": rec.subject, "session": rec.session, "task": rec.task, "run": rec.run}
        return cls(
            key=rec.key,
            entities=ents,
            source=rec.source_files.get("ephys", rec.key),
            tr=float(rec.tr),
            sfreq=float(rec.sfreq),
            lead_in=float(rec.lead_in),
            ephys=rec.ephys,
            ch_names=list(rec.ch_names),
            parcels=rec.parcels,
            parcel_names=list(rec.parcel_names),
            bold=rec.bold,
            roi_names=list(rec.roi_names),
            n_trs=int(rec.bold.shape[1]),
            files=dict(rec.source_files),
            notes=list(rec.assumptions),
        )


@dataclass
class Prediction:
    """The predictions for one recording.

    Attributes
    ----------
    key : str
    entities : dict of str to str
    task : str
        ``"eeg2fmri"`` (``data`` is BOLD) or ``"fmri2eeg"`` (``data`` is electrophysiology).
    data : ndarray, shape (n_times, n_series)
        EEG -> fMRI: one row per predicted volume; fMRI -> EEG: one row per sample.
    names : list of str
        One per column (ROIs, channels or parcels).
    times : ndarray, shape (n_times,)
        Seconds relative to volume 0 of the input.
    sfreq : float
        Rows per second (``1 / TR`` for BOLD).
    units : str
    volumes : ndarray of int, shape (n_volumes,)
        EEG -> fMRI: the volume index of each row; fMRI -> EEG: the TRs whose windows
        were predicted.
    true : ndarray, same shape as ``data``, or None
        The observed target on the same rows (when the input had it), same units.
    window_pred, window_true : ndarray, shape (n_windows, R) or (n_windows, R, F)
        Raw per-window model outputs and targets in the run's normalised units (scored
        like ``brainxl evaluate``); ``window_true`` is None without a target.
    window_trs : ndarray of int, shape (n_windows,)
        The TR each window ends at.
    source : str
    files : dict of str to str
    notes : list of str
    """

    key: str
    entities: dict[str, str]
    task: str
    data: np.ndarray
    names: list[str]
    times: np.ndarray
    sfreq: float
    units: str
    volumes: np.ndarray
    true: np.ndarray | None
    window_pred: np.ndarray
    window_true: np.ndarray | None
    window_trs: np.ndarray
    source: str
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.entities.get("subject", "")


def _stats_of(arrays: Sequence[np.ndarray], eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Pooled per-row mean and population std (as ``shards.stats.fold_statistics``)."""
    n = sum(a.shape[1] for a in arrays)
    s = np.sum([a.astype(np.float64).sum(axis=1) for a in arrays], axis=0)
    ss = np.sum([np.square(a.astype(np.float64)).sum(axis=1) for a in arrays], axis=0)
    mean = s / max(n, 1)
    std = np.sqrt(np.maximum(ss / max(n, 1) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, eps).astype(np.float32)


def normalisation(
    run: TrainedRun, modality: str, own: Sequence[np.ndarray], rows: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, std)`` the run applies to ``modality`` of a new recording (None: raw values).

    ``data.reader.ephys_norm`` / ``bold_norm`` = ``"fold"`` uses the run's training
    subjects' statistics (never the input's); ``"subject"`` is per-subject standardisation
    by definition, so the subject's own recordings (``own``) give it; ``"none"``: raw.
    ``rows`` selects the rows present in the input (channels a model reads by name).
    """
    reader = run.cfg.data.reader
    scope = reader.bold_norm if modality == "bold" else reader.ephys_norm
    if scope == "none":
        return None
    if scope == "subject":
        return _stats_of(own)
    stats = run.norm.get(modality)
    if stats is None:
        raise ValueError(
            f"{run.cfg.data.shards}: the training subjects have no {modality} statistics"
        )
    mean, std = stats
    if rows is not None:
        mean, std = mean[list(rows)], std[list(rows)]
    return mean, std


def _apply(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if stats is None:
        return x.astype(np.float32)
    return ((x - stats[0][:, None]) / stats[1][:, None]).astype(np.float32)


def _undo(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None, axis: int) -> np.ndarray:
    """Inverse of :func:`_apply` with rows along ``axis`` of ``x``."""
    if stats is None:
        return x
    shape = [1] * x.ndim
    shape[axis] = -1
    return x * stats[1].reshape(shape) + stats[0].reshape(shape)


def window_trs(
    n_trs: int, n_times: int, zero: int, tr: float, lag: float, sfreq: float, window: int, nt: int
) -> list[tuple[int, int]]:
    """``(k, end)`` for every TR ``k`` whose window ``[end - window, end)`` lies in the data.

    ``end`` is the array sample where the window of TR ``k`` ends (exclusive); TRs
    before ``nt - 1`` are skipped (their earlier BOLD frames do not exist), as in the reader.
    """
    from brainxl.shards.segments import tr_end_sample

    out = []
    for k in range(nt - 1, n_trs):
        end = tr_end_sample(k, tr, lag, sfreq) + zero
        if end > n_times:  # ends grow with k: no later TR fits either
            break
        if end - window >= 0:
            out.append((k, end))
    return out


def _check_rate(run: TrainedRun, rec: RecordingInput) -> None:
    if abs(rec.sfreq - run.sfreq) > 1e-6 * run.sfreq:
        raise ValueError(
            f"{rec.source}: electrophysiology at {rec.sfreq:g} Hz but the run reads "
            f"{run.sfreq:g} Hz; resample it to {run.sfreq:g} Hz (preprocess.sfreq)"
        )
    if run.tr is not None and abs(rec.tr - run.tr) > 1e-3 * run.tr:
        raise ValueError(
            f"{rec.source}: TR {rec.tr:g} s but the run was trained on TR {run.tr:g} s; "
            "predictions on another TR grid are not defined (supply data with the run's TR)"
        )


def match_channels(
    run: TrainedRun, names: Sequence[str], source: str, allow_missing: bool = False
) -> tuple[list[int], list[int], list[str]]:
    """Rows of the input and of the run for the channels both have.

    Returns
    -------
    input_rows, run_rows : list of int
        ``input[input_rows[i]]`` is the run's channel ``run_rows[i]`` (run order).
    notes : list of str
        Extra channels dropped; missing channels (only with ``allow_missing``).

    Raises
    ------
    ValueError
        When channels the run was trained on are missing (and not allowed, or the model
        reads a fixed channel list), naming them and the fix.
    """
    want = run.ch_names
    have = {n: i for i, n in enumerate(names)}
    missing = [c for c in want if c not in have]
    extra = [c for c in names if c not in set(want)]
    notes = (
        [f"dropped {len(extra)} channel(s) the run was not trained on: {extra}"] if extra else []
    )
    if missing:
        by_name = run.adapter.ch_idx is not None
        if not (allow_missing and by_name):
            fix = (
                "record them, or rename the recording's channels to these names "
                "(preprocess.rename_channels)"
            )
            if by_name:
                fix += "; or pass --allow-missing-channels to predict from the others"
            raise ValueError(
                f"{source}: {len(missing)} of the run's {len(want)} channels are missing: "
                f"{missing}; {fix} (they are never filled with zeros)"
            )
        notes.append(
            f"MISSING channels {missing}: predicted from the other {len(want) - len(missing)} "
            "channels (the model reads channels by name; nothing was zero-filled)"
        )
    run_rows = [i for i, c in enumerate(want) if c in have]
    return [have[want[i]] for i in run_rows], run_rows, notes


def overlap_average(parts: np.ndarray, ends: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Stitch windows into one series, averaging where they overlap.

    Parameters
    ----------
    parts : ndarray, shape (n_windows, n_series, length)
        Window ``w`` covers positions ``ends[w] - length .. ends[w] - 1``.
    ends : sequence of int
        Exclusive end position of each window (TRs for BOLD frames, samples for
        electrophysiology).

    Returns
    -------
    data : ndarray, shape (n_covered, n_series)
        The mean of every window covering each position, at the covered positions.
    positions : ndarray of int, shape (n_covered,)
    """
    length = parts.shape[2]
    start, stop = min(ends) - length, max(ends)
    total = np.zeros((parts.shape[1], stop - start))
    count = np.zeros(stop - start)
    for part, end in zip(parts, ends):
        total[:, end - length - start : end - start] += part
        count[end - length - start : end - start] += 1
    covered = count > 0
    return (total[:, covered] / count[covered]).T, np.arange(start, stop)[covered]


def _batches(n: int, batch_size: int) -> list[range]:
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def _run_batches(
    run: TrainedRun,
    make_batch: Callable[[range], dict[str, Any]],
    n: int,
    batch_size: int | None,
    adapter: Any,
    progress: Any,
) -> np.ndarray:
    """The model's outputs on windows ``0 .. n - 1``, ``batch_size`` (default: the run's
    ``train.batch_size``) at a time."""
    model = run.model
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    outs = []
    for idx in _batches(n, int(batch_size or run.cfg.train.batch_size)):
        batch = make_batch(idx)
        outs.append(model(**adapter.inputs(batch, dtype, device)).float().cpu().numpy())
        if progress is not None:
            progress.update(len(idx))
    return np.concatenate(outs, axis=0)


def predict_recording(
    run: TrainedRun,
    rec: RecordingInput,
    *,
    batch_size: int | None = None,
    allow_missing_channels: bool = False,
    own_stats: dict[str, Sequence[np.ndarray]] | None = None,
    progress: Any = None,
) -> Prediction:
    """Predict every window of one recording.

    Parameters
    ----------
    run : TrainedRun
    rec : RecordingInput
        Electrophysiology for EEG -> fMRI runs, BOLD for fMRI -> EEG runs.
    batch_size : int, optional
        Windows per forward pass (default: the run's ``train.batch_size``).
    allow_missing_channels : bool
        Predict without channels the run was trained on (models that read channels by
        name only); they are listed in ``notes``.
    own_stats : dict of modality to list of ndarray, optional
        All recordings of this subject per modality, for ``"subject"`` normalisation
        scopes (default: this recording alone).
    progress : tqdm-like, optional
        ``update(n)`` is called with the windows done.

    Returns
    -------
    Prediction
    """
    _check_rate(run, rec)
    if run.task == "eeg2fmri":
        return _predict_bold(run, rec, batch_size, allow_missing_channels, own_stats, progress)
    if run.task == "fmri2eeg":
        return _predict_ephys(run, rec, batch_size, allow_missing_channels, own_stats, progress)
    raise ValueError(f"{run.run_dir}: task {run.task!r} does not translate between modalities")


def _ephys_side(
    run: TrainedRun, rec: RecordingInput, allow_missing: bool, own: dict[str, Any]
) -> tuple[np.ndarray | None, Any, list[str], list[str]]:
    """The normalised electrophysiology of ``rec`` in run order, the adapter to use, the
    row names and notes (None data when the input has none)."""
    import dataclasses

    if run.modality == "parcels":
        if rec.parcels is None:
            return None, run.adapter, run.parcel_names, []
        if list(rec.parcel_names) != run.parcel_names:
            raise ValueError(
                f"{rec.source}: parcels {rec.parcel_names[:5]}... differ from the run's "
                f"{run.parcel_names[:5]}...; reconstruct the sources with the run's "
                "parcellation (source.parcellation)"
            )
        stats = normalisation(run, "parcels", own.get("parcels") or [rec.parcels])
        return _apply(rec.parcels, stats), run.adapter, run.parcel_names, []
    if rec.ephys is None:
        return None, run.adapter, run.ch_names, []
    rows_in, rows_run, notes = match_channels(run, rec.ch_names, rec.source, allow_missing)
    raw = rec.ephys[rows_in]
    subject_own = [a[rows_in] for a in own.get("ephys") or [rec.ephys]]
    stats = normalisation(run, "ephys", subject_own, rows_run)
    adapter = run.adapter
    if len(rows_run) != len(run.ch_names):
        adapter = dataclasses.replace(adapter, ch_idx=adapter.ch_idx[rows_run])
    return _apply(raw, stats), adapter, [run.ch_names[i] for i in rows_run], notes


def _bold_side(run: TrainedRun, rec: RecordingInput, own: dict[str, Any]) -> Any:
    if rec.bold is None:
        return None, None
    if list(rec.roi_names) != run.roi_names:
        raise ValueError(
            f"{rec.files.get('bold', rec.source)}: ROIs {list(rec.roi_names)[:6]}... differ "
            f"from the run's {run.roi_names[:6]}...; extract the BOLD with the run's atlas "
            "(bold.atlas / bold.roi_atlas / bold.desc)"
        )
    stats = normalisation(run, "bold", own.get("bold") or [rec.bold])
    return _apply(rec.bold, stats), stats


def _too_short(run: TrainedRun, rec: RecordingInput, what: str) -> ValueError:
    need = float(run.cfg.data.reader.window_s) + max(run.lag_s, 0.0)
    extra = ""
    if run.n_targets > 1:
        extra = f" and {run.n_targets} BOLD volumes ({run.n_targets} x TR {rec.tr:g} s)"
    return ValueError(
        f"{rec.source}: {what} has no complete window: one prediction needs {need:g} s of "
        f"electrophysiology ending at a volume (data.reader.window_s + lag_s){extra}; "
        "supply a longer recording"
    )


def _predict_bold(
    run: TrainedRun,
    rec: RecordingInput,
    batch_size: int | None,
    allow_missing: bool,
    own_stats: dict[str, Any] | None,
    progress: Any,
) -> Prediction:
    own = own_stats or {}
    sig, adapter, _, notes = _ephys_side(run, rec, allow_missing, own)
    if sig is None:
        side = "source parcels" if run.modality == "parcels" else "EEG/MEG"
        raise ValueError(
            f"{rec.source}: no {side} data; this run ({run.cfg.model.name}) predicts BOLD "
            f"from {side}"
        )
    bold, bold_stats = _bold_side(run, rec, own)
    zero = int(round(rec.lead_in * rec.sfreq))
    n_trs = rec.n_trs if rec.n_trs is not None else sys.maxsize  # no BOLD: all it covers
    W, nt = run.window, run.n_targets
    wins = window_trs(n_trs, sig.shape[1], zero, rec.tr, run.lag_s, rec.sfreq, W, nt)
    if not wins:
        raise _too_short(run, rec, f"{sig.shape[1] / rec.sfreq:.1f} s of electrophysiology")
    key = adapter.source_key
    sig_t = torch.from_numpy(sig)

    def make_batch(idx: range) -> dict[str, Any]:
        return {key: torch.stack([sig_t[:, wins[i][1] - W : wins[i][1]] for i in idx])}

    pred = _run_batches(run, make_batch, len(wins), batch_size, adapter, progress)
    trs = np.array([k for k, _ in wins])
    true_w = None
    if bold is not None:
        if nt == 1:
            true_w = np.stack([bold[:, k] for k in trs])
        else:
            true_w = np.stack([bold[:, k - nt + 1 : k + 1] for k in trs])
    # stitch: volume k gets every window's prediction of it, averaged
    frames = pred[:, :, None] if pred.ndim == 2 else pred  # (N, R, F) ending at TR k
    data, vols = overlap_average(frames, trs + 1)
    true = None if bold is None else bold[:, vols].T.astype(np.float64)
    scope = run.cfg.data.reader.bold_norm
    if scope == "fold":
        data, units = _undo(data, bold_stats, 1), "BOLD units of the training subjects"
        true = None if true is None else _undo(true, bold_stats, 1)
    elif scope == "subject":
        units = "z-score (per-subject standardised BOLD, as the run was trained)"
    else:
        units = "BOLD units of the training data"
    return _prediction(
        rec,
        "eeg2fmri",
        data,
        true,
        names=run.roi_names,
        times=vols * rec.tr,
        sfreq=1.0 / rec.tr,
        units=units,
        volumes=vols,
        windows=(pred, true_w, trs),
        notes=notes,
    )


def _predict_ephys(
    run: TrainedRun,
    rec: RecordingInput,
    batch_size: int | None,
    allow_missing: bool,
    own_stats: dict[str, Any] | None,
    progress: Any,
) -> Prediction:
    own = own_stats or {}
    out_names = getattr(run.model, "output_names", None)
    if callable(out_names) and list(out_names(run.ephys_names)) != run.ephys_names:
        raise ValueError(
            f"{run.run_dir}: this run's model ({run.cfg.model.name}, model.overrides="
            f"{dict(run.cfg.model.overrides)}) predicts derived rows (e.g. band envelopes), not "
            "the electrophysiology itself; `brainxl predict` writes raw recordings only: "
            "use a run trained on waveforms (`brainxl evaluate` scores this one)"
        )
    bold, _ = _bold_side(run, rec, own)
    if bold is None:
        raise ValueError(
            f"{rec.source}: no BOLD; this run ({run.cfg.model.name}) predicts "
            "electrophysiology from BOLD (give a 4D NIfTI + atlas or an ROI TSV)"
        )
    notes: list[str] = []
    try:
        sig, _, names, notes = _ephys_side(run, rec, False, own)
    except ValueError as err:  # the observed side is only the truth here: report, go on
        sig = None
        notes.append(f"observed electrophysiology not compared: {err}")
    W, nt, sf = run.window, run.n_targets, rec.sfreq
    n_trs = bold.shape[1]
    zero = int(round(rec.lead_in * sf))
    if sig is not None:
        wins = window_trs(n_trs, sig.shape[1], zero, rec.tr, run.lag_s, sf, W, nt)
    else:  # no recorded electrophysiology bounds the windows: every TR from nt - 1 on
        from brainxl.shards.segments import tr_end_sample

        zero = W  # a virtual array starting one window before volume 0
        wins = [(k, tr_end_sample(k, rec.tr, run.lag_s, sf) + zero) for k in range(nt - 1, n_trs)]
        wins = [(k, e) for k, e in wins if e - W >= 0]
    if not wins:
        raise _too_short(run, rec, f"{n_trs} BOLD volumes")
    bold_t = torch.from_numpy(bold)

    def make_batch(idx: range) -> dict[str, Any]:
        frames = torch.stack([bold_t[:, wins[i][0] - nt + 1 : wins[i][0] + 1] for i in idx])
        return {"bold": frames, run.adapter.source_key: frames.new_zeros(0)}

    pred = _run_batches(run, make_batch, len(wins), batch_size, run.adapter, progress)  # (N, C, W)
    trs = np.array([k for k, _ in wins])
    data, samples = overlap_average(pred, [e for _, e in wins])
    true = true_w = None
    if sig is not None:
        true = sig[:, samples].T.astype(np.float64)
        true_w = np.stack([sig[:, e - W : e] for _, e in wins])
    units = "z-score (per-subject standardised, as the run was trained)"
    if run.cfg.data.reader.ephys_norm != "subject":
        stats = normalisation(run, _ephys_modality(run), [])
        data = _undo(data, stats, 1)
        true = None if true is None else _undo(true, stats, 1)
        units = _ephys_units(run)
    return _prediction(
        rec,
        "fmri2eeg",
        data,
        true,
        names=list(run.ephys_names),
        times=(samples - zero) / sf,
        sfreq=sf,
        units=units,
        volumes=trs,
        windows=(pred, true_w, trs),
        notes=notes,
    )


def _prediction(
    rec: RecordingInput,
    task: str,
    data: np.ndarray,
    true: np.ndarray | None,
    *,
    names: list[str],
    times: np.ndarray,
    sfreq: float,
    units: str,
    volumes: np.ndarray,
    windows: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    notes: list[str],
) -> Prediction:
    """The :class:`Prediction` of ``rec``: its key, entities, source and files, its notes
    before ``notes``, ``data`` and ``true`` as float32; ``windows`` is ``(window_pred,
    window_true, window_trs)``."""
    window_pred, window_true, window_trs = windows
    return Prediction(
        key=rec.key,
        entities=dict(rec.entities),
        task=task,
        data=data.astype(np.float32),
        names=names,
        times=times,
        sfreq=sfreq,
        units=units,
        volumes=volumes,
        true=None if true is None else true.astype(np.float32),
        window_pred=window_pred,
        window_true=window_true,
        window_trs=window_trs,
        source=rec.source,
        files=dict(rec.files),
        notes=list(rec.notes) + notes,
    )


def _ephys_modality(run: TrainedRun) -> str:
    return "parcels" if run.modality == "parcels" else "ephys"


def _ephys_units(run: TrainedRun) -> str:
    if run.modality == "parcels":
        return "source amplitude (arbitrary units)"
    types = set(run.ch_types)
    return "µV" if types <= {"eeg"} else "fT (mag), fT/cm (grad)"


def score_predictions(predictions: Sequence[Prediction], subject: str) -> Any:
    """Per-ROI scores of one subject's predictions, windows pooled as ``brainxl evaluate``.

    Returns
    -------
    brainxl.metrics.SubjectResult
        Pearson r etc. per ROI (or channel) over every predicted window of the subject.
    """
    from brainxl.distrib.evaluation import series

    from brainxl import metrics as bm

    mine = [p for p in predictions if p.subject == subject and p.window_true is not None]
    if not mine:
        raise ValueError(f"no prediction of subject {subject!r} has an observed target to score")
    pred = np.concatenate([series(p.window_pred) for p in mine])
    true = np.concatenate([series(p.window_true) for p in mine])
    return bm.evaluate_subject(subject, pred, true, mine[0].names)
