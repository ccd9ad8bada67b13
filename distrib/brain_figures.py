"""A run's atlas, and the brain/sensor-space figures of its evaluation report.

:func:`find_atlas` answers "is the run's atlas known?": the label image its ROIs were
extracted with (``bold.atlas`` of its ingest settings), or a ``*_dseg.nii*`` in a
``derivatives`` folder of the input or training dataset whose label names are exactly
the run's ROIs (the simulator's ``derivatives/brainxl-sim/atlas``).
:func:`evaluation_figures` adds per-ROI r on the brain, NeuroBOLT's channel-weight
topographies and fMRI -> EEG power spectra to a report's figure set.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Atlas:
    """A label image, its ``index``/``name`` table and its name (the ``space-`` entity)."""

    image: Path
    labels: Path | None
    name: str


def _atlas_name(path: Path) -> str:
    for part in path.name.split(".")[0].split("_"):
        if part.startswith("atlas-"):
            return part[6:]
    return ""


def _labels_of(image: Path) -> Path | None:
    stem = image.name.split(".")[0]
    tsv = image.with_name(stem + ".tsv")
    return tsv if tsv.is_file() else None


def _names_match(image: Path, labels: Path | None, roi_names: list[str]) -> bool:
    from brainxl.derivatives import atlas_label_ids

    try:
        atlas_label_ids(image, roi_names, labels)
    except (ValueError, OSError, KeyError):
        return False
    return True


def find_atlas(
    manifest: dict[str, Any],
    roi_names: list[str],
    roots: list[Path] | None = None,
    atlas: str | Path | None = None,
    atlas_labels: str | Path | None = None,
) -> Atlas | None:
    """The atlas of a run's ROIs, or None when it is not known.

    Parameters
    ----------
    manifest : dict
        The run's shard manifest (ingest settings, ``source`` dataset).
    roi_names : list of str
    roots : list of Path, optional
        BIDS roots to search first (the prediction input).
    atlas, atlas_labels : path, optional
        Given by the user: used as they are (checked against the ROI names).

    Raises
    ------
    ValueError
        If a given atlas does not label the run's ROIs.
    """
    if atlas is not None:
        image = Path(atlas)
        labels = Path(atlas_labels) if atlas_labels else _labels_of(image)
        if not image.is_file():
            raise ValueError(f"{image}: atlas not found; fix --atlas")
        if not _names_match(image, labels, roi_names):
            from brainxl.derivatives import atlas_label_ids

            atlas_label_ids(image, roi_names, labels)  # raises with the names
        return Atlas(image, labels, _atlas_name(image))
    search = [Path(r) for r in roots or []]
    if manifest.get("source"):
        search.append(Path(manifest["source"]))
    bold = manifest.get("settings", {}).get("ingest", {}).get("bold", {})
    if bold.get("atlas") and "{" not in bold["atlas"]:
        for root in search:
            image = Path(bold["atlas"])
            image = image if image.is_absolute() else root / image
            labels = None
            if bold.get("atlas_labels"):
                lab = Path(bold["atlas_labels"])
                labels = lab if lab.is_absolute() else root / lab
            if image.is_file() and _names_match(image, labels, roi_names):
                return Atlas(image, labels, _atlas_name(image))
    for root in search:
        deriv = root / "derivatives"
        if not deriv.is_dir():
            continue
        for image in sorted(deriv.rglob("*_dseg.nii*")):
            labels = _labels_of(image)
            if _names_match(image, labels, roi_names):
                return Atlas(image, labels, _atlas_name(image))
    return None


def evaluation_figures(
    figures: dict[str, Any],
    summary: Any,
    *,
    manifest: dict[str, Any] | None = None,
    model: Any = None,
    adapter: Any = None,
    ch_names: list[str] | None = None,
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    sfreq: float | None = None,
    roots: list[Path] | None = None,
) -> dict[str, Any]:
    """``figures`` with the brain and sensor-space figures added where they apply.

    * ``roi_r_brain`` (right after ``roi_r_vs_ceiling``): per-ROI r on the atlas, when the
      run's atlas is known (EEG -> fMRI).
    * ``readout_topomaps``: NeuroBOLT's channel readout weights per ROI, on the scalp.
    * ``power_spectra_sub-XX``: fMRI -> EEG, predicted against true spectra per subject
      (``predictions`` maps subject -> (pred, true), each (n_times, n_channels)).
    """
    from brainxl import brainmaps

    new: dict[str, Any] = {}
    task = getattr(adapter, "task", "eeg2fmri")
    if task == "eeg2fmri" and manifest is not None:
        atlas = find_atlas(manifest, list(summary.roi_names), roots)
        if atlas is not None:
            new["roi_r_brain"] = brainmaps.plot_roi_values_brain(
                np.asarray(summary.roi_r), list(summary.roi_names), atlas.image, atlas.labels
            )
    out = brainmaps.insert_after(figures, "roi_r_vs_ceiling", new)
    if model is not None and adapter is not None and adapter.ch_idx is not None and ch_names:
        w = brainmaps.neurobolt_channel_weights(model, adapter.ch_idx.tolist())
        if w is not None:
            # channels without scalp positions (e.g. MEG): no topography
            with contextlib.suppress(ValueError):
                out["readout_topomaps"] = brainmaps.plot_channel_weight_topomaps(
                    w, ch_names, list(summary.roi_names)
                )
    if task == "fmri2eeg" and predictions and sfreq:
        for sub, (pred, true) in predictions.items():
            out[f"power_spectra_sub-{sub}"] = brainmaps.plot_power_spectra(
                pred, true, sfreq, list(summary.roi_names)
            )
    return out
