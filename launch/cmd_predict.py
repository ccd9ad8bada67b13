"""``brainxl predict RUN INPUT OUT``: run a trained model on new recordings.

INPUT is a BIDS dataset (every subject, or ``--subjects``), a single electrophysiology
file (EDF, BDF, BrainVision, EEGLAB, FIF; ``--bold`` adds its BOLD) or a BOLD file (4D
NIfTI with ``--atlas``, or an ROI TSV). The run's own preprocessing, channel mapping and
normalisation (statistics of its training subjects) are applied; every TR with a full
window is predicted, in batches. OUT becomes a BIDS derivatives dataset: ROI time series
(TSV + JSON) and, when the run's atlas is known, a 4D NIfTI in the atlas space (EEG ->
fMRI); MNE raw files (fMRI -> EEG/MEG). ``--report`` adds ``OUT/report.html``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HELP = "Predict BOLD from EEG/MEG (or back) for new recordings with a trained run."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder or checkpoint folder")
    parser.add_argument("input", help="BIDS dataset, EEG/MEG file, BOLD NIfTI or ROI TSV")
    parser.add_argument("out", help="output folder (a BIDS derivatives dataset)")
    parser.add_argument("--subjects", default="", help="BIDS input: comma list (01,02)")
    parser.add_argument(
        "--weights",
        choices=("best", "final"),
        default="best",
        help="of a finished run: the best-validation weights (default) or the final ones",
    )
    parser.add_argument("--bold", default=None, help="single EEG file: its BOLD (NIfTI/TSV)")
    parser.add_argument("--atlas", default=None, help="label NIfTI of the ROIs (BOLD grid)")
    parser.add_argument("--atlas-labels", default=None, help="index/name TSV of the atlas")
    parser.add_argument("--tr", type=float, default=None, help="repetition time (s) if unknown")
    parser.add_argument(
        "--volume-marker",
        default=None,
        help="regex of the annotations marking volumes (default: the run's sync.volume_marker)",
    )
    parser.add_argument(
        "--format",
        choices=("fif", "brainvision", "edf"),
        default="fif",
        help="fMRI -> EEG: raw file format (default fif)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="windows per forward")
    parser.add_argument(
        "--allow-missing-channels",
        action="store_true",
        help="predict without channels the run was trained on (models reading channels by "
        "name); they are listed in the outputs",
    )
    parser.add_argument("--report", action="store_true", help="write OUT/report.html")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _progress(enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(desc=desc, unit=" windows", leave=False)


def predict(
    run: str | Path,
    inputs: str | Path,
    out: str | Path | None = None,
    *,
    subjects: Sequence[str] | None = None,
    weights: str = "best",
    bold: str | Path | None = None,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    tr: float | None = None,
    volume_marker: str | None = None,
    raw_format: str = "fif",
    report: bool = False,
    batch_size: int | None = None,
    allow_missing_channels: bool = False,
    progress: bool = True,
) -> list[Any]:
    """Predict every recording of ``inputs`` with the model of ``run``.

    Parameters
    ----------
    run : path
        Run folder (best-validation weights by default) or checkpoint folder (ZeRO
        checkpoints are consolidated).
    inputs : path
        BIDS dataset, EEG/MEG file, 4D BOLD NIfTI (with ``atlas``) or ROI TSV.
    out : path, optional
        Write a BIDS derivatives dataset there (nothing is written when None).
    subjects : sequence of str, optional
        BIDS input: these subjects only.
    weights : {"best", "final"}
    bold : path, optional
        Single EEG/MEG file: its BOLD (NIfTI or ROI TSV), the truth or the input.
    atlas, atlas_labels : path, optional
        Label NIfTI (and its index/name TSV): to read a NIfTI BOLD, and the space of the
        predicted NIfTI (default: the run's atlas when known).
    tr : float, optional
        Repetition time when nothing else gives it.
    volume_marker : str, optional
        Regex of the annotations marking volumes (default: the run's).
    raw_format : {"fif", "brainvision", "edf"}
        fMRI -> EEG output format.
    report : bool
        Write ``out/report.html`` (a few predicted series, the mean signal on the brain).
    batch_size : int, optional
    allow_missing_channels : bool
        Predict without missing channels (models reading channels by name only).
    progress : bool
        Show a progress bar per recording.

    Returns
    -------
    list of distrib.prediction.Prediction
        Per recording: ``data`` (n_times, n_series) with ``names``, ``times`` (s from
        volume 0), ``units``; ``true`` when the input holds the target; ``files`` holds
        the written outputs under ``"out_*"`` keys.
    """
    from brainxl.distrib.predict_inputs import read_inputs
    from brainxl.distrib.prediction import predict_recording
    from brainxl.distrib.trained_run import load_trained_run

    trained = load_trained_run(run, weights)
    recs = read_inputs(
        trained,
        inputs,
        subjects=subjects,
        bold=bold,
        atlas=atlas,
        atlas_labels=atlas_labels,
        tr=tr,
        volume_marker=volume_marker,
    )
    own: dict[str, dict[str, list[Any]]] = {}
    for r in recs:
        mine = own.setdefault(r.subject, {"ephys": [], "bold": [], "parcels": []})
        for m in mine:
            if getattr(r, m) is not None:
                mine[m].append(getattr(r, m))
    preds = []
    for r in recs:
        bar = _progress(progress, r.key)
        try:
            preds.append(
                predict_recording(
                    trained,
                    r,
                    batch_size=batch_size,
                    allow_missing_channels=allow_missing_channels,
                    own_stats=own[r.subject],
                    progress=bar,
                )
            )
        finally:
            if bar is not None:
                bar.close()
    if out is not None:
        write_outputs(trained, preds, Path(out), inputs, atlas, atlas_labels, raw_format)
        if report:
            write_prediction_report(trained, preds, Path(out), inputs, atlas, atlas_labels)
    return preds


def _roots(inputs: str | Path) -> list[Path]:
    p = Path(inputs)
    return [p] if p.is_dir() else []


def write_outputs(
    trained: Any,
    preds: Sequence[Any],
    out: Path,
    inputs: str | Path,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    raw_format: str = "fif",
) -> None:
    """Write ``preds`` as a BIDS derivatives dataset in ``out`` (paths go to ``files``)."""
    from brainxl.distrib.brain_figures import find_atlas

    from brainxl import derivatives as der

    model = f"{trained.cfg.model.name} ({trained.cfg.model.flavor})"
    der.write_description(
        out, trained.run_id, trained.weights, run_dir=trained.run_dir, source=inputs, model=model
    )
    provenance = {"run": str(trained.run_dir), "run_id": trained.run_id, "weights": trained.weights}
    space = None
    if trained.task == "eeg2fmri":
        space = find_atlas(trained.manifest, trained.roi_names, _roots(inputs), atlas, atlas_labels)
    for p in preds:
        extra = {
            "SourceRun": p.source,
            "GeneratedBy": provenance,
            "Notes": p.notes,
            "FirstVolume": int(p.volumes[0]) if p.task == "eeg2fmri" else None,
        }
        if p.task == "eeg2fmri":
            p.files["out_tsv"] = str(
                der.write_roi_timeseries(
                    out,
                    p.entities,
                    p.data,
                    p.names,
                    1.0 / p.sfreq,
                    float(p.times[0]),
                    source=p.source,
                    units=p.units,
                    extra=extra,
                )
            )
            if space is not None:
                p.files["out_nifti"] = str(
                    der.write_bold_nifti(
                        out,
                        p.entities,
                        p.data,
                        p.names,
                        1.0 / p.sfreq,
                        space.image,
                        space.labels,
                        space.name,
                        extra={"StartTime": float(p.times[0]), **extra, "Atlas": str(space.image)},
                    )
                )
        else:
            types = trained.ch_types if trained.modality != "parcels" else ["misc"] * len(p.names)
            if p.units.startswith("z-score"):
                types = ["misc"] * len(p.names)
            p.files["out_raw"] = str(
                der.write_raw(
                    out,
                    p.entities,
                    p.data,
                    p.names,
                    types,
                    p.sfreq,
                    raw_format,
                    first_time=float(p.times[0]),
                    description=f"brainxl prediction, run {trained.run_id}, {trained.weights}",
                    sidecar={"SamplingFrequency": p.sfreq, **extra},
                )
            )


def write_prediction_report(
    trained: Any,
    preds: Sequence[Any],
    out: Path,
    inputs: str | Path,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
) -> Path:
    """``out/report.html``: a few predicted series per recording and, for BOLD with a
    known atlas, the mean predicted signal on the brain (no ground truth needed)."""
    import numpy as np
    from brainxl.distrib.brain_figures import find_atlas

    from brainxl import brainmaps

    figs: dict[str, Any] = {}
    space = None
    if trained.task == "eeg2fmri":
        space = find_atlas(trained.manifest, trained.roi_names, _roots(inputs), atlas, atlas_labels)
    for p in preds[:4]:
        figs[f"series_{p.key}"] = brainmaps.plot_prediction_timeseries(p.data, p.times, p.names)
        if p.task == "fmri2eeg":
            figs[f"spectra_{p.key}"] = brainmaps.plot_power_spectra(
                p.data, p.true, p.sfreq, p.names
            )
    if space is not None and preds:
        mean = np.mean([p.data.mean(axis=0) for p in preds], axis=0)
        figs["mean_signal_brain"] = brainmaps.plot_roi_values_brain(
            mean, trained.roi_names, space.image, space.labels, title="mean predicted signal"
        )
    lines = [
        f"run {trained.run_id} ({trained.cfg.model.name}, {trained.weights} weights), "
        f"input {inputs}",
        f"{len(preds)} recording(s); units: {preds[0].units if preds else '-'}",
    ]
    for p in preds:
        lines += [f"{p.key}: {note}" for note in p.notes]
    return brainmaps.write_html_report(out / "report.html", figs, "brainxl predictions", lines)


def summary(preds: Sequence[Any]) -> dict[str, Any]:
    """JSON-ready description: per recording the files written, rows, and r when scored."""
    from brainxl.distrib.prediction import score_predictions

    scores = {}
    for sub in sorted({p.subject for p in preds if p.window_true is not None}):
        scores[sub] = float(score_predictions(preds, sub).mean_r)
    return {
        "recordings": {
            p.key: {
                "rows": int(p.data.shape[0]),
                "series": len(p.names),
                "units": p.units,
                "files": {k[4:]: v for k, v in p.files.items() if k.startswith("out_")},
                "notes": p.notes,
            }
            for p in preds
        },
        "mean_r": scores,
    }


def run(args: argparse.Namespace) -> int:
    subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] or None
    preds = predict(
        args.run,
        args.input,
        args.out,
        subjects=subjects,
        weights=args.weights,
        bold=args.bold,
        atlas=args.atlas,
        atlas_labels=args.atlas_labels,
        tr=args.tr,
        volume_marker=args.volume_marker,
        raw_format=args.format,
        report=args.report,
        batch_size=args.batch_size,
        allow_missing_channels=args.allow_missing_channels,
        progress=not args.no_progress,
    )
    print(json.dumps(summary(preds), indent=2))
    return 0
