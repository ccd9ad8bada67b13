"""Read what ``brainxl predict`` is given into :class:`distrib.prediction.RecordingInput`.

Input forms: a BIDS dataset (every subject, or some), a single electrophysiology file
(EDF, BDF, BrainVision, EEGLAB, FIF), a 4D BOLD NIfTI with an atlas, or an ROI time-series
TSV; electrophysiology with or without BOLD and the other way round. Everything goes
through the run's own ingest settings (recorded in its shard manifest): the same channel
mapping, bad-channel policy, filters, resampling and synchronisation as its training data.

Calls into the data side (few, so they can be retargeted): ``shards.ingest.bids``
``find_runs``, ``load_run``, ``list_subjects``, ``read_roi_tsv``, ``extract_nifti``,
``volume_onsets``, ``source_files``, ``EPHYS_EXTENSIONS``, ``EXCLUDED_DESCS``;
``shards.ingest.preprocess`` ``preprocess_raw``, ``to_array``; ``shards.ingest.source_recon``
``reconstruct_parcels``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from brainxl.distrib.prediction import RecordingInput
from brainxl.distrib.trained_run import TrainedRun

#: File endings read as electrophysiology and as BOLD.
EPHYS_FILES = (".edf", ".bdf", ".vhdr", ".set", ".fif")
BOLD_FILES = (".nii", ".nii.gz", ".tsv")


def ingest_config(run: TrainedRun) -> tuple[Any, list[str]]:
    """The ingest settings the run's shards were made with, and notes.

    Shards written from recordings in memory record none: the defaults are used then,
    at the run's sampling rate.
    """
    from brainxl.shards.config import (
        BoldConfig,
        IngestConfig,
        PreprocessConfig,
        SourceConfig,
        SyncConfig,
    )

    saved = run.manifest.get("settings", {}).get("ingest")
    if not saved:
        cfg = IngestConfig()
        cfg.preprocess.sfreq = run.sfreq
        note = (
            f"{run.cfg.data.shards}: the shards record no ingest settings; default "
            f"preprocessing at {run.sfreq:g} Hz used"
        )
        return cfg, [note]
    parts = {
        "preprocess": PreprocessConfig,
        "bold": BoldConfig,
        "sync": SyncConfig,
        "source": SourceConfig,
    }
    kw = {k: cls(**saved.get(k, {})) for k, cls in parts.items()}
    rest = {k: v for k, v in saved.items() if k not in parts}
    return IngestConfig(**kw, **rest), []


def _entities(path: Path) -> dict[str, str]:
    """BIDS entities of a file name (``sub-01_task-rest_eeg.vhdr`` -> sub, task)."""
    out = {}
    for part in path.name.split(".")[0].split("_")[:-1]:
        if "-" in part:
            k, v = part.split("-", 1)
            out[k] = v
    return out


def _named(ents: dict[str, str]) -> dict[str, str]:
    keys = {"sub": "subject", "ses": "session", "task": "task", "run": "run"}
    return {name: ents.get(short, "") for short, name in keys.items()}


def _key(ents: dict[str, str]) -> str:
    parts = [f"sub-{ents['subject']}"] if ents.get("subject") else []
    parts += [f"ses-{ents['session']}"] if ents.get("session") else []
    parts += [f"task-{ents['task']}"] if ents.get("task") else []
    parts += [f"run-{ents['run']}"] if ents.get("run") else []
    return "_".join(parts).replace(".", "") or "recording"


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def read_inputs(
    run: TrainedRun,
    path: str | Path,
    *,
    subjects: Sequence[str] | None = None,
    bold: str | Path | None = None,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    tr: float | None = None,
    volume_marker: str | None = None,
) -> list[RecordingInput]:
    """Read every recording of ``path`` the run can predict from.

    Parameters
    ----------
    run : TrainedRun
    path : path
        A BIDS dataset folder, an electrophysiology file, a 4D BOLD NIfTI or an ROI TSV.
    subjects : sequence of str, optional
        BIDS input: these subjects only (``sub-`` optional).
    bold : path, optional
        Single electrophysiology file: the BOLD of the same run (NIfTI or ROI TSV), used
        as the truth (EEG -> fMRI) or as the input (fMRI -> EEG).
    atlas, atlas_labels : path, optional
        Label NIfTI on the BOLD grid (and its ``index``/``name`` TSV) for NIfTI BOLD.
    tr : float, optional
        Repetition time when no sidecar or header gives it (default: the run's TR).
    volume_marker : str, optional
        Regular expression of the annotations that mark volumes (default: the run's
        ``sync.volume_marker``); volume 0 is the first match, else the recording start.

    Returns
    -------
    list of RecordingInput
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: input not found; give a BIDS folder or a recording file")
    ingest, notes = ingest_config(run)
    if volume_marker:
        ingest = dataclasses.replace(
            ingest, sync=dataclasses.replace(ingest.sync, volume_marker=volume_marker)
        )
    if p.is_dir():
        if not (p / "dataset_description.json").is_file():
            raise ValueError(
                f"{p}: a folder but not a BIDS dataset (no dataset_description.json); give "
                "the dataset root or a single recording file"
            )
        recs = bids_inputs(run, p, subjects, ingest)
    elif _suffix(p) in EPHYS_FILES:
        recs = [ephys_file_input(run, p, ingest, bold, atlas, atlas_labels, tr)]
    elif _suffix(p) in BOLD_FILES:
        recs = [bold_file_input(run, p, atlas, atlas_labels, tr)]
    else:
        raise ValueError(
            f"{p}: unknown input type; give a BIDS folder, EEG/MEG ({', '.join(EPHYS_FILES)}) "
            "or BOLD (.nii/.nii.gz with --atlas, or an ROI .tsv)"
        )
    for r in recs:
        r.notes[:0] = notes
    return recs


# ---------------------------------------------------------------------- electrophysiology
def _preprocessed(
    run: TrainedRun, raw: Any, ingest: Any, src: str
) -> tuple[np.ndarray, list[str], float, list[str], Any]:
    """Run the run's preprocessing on ``raw``; (µV data, names, volume-0 time, notes, raw)."""
    from brainxl.shards.ingest.bids import volume_onsets
    from brainxl.shards.ingest.preprocess import preprocess_raw, to_array

    orig = float(raw.info["sfreq"])
    if orig + 1e-6 < run.sfreq:
        raise ValueError(
            f"{src}: recorded at {orig:g} Hz but the run's model reads {run.sfreq:g} Hz data "
            f"(filtered up to {ingest.preprocess.h_freq} Hz); supply a recording sampled at "
            f">= {run.sfreq:g} Hz"
        )
    onsets = volume_onsets(raw, ingest.sync.volume_marker)
    notes = preprocess_raw(raw, ingest.preprocess, src)
    if abs(float(raw.info["sfreq"]) - run.sfreq) > 1e-6:
        raise ValueError(
            f"{src}: preprocessing gives {raw.info['sfreq']:g} Hz but the run reads "
            f"{run.sfreq:g} Hz; the shards' preprocess.sfreq disagrees with the run"
        )
    if onsets.size:
        t0 = float(onsets[0])
    else:
        t0 = 0.0
        notes.append(
            f"no annotation matches the volume marker {ingest.sync.volume_marker!r}: volume 0 "
            "at the recording start (set --volume-marker to the scanner's trigger)"
        )
    data, _ = to_array(raw, 0, raw.n_times)
    return data, list(raw.ch_names), t0, notes, raw


def _parcels_of(run: TrainedRun, raw: Any, ingest: Any, root: Path, ents: dict, src: str) -> Any:
    """Source-reconstructed parcels of a preprocessed raw (runs that read parcels)."""
    from brainxl.shards.ingest.bids import source_files
    from brainxl.shards.ingest.source_recon import reconstruct_parcels

    fwd, parc, names = source_files(root, ents, ingest)
    if not fwd.is_file():
        pattern = ingest.source.forward or "the simulator's headmodel"
        raise ValueError(
            f"{src}: this run ({run.cfg.model.name}) reads source parcels, reconstructed with "
            f"the subject's forward model {fwd}, which does not exist; put the subject's "
            f"head model (*-fwd.fif) there (the run's ingest source.forward: {pattern})"
        )
    full, parcel_names, notes = reconstruct_parcels(
        raw, fwd, parc, ingest.source, src, names_table=names
    )
    return full.astype(np.float32), parcel_names, notes


def ephys_file_input(
    run: TrainedRun,
    path: Path,
    ingest: Any,
    bold: str | Path | None = None,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    tr: float | None = None,
) -> RecordingInput:
    """One electrophysiology file (any format MNE reads), optionally with its BOLD."""
    import mne

    src = str(path)
    try:
        raw = mne.io.read_raw(path, preload=True, verbose=False)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{src}: MNE could not read it ({err}); fix or convert the file") from err
    if run.modality == "parcels":
        raise ValueError(
            f"{src}: this run reads source-reconstructed parcels, which need a forward model; "
            "give the recording inside a BIDS dataset with its head model (source.forward)"
        )
    ephys, names, t0, notes, _ = _preprocessed(run, raw, ingest, src)
    ents = _named(_entities(path))
    rec = RecordingInput(
        key=_key(ents),
        entities=ents,
        source=src,
        tr=float(tr or run.tr or 0.0),
        sfreq=run.sfreq,
        lead_in=t0,
        ephys=ephys,
        ch_names=names,
        files={"ephys": src},
        notes=notes,
    )
    if bold is not None:
        b = bold_file_input(run, Path(bold), atlas, atlas_labels, tr)
        _attach_bold(rec, b)
    if rec.tr <= 0:
        raise ValueError(f"{src}: the run records no single TR; pass --tr (seconds)")
    return rec


def _attach_bold(rec: RecordingInput, b: RecordingInput) -> None:
    rec.bold, rec.roi_names, rec.n_trs, rec.tr = b.bold, b.roi_names, b.n_trs, b.tr
    rec.files["bold"] = b.source
    rec.notes += b.notes
    assert rec.bold is not None
    have = (rec.ephys.shape[1] if rec.ephys is not None else 0) / rec.sfreq - rec.lead_in
    need = rec.bold.shape[1] * rec.tr
    if have + 1.0 / rec.sfreq < need - rec.tr:
        raise ValueError(
            f"{rec.source}: electrophysiology covers {have:.1f} s after volume 0 but the "
            f"{rec.bold.shape[1]} volumes of {b.source} need {need:.1f} s; supply the full "
            "recording or trim the BOLD run"
        )


# ---------------------------------------------------------------------- BOLD
def _bold_tr(path: Path, tr: float | None, run: TrainedRun) -> tuple[float, list[str]]:
    """TR from ``tr``, the JSON sidecar next to ``path``, the NIfTI header, or the run."""
    if tr:
        return float(tr), []
    stem = path.name.split(".")[0]
    side = path.with_name(stem + ".json")
    if side.is_file():
        meta = json.loads(side.read_text())
        if "RepetitionTime" in meta:
            return float(meta["RepetitionTime"]), []
        if meta.get("SamplingFrequency"):
            return 1.0 / float(meta["SamplingFrequency"]), []
    if _suffix(path) in (".nii", ".nii.gz"):
        import nibabel as nib

        zooms = nib.load(path).header.get_zooms()
        if len(zooms) > 3 and zooms[3] > 0:
            return float(zooms[3]), [f"TR {zooms[3]:g} s from the NIfTI header"]
    if run.tr:
        return run.tr, [f"{path}: no TR given (sidecar/header/--tr): the run's {run.tr:g} s used"]
    raise ValueError(f"{path}: no RepetitionTime (sidecar or header); pass --tr (seconds)")


def bold_file_input(
    run: TrainedRun,
    path: Path,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
    tr: float | None = None,
) -> RecordingInput:
    """A 4D BOLD NIfTI (with ``atlas``) or an ROI time-series TSV."""
    from brainxl.shards.ingest.bids import extract_nifti, read_roi_tsv

    if _suffix(path) == ".tsv":
        data, names = read_roi_tsv(path)
    else:
        if atlas is None:
            raise ValueError(
                f"{path}: a BOLD image needs the atlas its ROIs come from; pass --atlas "
                "(label NIfTI on the BOLD grid) and --atlas-labels (index/name TSV)"
            )
        data, names = extract_nifti(
            path, Path(atlas), None if atlas_labels is None else Path(atlas_labels)
        )
    tr_s, notes = _bold_tr(path, tr, run)
    ents = _named(_entities(path))
    return RecordingInput(
        key=_key(ents),
        entities=ents,
        source=str(path),
        tr=tr_s,
        sfreq=run.sfreq,
        bold=data,
        roi_names=names,
        n_trs=int(data.shape[1]),
        files={"bold": str(path)},
        notes=notes,
    )


# ---------------------------------------------------------------------- BIDS
def bids_inputs(
    run: TrainedRun, root: Path, subjects: Sequence[str] | None, ingest: Any
) -> list[RecordingInput]:
    """Every run of the chosen subjects of a BIDS dataset the model can predict from.

    Runs with electrophysiology and BOLD go through the run's full ingest
    (``shards.ingest.bids.load_run``); runs with one of them are read with the same settings.
    """
    from brainxl.shards.ingest.bids import list_subjects

    ing = dataclasses.replace(ingest, subjects=list(subjects or []))
    out: list[RecordingInput] = []
    for sub in list_subjects(root, ing):
        recs = _subject_runs(run, root, sub, ing)
        if not recs:
            need = "EEG/MEG" if run.task == "eeg2fmri" else "BOLD"
            raise ValueError(
                f"{root / f'sub-{sub}'}: no {need} run the model can read; check the "
                "subject's data (or leave it out with --subjects)"
            )
        out += recs
    return out


def _subject_runs(run: TrainedRun, root: Path, sub: str, ingest: Any) -> list[RecordingInput]:
    from brainxl.shards.ingest.bids import EPHYS_EXTENSIONS, find_runs, load_run

    both = {r.ephys: r for r in find_runs(root, sub, ingest)}
    dtypes = ["meg"] if {"mag", "grad"} & set(ingest.preprocess.ch_types) else ["eeg"]
    recs: list[RecordingInput] = []
    seen: list[dict[str, str]] = []
    for dtype in dtypes:
        for path in sorted((root / f"sub-{sub}").glob(f"**/{dtype}/sub-{sub}_*_{dtype}.*")):
            if path.suffix not in EPHYS_EXTENSIONS[dtype]:
                continue
            if "_split-" in path.name and "_split-01_" not in path.name:
                continue
            ents = _named(_entities(path))
            if ingest.tasks and ents["task"] not in ingest.tasks:
                continue
            seen.append(ents)
            if path in both:
                recs.append(RecordingInput.from_recording(load_run(root, both[path], ingest)))
            elif run.task == "eeg2fmri":
                recs.append(_bids_ephys_only(run, root, path, dtype, ents, ingest))
    if run.task == "fmri2eeg":
        recs += [r for r in _bids_bold_only(run, root, sub, ingest) if r.entities not in seen]
    return recs


def _bids_ephys_only(
    run: TrainedRun, root: Path, path: Path, dtype: str, ents: dict[str, str], ingest: Any
) -> RecordingInput:
    from mne_bids import BIDSPath, read_raw_bids

    e = _entities(path)
    bpath = BIDSPath(
        root=root,
        subject=ents["subject"],
        session=ents["session"] or None,
        task=ents["task"] or None,
        run=ents["run"] or None,
        acquisition=e.get("acq") or None,
        split=e.get("split") or None,
        datatype=dtype,
        suffix=dtype,
        extension=path.suffix,
    )
    src = str(path)
    try:
        raw = read_raw_bids(bpath, verbose=False)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{src}: mne-bids could not read it ({err}); fix the file") from err
    ephys, names, t0, notes, raw = _preprocessed(run, raw, ingest, src)
    parcels, parcel_names = None, []
    if run.modality == "parcels":
        parcels, parcel_names, more = _parcels_of(run, raw, ingest, root, ents, src)
        notes += more
    notes.append("no BOLD for this run: nothing to compare the predictions with")
    return RecordingInput(
        key=_key(ents),
        entities=ents,
        source=src,
        tr=float(run.tr or 0.0) or _need_tr(src),
        sfreq=run.sfreq,
        lead_in=t0,
        ephys=ephys,
        ch_names=names,
        parcels=parcels,
        parcel_names=parcel_names,
        files={"ephys": src},
        notes=notes,
    )


def _need_tr(src: str) -> float:
    raise ValueError(f"{src}: the run records no single TR and the input has no BOLD; use --tr")


def _bids_bold_only(run: TrainedRun, root: Path, sub: str, ingest: Any) -> list[RecordingInput]:
    """BOLD runs of a subject without electrophysiology: ROI TSVs, else NIfTI + atlas."""
    from brainxl.shards.ingest.bids import EXCLUDED_DESCS

    b = ingest.bold
    found: dict[str, Path] = {}
    deriv = root / "derivatives" / b.derivatives if b.derivatives else root / "derivatives"
    if b.source in ("auto", "roi_tsv") and deriv.is_dir():
        for p in sorted(deriv.rglob(f"sub-{sub}_*_timeseries.tsv")):
            e = _entities(p)
            desc = e.get("desc", "")
            if (b.desc and desc != b.desc) or (not b.desc and desc.lower() in EXCLUDED_DESCS):
                continue
            if b.roi_atlas and e.get("atlas", "") != b.roi_atlas:
                continue
            found.setdefault(_key(_named(e)), p)
    if b.source in ("auto", "nifti"):
        for p in sorted((root / f"sub-{sub}").glob(f"**/func/sub-{sub}_*_bold.nii*")):
            found.setdefault(_key(_named(_entities(p))), p)
    recs = []
    for _, p in sorted(found.items()):
        atlas = labels = None
        if _suffix(p) != ".tsv":
            if not b.atlas:
                raise ValueError(
                    f"{p}: no ROI time series in derivatives and the run's ingest has no "
                    "bold.atlas; extract the ROIs first or predict from an ROI TSV"
                )
            ents = _named(_entities(p))
            atlas = root / b.atlas.format(**ents)
            labels = root / b.atlas_labels.format(**ents) if b.atlas_labels else None
        recs.append(bold_file_input(run, p, atlas, labels, None))
    return recs
