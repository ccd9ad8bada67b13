"""Predictions written where neuroimaging tools read them: a BIDS derivatives dataset.

* :func:`write_description` - ``dataset_description.json`` (``DatasetType: derivative``,
  ``GeneratedBy`` naming brainxl, the run and its weights).
* :func:`write_roi_timeseries` - ``*_desc-brainxl_timeseries.tsv`` (one column per ROI,
  one row per volume) and its JSON sidecar (``RepetitionTime``, the source run).
* :func:`parcel_image` / :func:`write_bold_nifti` - a 4D NIfTI in the atlas space, each
  parcel filled with its time series (nilearn ``NiftiLabelsMasker.inverse_transform``).
* :func:`write_raw` - predicted electrophysiology as an MNE raw file (FIF, BrainVision
  or EDF) with channel names, types, units and sampling rate.

Every file appears whole or not at all: each writer fills a hidden staging folder
(``.brainxl-partial-*``) beside its target and renames the finished files into place, so
a process killed mid-way leaves complete files and at most a staging folder, which the
next :func:`write_description` on the same dataset removes (:func:`remove_partial`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

PIPELINE = "brainxl"
DESC = "brainxl"
#: Raw formats of :func:`write_raw` and their file endings.
RAW_FORMATS = {"fif": "_eeg.fif", "brainvision": "_eeg.vhdr", "edf": "_eeg.edf"}
_MEG_FIF = "_meg.fif"
#: Prefix of the hidden staging folders of unfinished writes.
PARTIAL = ".brainxl-partial-"


@contextmanager
def _staged(folder: Path) -> Iterator[Path]:
    """A hidden folder to write files in; on success each is fsynced and renamed into
    ``folder`` (an atomic replace of any older file), on an error all are dropped."""
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=folder))
    try:
        yield stage
        for f in sorted(stage.iterdir()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_sidecar(path: Path, meta: Mapping[str, Any]) -> None:
    """A BIDS JSON sidecar (indented; paths and other objects as strings)."""
    path.write_text(json.dumps(dict(meta), indent=2, default=str) + "\n")


def remove_partial(out: str | Path) -> list[Path]:
    """Remove the staging folders a killed writer left under ``out``; the removed paths."""
    out = Path(out)
    if not out.is_dir():
        return []
    stale = sorted(p for p in out.rglob(f"{PARTIAL}*") if p.is_dir())
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("brainxl")
    except PackageNotFoundError:
        return "unknown"


def write_description(
    out: str | Path,
    run_id: str,
    weights: str,
    *,
    run_dir: str | Path | None = None,
    source: str | Path | None = None,
    model: str = "",
) -> Path:
    """Write (or refresh) the derivatives folder's ``dataset_description.json``.

    Parameters
    ----------
    out : path
        The derivatives dataset root.
    run_id : str
        The run folder's name.
    weights : str
        ``"best"``, ``"final"`` or a checkpoint tag.
    run_dir : path, optional
    source : path, optional
        The input dataset or file.
    model : str
        Model name and flavor.

    Returns
    -------
    Path
        The written file.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    desc = f"Predictions of brainxl run {run_id} ({model}), {weights} weights"
    if run_dir is not None:
        desc += f"; run folder {run_dir}"
    content: dict[str, Any] = {
        "Name": f"brainxl predictions ({run_id})",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "brainxl",
                "Version": _version(),
                "Description": desc,
                "CodeURL": "https://github.com/brainxl/brainxl",
            }
        ],
    }
    if source is not None:
        content["SourceDatasets"] = [{"URL": Path(source).resolve().as_uri()}]
    remove_partial(out)
    with _staged(out) as stage:
        _write_description_files(stage, content, desc)
    return out / "dataset_description.json"


