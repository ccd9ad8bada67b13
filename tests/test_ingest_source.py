"""Source reconstruction onto parcels, checked against the true parcel activity."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from brainxl.shards.config import IngestConfig
from brainxl.shards.errors import MissingFileError, SourceModelError
from brainxl.shards.ingest.bids import list_subjects, load_subject
from ingest_fixtures import make_bids
from scipy.signal import butter, hilbert, resample_poly, sosfiltfilt

SIM = "derivatives/brainxl-sim"


def _zcorr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between every row of ``a`` and every row of ``b``, shape (len(a), len(b))."""
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    return a @ b.T / a.shape[1]


def _truth_on_grid(truth: np.ndarray, sfreq_in: float, rec) -> np.ndarray:
    """True parcel signals resampled to 200 Hz and cut like ``rec.parcels``."""
    assert sfreq_in == 250.0
    t200 = resample_poly(truth, 4, 5, axis=1)
    start = int(round((rec.extra["volume0_s"] - rec.lead_in) * rec.sfreq))
    seg = t200[:, start : start + rec.parcels.shape[1]]
    sos = butter(4, [0.5, 75.0], btype="band", fs=rec.sfreq, output="sos")
    return sosfiltfilt(sos, seg, axis=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_bids(tmp_path_factory.mktemp("src") / "ds", source=True)


def _cfg(**source) -> IngestConfig:
    cfg = IngestConfig()
    cfg.source.enabled = True
    for k, v in source.items():
        setattr(cfg.source, k, v)
    return cfg


@pytest.mark.parametrize("method", ["eLORETA", "dSPM", "MNE"])
def test_parcels_match_truth_on_small_head(small, method):
    rec = load_subject(small.root, "01", _cfg(method=method))[0]
    assert rec.parcel_names == ["parcel-1", "parcel-2", "parcel-3", "parcel-4"]
    assert rec.parcels.shape == (4, rec.ephys.shape[1]) and rec.parcels.dtype == np.float32
    assert rec.source_files["forward"].endswith("_desc-headmodel_fwd.fif")
    r = np.abs(_zcorr(rec.parcels, _truth_on_grid(small.parcels["1"], small.sfreq, rec)))
    assert (np.diag(r) > 0.8).all(), r
    assert np.median(r[~np.eye(4, dtype=bool)]) < 0.3, r


def test_empirical_noise_covariance(small):
    # the run's own covariance holds the signal too, so it is only checked to work
    rec = load_subject(small.root, "01", _cfg(noise_cov="empirical"))[0]
    assert rec.parcels.shape == (4, rec.ephys.shape[1])
    assert np.isfinite(rec.parcels).all() and (rec.parcels.std(axis=1) > 0).all()
    assert any("empirical noise covariance" in a for a in rec.assumptions)


def test_sensors_dropped_when_not_kept(small):
    rec = load_subject(small.root, "01", _cfg(keep_sensors=False))[0]
    assert rec.ephys.shape == (0, rec.parcels.shape[1])
    assert rec.ch_names == [] and rec.ch_types == []
    assert any("keep_sensors" in a for a in rec.assumptions)


def test_mean_flip_needs_fixed_orientation(small):
    with pytest.raises(SourceModelError, match="mean_flip needs a fixed-orientation"):
        load_subject(small.root, "01", _cfg(parcel_mode="mean_flip"))


def test_source_file_errors(small, tmp_path):
    root = shutil.copytree(small.root, tmp_path / "ds")
    with pytest.raises(MissingFileError, match=r"nope_fwd\.fif: forward model not found"):
        load_subject(root, "01", _cfg(forward="nope_fwd.fif"))
    parc = root / SIM / "atlas" / "atlas-brainxlsim_desc-sourceparcels.tsv"
    parc.write_text("source\tparcel\n0\ta\n99\tb\n")
    with pytest.raises(SourceModelError, match=r"sourceparcels\.tsv: source indices.*0\.\.19"):
        load_subject(root, "01", _cfg())
    parc.write_text("where\twhat\n0\ta\n")
    with pytest.raises(SourceModelError, match=r"sourceparcels\.tsv: needs a source index"):
        load_subject(root, "01", _cfg())


# --- end to end on the project's simulator (session fixtures from conftest.py) ---------


def _check_against_truth(root, rec) -> None:
    """Reconstructed parcels track the simulator's true parcel activity."""
    stem = f"sub-{rec.subject}_task-{rec.task}_run-{rec.run}"
    path = root / SIM / f"sub-{rec.subject}" / "eeg" / f"{stem}_desc-sources_timeseries.npy"
    truth = _truth_on_grid(np.load(path), rec.extra["orig_sfreq"], rec)
    r = np.abs(_zcorr(rec.parcels, truth))
    diag, off = np.diag(r), r[~np.eye(len(r), dtype=bool)]
    assert np.median(diag) > 0.15 and np.median(diag) > 3 * np.median(off), (diag, off)
    # alpha-band envelopes, against the same parcel's envelope shifted by half the run
    sos = butter(4, [8.0, 12.0], btype="band", fs=rec.sfreq, output="sos")
    env_rec = np.abs(hilbert(sosfiltfilt(sos, rec.parcels, axis=1), axis=1))
    env_true = np.abs(hilbert(sosfiltfilt(sos, truth, axis=1), axis=1))
    r_env = np.diag(_zcorr(env_rec, env_true))
    shifted = np.diag(_zcorr(env_rec, np.roll(env_true, env_true.shape[1] // 2, axis=1)))
    assert np.median(r_env) > 0.1 > abs(np.median(shifted)), (r_env, shifted)


def test_sim_bids_brainvision(sim_bids):
    from conftest import SIM_BIDS_ARGS

    cfg = _cfg()
    assert list_subjects(sim_bids, cfg) == [f"{k:02d}" for k in range(1, 4)]
    rec = load_subject(sim_bids, "02", cfg)[0]
    n_vols = int(SIM_BIDS_ARGS["minutes"] * 60 / 2.0)
    assert rec.sfreq == 200.0 and rec.lead_in == 16.0 and rec.tr == 2.0
    assert rec.ephys.shape == (64, int((16.0 + n_vols * 2.0) * 200))
    assert rec.bold.shape == (64, n_vols) and rec.roi_names[0] == "P001"
    assert rec.parcel_names == rec.roi_names  # parcels named like the BOLD ROIs
    assert rec.ch_names[:3] == ["Fp1", "AF7", "AF3"]
    assert rec.extra["n_triggers"] == n_vols and rec.extra["volume0_s"] == pytest.approx(20.0)
    assert 2.0 < float(np.median(rec.ephys.std(axis=1))) < 100.0  # microvolts
    assert rec.source_files["bold"].endswith("atlas-brainxlsim_timeseries.tsv")  # not noisefree
    _check_against_truth(sim_bids, rec)


def test_sim_bids_edf_legacy_names(sim_bids_edf_legacy):
    subjects = list_subjects(sim_bids_edf_legacy, IngestConfig())
    assert len(subjects) == 2
    recs = [load_subject(sim_bids_edf_legacy, s, IngestConfig())[0] for s in subjects]
    for rec in recs:
        assert rec.source_files["ephys"].endswith("_eeg.edf")
        assert len(rec.ch_names) == 74 and {"T7", "P8", "Fp1"} <= set(rec.ch_names)
        assert not any(c.startswith("EEG") for c in rec.ch_names)
        assert rec.lead_in == 16.0 and rec.parcels is None
    rec = load_subject(sim_bids_edf_legacy, subjects[0], _cfg(method="MNE"))[0]
    assert rec.parcels.shape == (64, rec.ephys.shape[1])
    _check_against_truth(sim_bids_edf_legacy, rec)
