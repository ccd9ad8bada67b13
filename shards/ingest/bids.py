"""BIDS ingest: simultaneous EEG/MEG + BOLD runs -> :class:`shards.ingest.recording.Recording`.

Electrophysiology is read with mne-bids (BrainVision, EDF, BDF, EEGLAB, FIF); BOLD comes
from an ROI time-series TSV in a derivatives folder or from a 4D NIfTI and a user atlas
(nilearn ``NiftiLabelsMasker``, raw signal, no standardisation). Volume 0 is the first
annotation matching ``cfg.sync.volume_marker``, else the recording start (noted in the
recording's assumptions). The sharding side calls :func:`list_subjects` and
:func:`load_subject`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from brainxl.shards.config import IngestConfig
from brainxl.shards.errors import (
    AtlasMismatchError,
    IngestError,
    MissingFileError,
    SamplingRateError,
    ShortRecordingError,
    SidecarError,
    SyncError,
)
from brainxl.shards.ingest.preprocess import preprocess_raw, to_array
from brainxl.shards.ingest.recording import Recording

#: Data file extensions mne-bids reads, per datatype.
EPHYS_EXTENSIONS = {
    "eeg": (".vhdr", ".edf", ".bdf", ".set", ".fif"),
    "meg": (".fif",),
}
#: ``desc-`` values of ``*_timeseries.tsv`` files that are not the observed ROI BOLD
#: (ground truth of simulations, fMRIPrep confounds).
EXCLUDED_DESCS = (
    "noisefree", "clean", "true", "truth", "neural", "sources", "latent", "confounds",
)  # fmt: skip
#: Where the simulator keeps its head model and parcels (used when the config is empty).
SIM_DERIV = "derivatives/brainxl-sim"


@dataclass
class RunFiles:
    """The files of one run: electrophysiology plus the matching BOLD.

    Attributes
    ----------
    ephys : Path
        Data file (``*_eeg.vhdr``, ``*_eeg.edf``, ``*_meg.fif``, ...).
    datatype : str
        ``"eeg"`` or ``"meg"``.
    entities : dict of str to str
        ``subject``, ``session``, ``task``, ``run`` (``""`` when absent) and others.
    bold_tsv, bold_nifti : Path or None
        ROI time series (derivatives) and the raw 4D image.
    """

    ephys: Path
    datatype: str
    entities: dict[str, str]
    bold_tsv: Path | None
    bold_nifti: Path | None


def _entities(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in path.name.split("_")[:-1]:
        if "-" in part:
            key, val = part.split("-", 1)
            out[key] = val
    return out


_KEYS = {"sub": "subject", "ses": "session", "task": "task", "run": "run"}


def _same_value(x: str, y: str) -> bool:
    """Two entity values agree: as numbers when both are digits (``run-1`` is ``run-01``)."""
    if x.isdigit() and y.isdigit():
        return int(x) == int(y)
    return x == y


def _same_run(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(_same_value(a.get(key, ""), b.get(key, "")) for key in ("sub", "ses", "task", "run"))


def _sidecar(path: Path, suffix: str) -> Path:
    """``sub-01_task-x_eeg.vhdr`` -> ``sub-01_task-x_eeg.json`` (for ``suffix='eeg'``)."""
    stem = path.name.split(".")[0]
    stem = stem[: stem.rindex("_")]
    return path.with_name(f"{stem}_{suffix}.json")


def _read_json(path: Path, needed_for: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise MissingFileError(f"{path}: sidecar missing (needed for {needed_for}); {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SidecarError(f"{path}: not valid JSON ({err}); fix the file") from err


def _ents_match(sidecar: dict[str, str], data: dict[str, str]) -> bool:
    return all(key in data and _same_value(val, data[key]) for key, val in sidecar.items())


def read_sidecar(
    data_file: Path, suffix: str, top: Path | None, fix: str
) -> tuple[dict[str, Any], Path]:
    """Read the JSON sidecar of ``data_file`` with BIDS inheritance.

    Every ``*_<suffix>.json`` from ``top`` down to the file's folder whose entities are a
    subset of the file's applies; more specific ones (deeper, more entities) override.

    Returns
    -------
    meta : dict
        The merged sidecar.
    path : Path
        The most specific sidecar read (named in later errors).

    Raises
    ------
    MissingFileError
        If none applies; the message names the expected file next to ``data_file``.
    """
    ents = _entities(data_file)
    dirs = [data_file.parent]
    top = (top or data_file.parent).resolve()
    while dirs[-1].resolve() != top and dirs[-1].parent != dirs[-1]:
        dirs.append(dirs[-1].parent)
    found: list[Path] = []
    for folder in reversed(dirs):
        level = [c for c in folder.glob(f"*_{suffix}.json") if _ents_match(_entities(c), ents)]
        found += sorted(level, key=lambda c: (len(_entities(c)), c.name))
    expected = _sidecar(data_file, suffix)
    if not found:
        raise MissingFileError(f"{expected}: sidecar missing (needed for {data_file}); {fix}")
    meta: dict[str, Any] = {}
    for path in found:
        meta.update(_read_json(path, data_file, fix))
    return meta, found[-1]


def list_subjects(bids_root: Path, cfg: IngestConfig) -> list[str]:
    """Return the subject labels of a BIDS dataset.

    Parameters
    ----------
    bids_root : Path
        Dataset root (holds ``dataset_description.json`` and ``sub-*`` folders).
    cfg : IngestConfig
        ``cfg.subjects`` (labels with or without ``sub-``) restricts the list.

    Returns
    -------
    subjects : list of str
        Sorted labels without the ``sub-`` prefix.
    """
    bids_root = Path(bids_root)
    if not (bids_root / "dataset_description.json").is_file():
        raise MissingFileError(
            f"{bids_root / 'dataset_description.json'}: not found; point the data config "
            "at the root of a BIDS dataset"
        )
    found = sorted(p.name[4:] for p in bids_root.glob("sub-*") if p.is_dir())
    if not cfg.subjects:
        return found
    wanted = [s.removeprefix("sub-") for s in cfg.subjects]
    unknown = [s for s in wanted if s not in found]
    if unknown:
        raise IngestError(
            f"{bids_root}: subjects {unknown} not in the dataset (have {found}); fix "
            "'subjects' in the data config"
        )
    return [s for s in found if s in wanted]


def _datatypes(cfg: IngestConfig) -> list[str]:
    return ["meg"] if {"mag", "grad"} & set(cfg.preprocess.ch_types) else ["eeg"]


def _find_roi_tsv(bids_root: Path, ents: dict[str, str], cfg: IngestConfig) -> Path | None:
    deriv = bids_root / "derivatives"
    if cfg.bold.derivatives:
        deriv = deriv / cfg.bold.derivatives
    if not deriv.is_dir():
        return None
    cands = []
    for path in sorted(deriv.rglob(f"sub-{ents['sub']}_*_timeseries.tsv")):
        e = _entities(path)
        if not _same_run(e, ents):
            continue
        desc = e.get("desc", "")
        if cfg.bold.desc and desc != cfg.bold.desc:
            continue
        if not cfg.bold.desc and desc.lower() in EXCLUDED_DESCS:
            continue
        if cfg.bold.roi_atlas and e.get("atlas", "") != cfg.bold.roi_atlas:
            continue
        cands.append(path)
    if len(cands) > 1:
        raise IngestError(
            f"{deriv}: several ROI time series match {ents}: {[p.name for p in cands]}; set "
            "bold.derivatives, bold.roi_atlas or bold.desc in the data config to choose one"
        )
    return cands[0] if cands else None


def find_runs(bids_root: Path, subject: str, cfg: IngestConfig) -> list[RunFiles]:
    """List the runs of ``subject`` that have both electrophysiology and BOLD.

    Parameters
    ----------
    bids_root : Path
    subject : str
        Label without ``sub-``.
    cfg : IngestConfig
        ``cfg.tasks`` filters tasks; ``cfg.bold.source`` decides which BOLD counts.

    Returns
    -------
    runs : list of RunFiles
        Sorted by file name.
    """
    bids_root = Path(bids_root)
    subdir = bids_root / f"sub-{subject}"
    if not subdir.is_dir():
        raise MissingFileError(f"{subdir}: subject folder not found; check the subject label")
    if cfg.bold.source not in ("auto", "roi_tsv", "nifti"):
        raise ValueError(f"bold.source={cfg.bold.source!r}; use auto, roi_tsv or nifti")
    runs = []
    for dtype in _datatypes(cfg):
        for path in sorted(subdir.glob(f"**/{dtype}/sub-{subject}_*_{dtype}.*")):
            if path.suffix not in EPHYS_EXTENSIONS[dtype]:
                continue
            if "_split-" in path.name and "_split-01_" not in path.name:
                continue  # MNE reads the later parts of a split FIF with the first
            ents = _entities(path)
            if cfg.tasks and ents.get("task") not in cfg.tasks:
                continue
            nifti = None
            for cand in sorted(subdir.glob(f"**/func/sub-{subject}_*_bold.nii*")):
                if _same_run(_entities(cand), ents):
                    nifti = cand
                    break
            tsv = None
            if cfg.bold.source in ("auto", "roi_tsv"):
                tsv = _find_roi_tsv(bids_root, ents, cfg)
            if cfg.bold.source == "roi_tsv" and tsv is None:
                continue
            if tsv is None and nifti is None:
                continue
            entities = {_KEYS.get(k, k): v for k, v in ents.items()}
            for key in _KEYS.values():
                entities.setdefault(key, "")
            runs.append(RunFiles(path, dtype, entities, tsv, nifti))
    return runs


def read_tr(run: RunFiles, bids_root: Path | None = None) -> tuple[float, Path]:
    """Return the repetition time and the sidecar it came from.

    ``*_bold.json`` ``RepetitionTime`` when the raw image exists (required then); else
    the ROI TSV sidecar's ``RepetitionTime`` or ``1/SamplingFrequency``. When both exist
    they must agree.
    """
    tr_bold = tr_roi = None
    src = None
    if run.bold_nifti is not None:
        meta, src = read_sidecar(
            run.bold_nifti, "bold", bids_root, "write it with at least RepetitionTime"
        )
        if "RepetitionTime" not in meta:
            raise SidecarError(
                f"{src}: no RepetitionTime; add it (seconds between volumes) to the sidecar"
            )
        tr_bold = float(meta["RepetitionTime"])
    if run.bold_tsv is not None:
        meta, roi_json = read_sidecar(
            run.bold_tsv,
            "timeseries",
            bids_root,
            "write it with SamplingFrequency (1/TR) or RepetitionTime",
        )
        if "RepetitionTime" in meta:
            tr_roi = float(meta["RepetitionTime"])
        elif "SamplingFrequency" in meta:
            tr_roi = 1.0 / float(meta["SamplingFrequency"])
        if tr_bold is None:
            if tr_roi is None:
                raise SidecarError(
                    f"{roi_json}: neither RepetitionTime nor SamplingFrequency; add one"
                )
            return tr_roi, roi_json
        if tr_roi is not None and abs(tr_roi - tr_bold) > 1e-3 * tr_bold:
            raise SamplingRateError(
                f"{roi_json}: TR {tr_roi:g} s disagrees with RepetitionTime {tr_bold:g} s in "
                f"{src}; fix the wrong sidecar"
            )
    assert tr_bold is not None and src is not None
    if tr_bold <= 0:
        raise SidecarError(f"{src}: RepetitionTime must be positive, got {tr_bold}")
    return tr_bold, src


def read_roi_tsv(path: Path) -> tuple[np.ndarray, list[str]]:
    """Read an ROI time-series TSV (one column per ROI, one row per volume).

    Returns
    -------
    bold : ndarray, shape (n_rois, n_volumes), float32
    names : list of str
    """
    import pandas as pd

    table = pd.read_csv(path, sep="\t")
    try:
        values = table.to_numpy(dtype=np.float64)
    except ValueError as err:
        raise IngestError(f"{path}: non-numeric values ({err}); fix the ROI table") from err
    if not np.isfinite(values).all():
        bad = [c for c in table.columns if not np.isfinite(table[c].to_numpy(float)).all()]
        raise IngestError(f"{path}: NaN/infinite BOLD in ROIs {bad[:10]}; fix the ROI table")
    return values.T.astype(np.float32), [str(c) for c in table.columns]


def _atlas_path(bids_root: Path, pattern: str, ents: dict[str, str]) -> Path:
    path = Path(pattern.format(**ents))
    return path if path.is_absolute() else bids_root / path


def extract_nifti(
    bold_path: Path, atlas_path: Path, labels_path: Path | None
) -> tuple[np.ndarray, list[str]]:
    """Average the raw 4D BOLD within each atlas label (nilearn ``NiftiLabelsMasker``).

    Parameters
    ----------
    bold_path : Path
        4D NIfTI.
    atlas_path : Path
        3D integer label image on the same grid (shape and affine) as the BOLD.
    labels_path : Path or None
        Optional TSV with columns ``index`` and ``name``.

    Returns
    -------
    bold : ndarray, shape (n_labels, n_volumes), float32
    names : list of str
    """
    import nibabel as nib
    import pandas as pd
    from nilearn.maskers import NiftiLabelsMasker

    if not atlas_path.is_file():
        raise MissingFileError(
            f"{atlas_path}: atlas not found (needed for {bold_path}); set bold.atlas in the "
            "data config to a label NIfTI on the BOLD grid"
        )
    img = nib.load(bold_path)
    atlas = nib.load(atlas_path)
    if img.ndim != 4:
        raise IngestError(f"{bold_path}: expected a 4D BOLD image, got shape {img.shape}")
    if atlas.shape[:3] != img.shape[:3] or (atlas.ndim == 4 and atlas.shape[3] != 1):
        raise AtlasMismatchError(
            f"{atlas_path}: atlas grid {atlas.shape} does not match the BOLD image "
            f"{bold_path} {img.shape[:3]}; resample the atlas onto the BOLD grid"
        )
    if not np.allclose(atlas.affine, img.affine, atol=1e-3):
        raise AtlasMismatchError(
            f"{atlas_path}: atlas affine differs from the BOLD image {bold_path}; resample "
            "the atlas onto the BOLD grid"
        )
    ids = np.unique(np.asarray(atlas.dataobj)).astype(int)
    ids = ids[ids != 0]
    if ids.size == 0:
        raise AtlasMismatchError(f"{atlas_path}: atlas has no labels (all zero)")
    masker = NiftiLabelsMasker(labels_img=atlas, standardize=None, resampling_target=None)
    series = masker.fit_transform(img)  # (n_volumes, n_labels), labels in ascending order
    assert series.shape[1] == ids.size, (series.shape, ids.size)
    names = [f"roi-{i}" for i in ids]
    if labels_path is not None:
        if not labels_path.is_file():
            raise MissingFileError(
                f"{labels_path}: atlas labels TSV not found; fix bold.atlas_labels"
            )
        table = pd.read_csv(labels_path, sep="\t")
        if not {"index", "name"} <= set(table.columns):
            raise SidecarError(f"{labels_path}: needs columns 'index' and 'name'")
        lut = dict(zip(table["index"].astype(int), table["name"].astype(str)))
        names = [lut.get(int(i), f"roi-{i}") for i in ids]
    return series.T.astype(np.float32), names


def volume_onsets(raw: Any, pattern: str) -> np.ndarray:
    """Return onsets (s from the first sample) of annotations matching ``pattern``."""
    ann = raw.annotations
    offset = raw.first_time if ann.orig_time is not None else 0.0
    regex = re.compile(pattern)
    sel = [i for i, d in enumerate(ann.description) if regex.match(str(d))]
    return np.sort(np.asarray(ann.onset)[sel] - offset)


def synchronise(
    onsets: np.ndarray, n_vols: int, tr: float, tolerance: float, source: str
) -> tuple[float, list[str]]:
    """Return the time of volume 0 (s from the recording start) and notes.

    Raises
    ------
    SyncError
        If consecutive triggers are not TR apart (allowing whole missing triggers).
    """
    if onsets.size == 0:
        return 0.0, ["synchronised at recording start: no volume triggers found"]
    notes = []
    if onsets.size > 1:
        gaps = np.diff(onsets) / tr
        steps = np.round(gaps)
        if (steps < 1).any() or (np.abs(gaps - steps) > tolerance).any():
            worst = float(np.diff(onsets)[np.argmax(np.abs(gaps - np.maximum(steps, 1)))])
            raise SyncError(
                f"{source}: volume triggers are not one TR ({tr:g} s) apart (e.g. {worst:.4g} "
                "s); check RepetitionTime in the *_bold.json or sync.volume_marker"
            )
        if (steps > 1).any():
            notes.append(f"{int((steps - 1).sum())} volume trigger(s) missing; gaps bridged")
    n_trig = int(np.round((onsets[-1] - onsets[0]) / tr)) + 1
    if n_trig > n_vols:
        notes.append(
            f"{onsets.size} triggers span {n_trig} volumes but the BOLD run has {n_vols}; "
            "the first trigger is volume 0, later triggers ignored"
        )
    elif n_trig < n_vols:
        notes.append(
            f"{onsets.size} triggers for {n_vols} volumes; volumes after the last trigger "
            "assumed to continue every TR"
        )
    return float(onsets[0]), notes


def load_run(bids_root: Path, run: RunFiles, cfg: IngestConfig) -> Recording:
    """Read, preprocess and synchronise one run.

    Parameters
    ----------
    bids_root : Path
    run : RunFiles
    cfg : IngestConfig

    Returns
    -------
    recording : Recording
        Validated; ``ephys`` starts ``lead_in`` s before volume 0.
    """
    import mne
    from mne_bids import BIDSPath, read_raw_bids

    bids_root = Path(bids_root)
    src = str(run.ephys)
    notes: list[str] = []
    meta, meta_path = read_sidecar(
        run.ephys,
        run.datatype,
        bids_root,
        "write it with at least SamplingFrequency (BIDS requires it)",
    )
    if not _sidecar(run.ephys, "channels").with_suffix(".tsv").is_file():
        notes.append("no channels.tsv: channel types and names from the data file header")

    tr, tr_src = read_tr(run, bids_root)
    if run.bold_tsv is not None:
        bold, roi_names = read_roi_tsv(run.bold_tsv)
        bold_file = run.bold_tsv
    else:
        if not cfg.bold.atlas:
            raise IngestError(
                f"{run.bold_nifti}: no ROI time series in derivatives and no atlas; set "
                "bold.atlas (and bold.atlas_labels) in the data config"
            )
        assert run.bold_nifti is not None
        ents = dict(run.entities)
        atlas = _atlas_path(bids_root, cfg.bold.atlas, ents)
        labels = (
            _atlas_path(bids_root, cfg.bold.atlas_labels, ents) if cfg.bold.atlas_labels else None
        )
        bold, roi_names = extract_nifti(run.bold_nifti, atlas, labels)
        bold_file = run.bold_nifti
    if run.bold_nifti is not None:
        import nibabel as nib

        zooms = nib.load(run.bold_nifti).header.get_zooms()
        if len(zooms) > 3 and zooms[3] > 0 and abs(zooms[3] - tr) > 1e-3 * tr:
            notes.append(
                f"NIfTI header TR {zooms[3]:g} s differs from {tr:g} s in {tr_src.name}; "
                "the sidecar wins"
            )
    n_vols = bold.shape[1]

    ents = run.entities
    bpath = BIDSPath(
        root=bids_root,
        subject=ents["subject"],
        session=ents["session"] or None,
        task=ents["task"] or None,
        run=ents["run"] or None,
        acquisition=ents.get("acq") or None,
        split=ents.get("split") or None,
        datatype=run.datatype,
        suffix=run.datatype,
        extension=run.ephys.suffix,
    )
    try:
        raw = read_raw_bids(bpath, verbose=False)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise IngestError(f"{src}: mne-bids could not read it ({err}); fix the file") from err
    sfreq_file = float(raw.info["sfreq"])
    if "SamplingFrequency" not in meta:
        raise SidecarError(f"{meta_path}: no SamplingFrequency; add it (Hz)")
    if abs(float(meta["SamplingFrequency"]) - sfreq_file) > 1e-3 * sfreq_file:
        raise SamplingRateError(
            f"{meta_path}: SamplingFrequency {meta['SamplingFrequency']} Hz disagrees with "
            f"{sfreq_file:g} Hz in the data file {src}; correct the sidecar"
        )

    onsets = volume_onsets(raw, cfg.sync.volume_marker)
    t0, sync_notes = synchronise(onsets, n_vols, tr, cfg.sync.tolerance, src)
    notes += sync_notes
    duration = raw.n_times / sfreq_file
    needed = t0 + n_vols * tr
    if duration + 1.0 / sfreq_file < needed:
        raise ShortRecordingError(
            f"{src}: EEG shorter than BOLD run: {duration:.2f} s recorded, but the "
            f"{n_vols} volumes of {bold_file} (TR {tr:g} s, volume 0 at {t0:.2f} s) need "
            f"{needed:.2f} s; supply the full recording or trim the BOLD run"
        )

    notes += preprocess_raw(raw, cfg.preprocess, src)
    sf = float(raw.info["sfreq"])
    i0 = int(round(t0 * sf))
    n_lead = min(int(round(cfg.sync.lead_in * sf)), i0)
    if n_lead < int(round(cfg.sync.lead_in * sf)):
        notes.append(
            f"lead-in truncated to {n_lead / sf:.2f} s (asked {cfg.sync.lead_in:g} s): "
            "recording starts too close to the first volume"
        )
    stop = min(raw.n_times, i0 + int(round(n_vols * tr * sf)))
    ephys, ch_types = to_array(raw, i0 - n_lead, stop)
    ch_names = list(raw.ch_names)

    parcels, parcel_names = None, []
    files = {"ephys": src, "bold": str(bold_file), "tr": str(tr_src)}
    if cfg.source.enabled:
        from brainxl.shards.ingest.source_recon import reconstruct_parcels

        fwd, parc, names = source_files(bids_root, ents, cfg)
        full, parcel_names, src_notes = reconstruct_parcels(
            raw, fwd, parc, cfg.source, src, names_table=names
        )
        parcels = full[:, i0 - n_lead : stop].astype(np.float32)
        notes += src_notes
        files.update(forward=str(fwd), parcellation=str(parc))
        if not cfg.source.keep_sensors:
            ephys = np.zeros((0, parcels.shape[1]), np.float32)
            ch_names, ch_types = [], []
            notes.append("sensor data not kept (source.keep_sensors=false): ephys has 0 rows")
    rec = Recording(
        subject=ents["subject"],
        session=ents["session"],
        task=ents["task"],
        run=ents["run"],
        ephys=ephys,
        sfreq=sf,
        ch_names=ch_names,
        ch_types=ch_types,
        bold=bold,
        tr=tr,
        roi_names=roi_names,
        lead_in=n_lead / sf,
        parcels=parcels,
        parcel_names=parcel_names,
        source_files=files,
        assumptions=notes,
        extra={
            "volume0_s": t0,
            "n_triggers": int(onsets.size),
            "orig_sfreq": sfreq_file,
            "datatype": run.datatype,
            "mne_version": mne.__version__,
        },
    )
    rec.validate()
    return rec


def source_files(
    bids_root: Path, ents: dict[str, str], cfg: IngestConfig
) -> tuple[Path, Path, Path | None]:
    """Forward, parcellation and parcel-name files of one run (defaults: the simulator's).

    Parameters
    ----------
    bids_root : Path
        Relative patterns in ``cfg.source`` are resolved against it.
    ents : dict of str to str
        The run's entities (``subject``, ...), filled into ``{subject}``-style patterns.
    cfg : IngestConfig

    Returns
    -------
    forward, parcellation : Path
    parcel_names : Path or None
    """
    sub = ents["subject"]
    sc = cfg.source
    fwd = sc.forward or f"{SIM_DERIV}/sub-{sub}/eeg/sub-{sub}_desc-headmodel_fwd.fif"
    parc = sc.parcellation or f"{SIM_DERIV}/atlas/atlas-brainxlsim_desc-sourceparcels.tsv"
    names = sc.parcel_names or (
        "" if sc.parcellation else f"{SIM_DERIV}/atlas/atlas-brainxlsim_dseg.tsv"
    )
    return (
        _atlas_path(bids_root, fwd, ents),
        _atlas_path(bids_root, parc, ents),
        _atlas_path(bids_root, names, ents) if names else None,
    )


def load_subject(bids_root: Path, subject: str, cfg: IngestConfig) -> list[Recording]:
    """Load every run of ``subject`` that has both electrophysiology and BOLD.

    Parameters
    ----------
    bids_root : Path
    subject : str
        Label without ``sub-``.
    cfg : IngestConfig

    Returns
    -------
    recordings : list of Recording
        One per run, in file-name order; all share ``cfg.preprocess.sfreq``.

    Raises
    ------
    IngestError
        (and subclasses) naming the offending file and the fix; also when the subject
        has no usable run.
    """
    bids_root = Path(bids_root)
    subject = subject.removeprefix("sub-")
    runs = find_runs(bids_root, subject, cfg)
    if not runs:
        raise IngestError(
            f"{bids_root / f'sub-{subject}'}: no run with both {'/'.join(_datatypes(cfg))} "
            "data and BOLD (func/*_bold.nii* or derivatives/*_timeseries.tsv); check the "
            "dataset or the tasks/bold settings of the data config (EEG without BOLD: "
            "`brainxl shard --eeg-only` writes pretraining shards)"
        )
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=cfg.blas_threads):
        return [load_run(bids_root, run, cfg) for run in runs]