def _write_description_files(folder: Path, content: dict[str, Any], desc: str) -> None:
    (folder / "dataset_description.json").write_text(json.dumps(content, indent=2) + "\n")
    (folder / "README").write_text(
        f"brainxl predictions\n===================\n\n{desc}.\n\n"
        "func/*_desc-brainxl_timeseries.tsv: predicted BOLD, one column per ROI, one row per "
        "volume (JSON sidecar: RepetitionTime, StartTime, source run).\n"
        "func/*_desc-brainxl_bold.nii.gz: the same in the atlas space (when the atlas is "
        "known).\neeg/ and meg/: predicted electrophysiology as MNE raw files.\n"
    )
    # ROI time series (BEP012/BEP017) have no rule in the BIDS schema yet: the validator
    # is told to skip them, and the HTML report, instead of flagging them as unknown files
    (folder / ".bidsignore").write_text("*_timeseries.tsv\n*_timeseries.json\nreport.html\n")


def bids_stem(entities: Mapping[str, str]) -> str:
    """``sub-01[_ses-1]_task-rest[_run-1]`` from ``subject/session/task/run`` entities."""
    sub = entities.get("subject") or "unknown"
    parts = [f"sub-{sub}"]
    if entities.get("session"):
        parts.append(f"ses-{entities['session']}")
    parts.append(f"task-{entities.get('task') or 'unknown'}")
    if entities.get("run"):
        parts.append(f"run-{entities['run']}")
    return "_".join(parts)


