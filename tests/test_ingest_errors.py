"""Every bad input gets an IngestError that names the file and the fix."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from brainxl.shards.config import IngestConfig
from brainxl.shards.errors import (
    AtlasMismatchError,
    BadChannelError,
    ChannelNameError,
    IngestError,
    MissingFileError,
    SamplingRateError,
    ShortRecordingError,
    SidecarError,
    SyncError,
)
from brainxl.shards.ingest.bids import load_subject
from ingest_fixtures import make_bids, set_brainvision_channel

from brainxl.channels import UnknownChannelError

EEG = "sub-01/eeg/sub-01_task-rest_run-1_eeg"
BOLD = "sub-01/func/sub-01_task-rest_run-1_bold"
ROI = "derivatives/roi/sub-01/func/sub-01_task-rest_run-1_timeseries"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_bids(tmp_path_factory.mktemp("ingest") / "ds").root


@pytest.fixture
def ds(pristine, tmp_path):
    """A fresh copy of the valid dataset to mutate."""
    return shutil.copytree(pristine, tmp_path / "ds")


def _nifti_cfg() -> IngestConfig:
    cfg = IngestConfig()
    cfg.bold.source = "nifti"
    cfg.bold.atlas = "derivatives/atlas/atlas.nii.gz"
    return cfg


def test_valid_copy_loads(ds):
    assert len(load_subject(ds, "01", IngestConfig())) == 1


def test_missing_eeg_sidecar(ds):
    (ds / f"{EEG}.json").unlink()
    with pytest.raises(MissingFileError, match=r"_eeg\.json: sidecar missing.*SamplingFrequency"):
        load_subject(ds, "01", IngestConfig())


def test_missing_bold_sidecar(ds):
    (ds / f"{BOLD}.json").unlink()
    with pytest.raises(MissingFileError, match=r"_bold\.json: sidecar missing.*RepetitionTime"):
        load_subject(ds, "01", IngestConfig())


def test_bold_sidecar_without_repetition_time(ds):
    (ds / f"{BOLD}.json").write_text(json.dumps({"TaskName": "rest"}))
    with pytest.raises(SidecarError, match=r"_bold\.json: no RepetitionTime; add it"):
        load_subject(ds, "01", IngestConfig())


def test_missing_roi_sidecar(ds):
    (ds / f"{ROI}.json").unlink()
    with pytest.raises(MissingFileError, match=r"_timeseries\.json: sidecar missing"):
        load_subject(ds, "01", IngestConfig())


def test_roi_tr_disagrees_with_bold_json(ds):
    (ds / f"{ROI}.json").write_text(json.dumps({"SamplingFrequency": 1.0}))
    with pytest.raises(
        SamplingRateError, match=r"_timeseries\.json: TR 1 s disagrees.*_bold\.json"
    ):
        load_subject(ds, "01", IngestConfig())


def test_sampling_rate_mismatch(ds):
    meta = json.loads((ds / f"{EEG}.json").read_text())
    meta["SamplingFrequency"] = 500
    (ds / f"{EEG}.json").write_text(json.dumps(meta))
    with pytest.raises(SamplingRateError, match=r"_eeg\.json: SamplingFrequency 500.*250 Hz.*vhdr"):
        load_subject(ds, "01", IngestConfig())


def test_eeg_shorter_than_bold(tmp_path):
    root = make_bids(tmp_path / "ds", tail=0.0).root
    bold = root / f"{BOLD}.nii.gz"
    img = nib.load(bold)  # append 3 volumes the EEG does not cover
    data = np.concatenate([img.get_fdata(), img.get_fdata()[..., :3]], axis=3)
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), bold)
    with pytest.raises(ShortRecordingError, match=r"vhdr: EEG shorter than BOLD run.*bold\.nii"):
        load_subject(root, "01", _nifti_cfg())


def test_nan_channel(ds):
    set_brainvision_channel(ds / f"{EEG}.vhdr", 3, np.nan)
    with pytest.raises(BadChannelError, match=r"vhdr: bad channels: NaN.*\['F3'\].*on_bad_channel"):
        load_subject(ds, "01", IngestConfig())


def test_flat_channel_error_and_drop(ds):
    set_brainvision_channel(ds / f"{EEG}.vhdr", 5, 0.0)
    with pytest.raises(BadChannelError, match=r"vhdr: bad channels: flat signal in \['F4'\]"):
        load_subject(ds, "01", IngestConfig())
    cfg = IngestConfig()
    cfg.preprocess.on_bad_channel = "drop"
    rec = load_subject(ds, "01", cfg)[0]
    assert "F4" not in rec.ch_names and len(rec.ch_names) == 23
    assert any("dropped bad channels" in a and "F4" in a for a in rec.assumptions)


def test_unknown_channel_names(tmp_path):
    root = make_bids(tmp_path / "ds", rename={"Fp1": "Xyz1", "O2": "Chan9"}).root
    with pytest.raises(ChannelNameError, match=r"vhdr.*Xyz1, Chan9.*rename_channels") as err:
        load_subject(root, "01", IngestConfig())
    assert isinstance(err.value, UnknownChannelError) and isinstance(err.value, IngestError)
    cfg = IngestConfig()
    cfg.preprocess.rename_channels = {"Xyz1": "Fp1"}
    cfg.preprocess.drop_channels = ["Chan9"]
    assert len(load_subject(root, "01", cfg)[0].ch_names) == 23


def test_duplicate_canonical_names(tmp_path):
    root = make_bids(tmp_path / "ds", rename={"Fp1": "T3"}).root  # T3 is the old name of T7
    with pytest.raises(ChannelNameError, match=r"same standard name.*T3->T7"):
        load_subject(root, "01", IngestConfig())


def test_atlas_grid_mismatch(ds):
    atlas = ds / "derivatives/atlas/atlas.nii.gz"
    img = nib.load(atlas)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:5], img.affine), atlas)
    with pytest.raises(AtlasMismatchError, match=r"atlas\.nii\.gz: atlas grid.*bold\.nii\.gz"):
        load_subject(ds, "01", _nifti_cfg())


def test_atlas_affine_mismatch(ds):
    atlas = ds / "derivatives/atlas/atlas.nii.gz"
    img = nib.load(atlas)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), np.diag([2.0, 2.0, 2.0, 1.0])), atlas)
    with pytest.raises(AtlasMismatchError, match=r"atlas\.nii\.gz: atlas affine.*resample"):
        load_subject(ds, "01", _nifti_cfg())


def test_missing_atlas(ds):
    cfg = _nifti_cfg()
    cfg.bold.atlas = "derivatives/atlas/nope.nii.gz"
    with pytest.raises(MissingFileError, match=r"nope\.nii\.gz: atlas not found"):
        load_subject(ds, "01", cfg)


def test_trigger_spacing_disagrees_with_tr(ds):
    for path in (ds / f"{BOLD}.json", ds / f"{ROI}.json"):
        meta = json.loads(path.read_text())
        meta.pop("SamplingFrequency", None)
        meta["RepetitionTime"] = 1.5
        path.write_text(json.dumps(meta))
    with pytest.raises(SyncError, match=r"vhdr: volume triggers are not one TR \(1\.5 s\)"):
        load_subject(ds, "01", IngestConfig())


def test_bad_input_leaves_files_untouched(ds):
    before = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    (ds / f"{BOLD}.json").write_text("{not json")
    with pytest.raises(SidecarError, match=r"_bold\.json: not valid JSON"):
        load_subject(ds, "01", IngestConfig())
    after = {p: p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    changed = [p.name for p in before if before[p] != after[p]]
    assert changed == ["sub-01_task-rest_run-1_bold.json"] and set(after) == set(before)