def _folder(out: Path, entities: Mapping[str, str], datatype: str) -> Path:
    folder = out / f"sub-{entities.get('subject') or 'unknown'}"
    if entities.get("session"):
        folder = folder / f"ses-{entities['session']}"
    folder = folder / datatype
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_roi_timeseries(
    out: str | Path,
    entities: Mapping[str, str],
    data: np.ndarray,
    roi_names: Sequence[str],
    tr: float,
    start_time: float,
    *,
    source: str = "",
    units: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write predicted ROI time series as ``*_desc-brainxl_timeseries.tsv`` + JSON.

    Parameters
    ----------
    out : path
        Derivatives dataset root.
    entities : dict
        ``subject``, ``session``, ``task``, ``run`` of the source run.
    data : ndarray, shape (n_volumes, n_rois)
        One row per consecutive volume, starting at ``start_time``.
    roi_names : sequence of str
        Column names.
    tr : float
        Repetition time (s).
    start_time : float
        Time of the first row relative to volume 0 of the source run (s).
    source : str
        The source recording (written as ``Sources``).
    units : str
    extra : dict, optional
        More sidecar fields.

    Returns
    -------
    Path
        The TSV file.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(roi_names):
        raise ValueError(f"data has shape {data.shape} but {len(roi_names)} ROI names")
    folder = _folder(Path(out), entities, "func")
    stem = f"{bids_stem(entities)}_desc-{DESC}_timeseries"
    meta = {
        "RepetitionTime": float(tr),
        "SamplingFrequency": 1.0 / float(tr),
        "StartTime": float(start_time),
        "Description": "BOLD predicted by brainxl, one column per ROI, one row per volume",
    }
    if units:
        meta["Units"] = units
    if source:
        meta["Sources"] = [str(source)]
    meta.update(dict(extra or {}))
    with _staged(folder) as stage:
        with open(stage / f"{stem}.tsv", "w") as fh:
            fh.write("\t".join(roi_names) + "\n")
            np.savetxt(fh, data, fmt="%.9g", delimiter="\t")
        _write_sidecar(stage / f"{stem}.json", meta)
    return folder / f"{stem}.tsv"


def read_roi_timeseries(path: str | Path) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Read back a file of :func:`write_roi_timeseries`.

    Returns
    -------
    data : ndarray, shape (n_volumes, n_rois)
    names : list of str
    sidecar : dict
    """
    path = Path(path)
    with open(path) as fh:
        names = fh.readline().rstrip("\n").split("\t")
    data = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2)
    meta = json.loads(path.with_suffix(".json").read_text())
    return data, names, meta


def atlas_label_ids(
    atlas_img: Any, roi_names: Sequence[str], labels_tsv: str | Path | None = None
) -> list[int]:
    """The atlas label value of each ROI name.

    Names come from ``labels_tsv`` (columns ``index``, ``name``) or are ``roi-<index>``.

    Raises
    ------
    ValueError
        If a name is not in the atlas, naming the file and the fix.
    """
    import nibabel as nib
    import pandas as pd

    img = nib.load(atlas_img) if isinstance(atlas_img, str | Path) else atlas_img
    ids = np.unique(np.asarray(img.dataobj)).astype(int)
    ids = ids[ids != 0]
    lut = {f"roi-{i}": int(i) for i in ids}
    if labels_tsv is not None:
        table = pd.read_csv(labels_tsv, sep="\t")
        lut.update(dict(zip(table["name"].astype(str), table["index"].astype(int))))
    missing = [n for n in roi_names if n not in lut or lut[n] not in set(ids.tolist())]
    if missing:
        where = labels_tsv or getattr(img, "get_filename", lambda: "the atlas")()
        raise ValueError(
            f"{where}: ROIs {missing[:6]} are not labels of the atlas; give the atlas the run's "
            "ROIs were extracted with (--atlas, --atlas-labels)"
        )
    return [lut[n] for n in roi_names]


def parcel_image(
    values: np.ndarray,
    atlas_img: Any,
    roi_names: Sequence[str],
    labels_tsv: str | Path | None = None,
) -> Any:
    """An image in the atlas space with each parcel filled with its value(s).

    Parameters
    ----------
    values : ndarray, shape (n_rois,) or (n_times, n_rois)
    atlas_img : path or nibabel image
        Integer label image (0 = background).
    roi_names : sequence of str
        The ROI of each column of ``values``.
    labels_tsv : path, optional
        ``index``/``name`` table naming the labels.

    Returns
    -------
    nibabel.Nifti1Image
        3D for one value per ROI, 4D (x, y, z, n_times) otherwise; voxels outside the
        ROIs are 0.
    """
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker

    img = nib.load(atlas_img) if isinstance(atlas_img, str | Path) else atlas_img
    ids = atlas_label_ids(img, roi_names, labels_tsv)
    values = np.asarray(values, dtype=np.float32)
    one = values.ndim == 1
    v = values[None, :] if one else values
    present = np.unique(np.asarray(img.dataobj)).astype(int)
    present = present[present != 0]
    signals = np.zeros((v.shape[0], present.size), np.float32)
    col = {int(lab): i for i, lab in enumerate(present)}
    for j, lab in enumerate(ids):
        signals[:, col[lab]] = v[:, j]
    masker = NiftiLabelsMasker(labels_img=img, resampling_target=None).fit()
    out = masker.inverse_transform(signals)
    if one:
        out = nib.Nifti1Image(np.asarray(out.dataobj)[..., 0], out.affine, out.header)
    return out


def write_bold_nifti(
    out: str | Path,
    entities: Mapping[str, str],
    data: np.ndarray,
    roi_names: Sequence[str],
    tr: float,
    atlas_img: Any,
    labels_tsv: str | Path | None = None,
    space: str = "",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write predicted BOLD as a 4D NIfTI in the atlas space (+ JSON sidecar).

    Parameters
    ----------
    out : path
    entities : dict
    data : ndarray, shape (n_volumes, n_rois)
    roi_names : sequence of str
    tr : float
    atlas_img : path or nibabel image
    labels_tsv : path, optional
    space : str
        ``space-`` entity (the atlas name); omitted when empty.
    extra : dict, optional
        More sidecar fields.

    Returns
    -------
    Path
        ``sub-XX/func/sub-XX_..._[space-X_]desc-brainxl_bold.nii.gz``.
    """
    import nibabel as nib

    img = parcel_image(data, atlas_img, roi_names, labels_tsv)
    arr = np.asarray(img.dataobj, dtype=np.float32)
    nii = nib.Nifti1Image(arr, img.affine)
    zooms = nii.header.get_zooms()[:3]
    nii.header.set_zooms((*zooms, float(tr)))
    nii.header.set_xyzt_units("mm", "sec")
    nii.header.set_qform(img.affine, code=1)
    nii.header.set_sform(img.affine, code=1)
    folder = _folder(Path(out), entities, "func")
    sp = f"_space-{space}" if space else ""
    stem = f"{bids_stem(entities)}{sp}_desc-{DESC}_bold"
    meta: dict[str, Any] = {
        "RepetitionTime": float(tr),
        "TaskName": entities.get("task") or "unknown",
        "SkullStripped": False,
        "Description": "BOLD predicted by brainxl; each atlas parcel holds its ROI's series",
    }
    if space:
        ref = Path(atlas_img).resolve().as_uri() if isinstance(atlas_img, str | Path) else space
        meta["SpatialReference"] = {"URI": ref} if ref.startswith("file:") else ref
    meta.update(dict(extra or {}))
    with _staged(folder) as stage:
        nib.save(nii, stage / f"{stem}.nii.gz")
        _write_sidecar(stage / f"{stem}.json", meta)
    return folder / f"{stem}.nii.gz"


#: Scale from stored units (µV, fT, fT/cm) to SI (V, T, T/m) per channel type.
TO_SI = {"eeg": 1e-6, "mag": 1e-15, "grad": 1e-13, "misc": 1.0}


def write_raw(
    out: str | Path,
    entities: Mapping[str, str],
    data: np.ndarray,
    ch_names: Sequence[str],
    ch_types: Sequence[str],
    sfreq: float,
    fmt: str = "fif",
    *,
    first_time: float = 0.0,
    description: str = "",
    sidecar: Mapping[str, Any] | None = None,
) -> Path:
    """Write predicted electrophysiology as an MNE raw file.

    Parameters
    ----------
    out : path
        Derivatives dataset root.
    entities : dict
    data : ndarray, shape (n_times, n_channels)
        In stored units: µV (EEG), fT (mag), fT/cm (grad); other types as they are.
    ch_names, ch_types : sequence of str
    sfreq : float
    fmt : {"fif", "brainvision", "edf"}
    first_time : float
        Time of the first sample relative to volume 0 (s), kept in the description.
    description : str
    sidecar : dict, optional
        Written as the JSON sidecar beside the raw file (same stem).

    Returns
    -------
    Path
        ``sub-XX/eeg/sub-XX_..._desc-brainxl_eeg.<ext>`` (``_meg.fif`` for MEG).
    """
    import mne

    if fmt not in RAW_FORMATS:
        raise ValueError(f"raw format {fmt!r}; choose one of {', '.join(RAW_FORMATS)}")
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(ch_names):
        raise ValueError(f"data has shape {data.shape} but {len(ch_names)} channel names")
    types = [t if t in TO_SI else "misc" for t in ch_types]
    meg = bool({"mag", "grad"} & set(types))
    if meg and fmt != "fif":
        raise ValueError(f"MEG predictions are written as FIF only, not {fmt!r}; use fif")
    info = mne.create_info(list(ch_names), float(sfreq), types)
    scale = np.array([TO_SI[t] for t in types])
    raw = mne.io.RawArray((data * scale).T, info, verbose=False)
    raw.info["description"] = (
        description or "brainxl prediction"
    ) + f"; first sample at {first_time:.6g} s relative to volume 0"
    datatype = "meg" if meg else "eeg"
    folder = _folder(Path(out), entities, datatype)
    ending = _MEG_FIF if meg else RAW_FORMATS[fmt]
    name = f"{bids_stem(entities)}_desc-{DESC}{ending}"
    with _staged(folder) as stage:  # BrainVision: .vhdr/.vmrk/.eeg, named for each other
        if fmt == "fif":
            raw.save(stage / name, overwrite=True, verbose=False)
        else:
            mne.export.export_raw(stage / name, raw, fmt=fmt, overwrite=True, verbose=False)
        if sidecar is not None:
            _write_sidecar((stage / name).with_suffix(".json"), sidecar)
    return folder / name
