"""BIDS ingest on small real BIDS datasets (BrainVision and EDF, two naming styles)."""

from __future__ import annotations

import numpy as np
import pytest
from brainxl.shards.config import IngestConfig
from brainxl.shards.errors import IngestError, SyncError
from brainxl.shards.ingest.bids import find_runs, list_subjects, load_subject, synchronise
from ingest_fixtures import STANDARD, make_bids, make_meg_bids


def test_brainvision_standard_names_roi_tsv(tmp_path):
    sim = make_bids(tmp_path / "ds", runs=("1", "2"))
    cfg = IngestConfig()
    assert list_subjects(sim.root, cfg) == ["01"]
    recs = load_subject(sim.root, "01", cfg)
    assert [r.run for r in recs] == ["1", "2"]
    for rec in recs:
        assert rec.subject == "01" and rec.task == "rest" and rec.session == ""
        assert rec.sfreq == 200.0 and rec.tr == 2.0
        assert rec.ch_names == STANDARD and set(rec.ch_types) == {"eeg"}
        # lead-in truncated to the 3 s before volume 0 that exist; data to the last volume
        assert rec.lead_in == pytest.approx(3.0)
        assert rec.ephys.shape == (len(STANDARD), int((3.0 + 20 * 2.0) * 200))
        assert rec.ephys.dtype == np.float32
        assert any("lead-in truncated" in a for a in rec.assumptions)
        # the observed ROI TSV, not the noise-free decoy (all zeros)
        np.testing.assert_allclose(rec.bold, sim.bold[rec.run], atol=1e-4)
        assert rec.roi_names == ["left", "right", "top"]
        assert rec.extra["volume0_s"] == pytest.approx(3.0)
        assert rec.extra["n_triggers"] == 20
        assert rec.source_files["ephys"].endswith(f"run-{rec.run}_eeg.vhdr")
        assert "timeseries.tsv" in rec.source_files["bold"]


def test_units_are_microvolts(tmp_path):
    sim = make_bids(tmp_path / "ds")  # white noise, 10 uV std at 250 Hz
    cfg = IngestConfig()
    cfg.preprocess.l_freq = cfg.preprocess.h_freq = None  # only resampling to 200 Hz
    rec = load_subject(sim.root, "01", cfg)[0]
    # resampling 250 -> 200 Hz keeps the 0-100 Hz part of the white noise: 10*sqrt(0.8)
    assert np.median(rec.ephys.std(axis=1)) == pytest.approx(10 * np.sqrt(0.8), rel=0.1)


def test_edf_with_legacy_names_maps_onto_vocabulary(tmp_path):
    sim = make_bids(tmp_path / "ds", fmt="EDF", legacy=True)
    rec = load_subject(sim.root, "01", IngestConfig())[0]
    assert rec.source_files["ephys"].endswith("_eeg.edf")
    # EEG T3-REF -> T7 etc.; the ECG channel is not EEG and is dropped
    assert rec.ch_names == STANDARD
    assert any("ECG" in a for a in rec.assumptions)
    assert rec.ephys.shape[0] == len(STANDARD)
    assert rec.extra["n_triggers"] == 20


def test_nifti_with_atlas(tmp_path):
    sim = make_bids(tmp_path / "ds")
    cfg = IngestConfig()
    cfg.bold.source = "nifti"
    cfg.bold.atlas = "derivatives/atlas/atlas.nii.gz"
    cfg.bold.atlas_labels = "derivatives/atlas/atlas_labels.tsv"
    rec = load_subject(sim.root, "01", cfg)[0]
    assert rec.source_files["bold"].endswith("_bold.nii.gz")
    assert rec.roi_names == ["left", "right", "top"]
    np.testing.assert_allclose(rec.bold, sim.bold["1"], rtol=1e-5)  # raw, not standardised


def test_auto_falls_back_to_nifti_without_derivatives(tmp_path):
    sim = make_bids(tmp_path / "ds")
    import shutil

    shutil.rmtree(sim.root / "derivatives" / "roi")
    cfg = IngestConfig()
    with pytest.raises(IngestError, match="no ROI time series in derivatives and no atlas"):
        load_subject(sim.root, "01", cfg)
    cfg.bold.atlas = "derivatives/atlas/atlas.nii.gz"
    rec = load_subject(sim.root, "01", cfg)[0]
    assert rec.roi_names == ["roi-1", "roi-2", "roi-3"]
    assert rec.bold.shape == (3, 20)


def test_no_triggers_synchronises_at_start(tmp_path):
    sim = make_bids(tmp_path / "ds", markers=False)
    rec = load_subject(sim.root, "01", IngestConfig())[0]
    assert rec.lead_in == 0.0
    assert rec.extra["volume0_s"] == 0.0
    assert any("recording start" in a for a in rec.assumptions)
    assert rec.ephys.shape[1] == 20 * 2 * 200


def test_lead_in_is_kept_when_available(tmp_path):
    sim = make_bids(tmp_path / "ds", t0=5.0)
    cfg = IngestConfig()
    cfg.sync.lead_in = 4.0
    rec = load_subject(sim.root, "01", cfg)[0]
    assert rec.lead_in == 4.0
    assert not any("lead-in" in a for a in rec.assumptions)
    assert rec.ephys.shape[1] == int((4.0 + 40.0) * 200)


def test_subject_and_task_filters(tmp_path):
    sim = make_bids(tmp_path / "ds")
    cfg = IngestConfig(subjects=["sub-01"])
    assert list_subjects(sim.root, cfg) == ["01"]
    with pytest.raises(IngestError, match="subjects \\['02'\\] not in the dataset"):
        list_subjects(sim.root, IngestConfig(subjects=["02"]))
    assert find_runs(sim.root, "01", IngestConfig(tasks=["motor"])) == []
    with pytest.raises(IngestError, match="no run with both"):
        load_subject(sim.root, "01", IngestConfig(tasks=["motor"]))
    with pytest.raises(IngestError, match="dataset_description.json"):
        list_subjects(tmp_path, cfg)


def test_synchronise_rules():
    tr = 2.0
    on = 1.0 + tr * np.arange(10)
    t0, notes = synchronise(on, 10, tr, 0.05, "f.vhdr")
    assert t0 == 1.0 and notes == []
    # one missing trigger is bridged and noted
    t0, notes = synchronise(np.delete(on, 4), 10, tr, 0.05, "f.vhdr")
    assert t0 == 1.0 and "missing" in notes[0]
    # fewer triggers than volumes, and more
    assert "continue every TR" in synchronise(on[:5], 10, tr, 0.05, "f")[1][0]
    assert "ignored" in synchronise(on, 5, tr, 0.05, "f")[1][0]
    with pytest.raises(SyncError, match="f.vhdr: volume triggers are not one TR"):
        synchronise(1.0 + 2.5 * np.arange(10), 10, tr, 0.05, "f.vhdr")


def test_sessions_and_run_numbers(tmp_path):
    sim = make_bids(tmp_path / "ds", session="pre", runs=("01",))
    rec = load_subject(sim.root, "01", IngestConfig())[0]
    assert (rec.session, rec.run) == ("pre", "01")
    assert rec.key == "sub-01_ses-pre_task-rest_run-01"
    assert "ses-pre" in rec.source_files["bold"]


@pytest.mark.filterwarnings("ignore:Did not find any channels.tsv:RuntimeWarning")
def test_missing_channels_tsv_is_noted(tmp_path):
    sim = make_bids(tmp_path / "ds")
    (sim.root / "sub-01/eeg/sub-01_task-rest_run-1_channels.tsv").unlink()
    rec = load_subject(sim.root, "01", IngestConfig())[0]
    assert rec.ch_names == STANDARD
    assert any("no channels.tsv" in a for a in rec.assumptions)


def test_meg_fif_in_femtotesla(tmp_path):
    root = make_meg_bids(tmp_path / "meg")
    cfg = IngestConfig()
    cfg.preprocess.ch_types = ["mag", "grad"]
    cfg.preprocess.l_freq = cfg.preprocess.h_freq = None
    cfg.preprocess.sfreq = 500.0
    rec = load_subject(root, "01", cfg)[0]
    assert rec.source_files["ephys"].endswith("_meg.fif")
    assert rec.ch_names[:3] == ["MEG0112", "MEG0113", "MEG0111"]
    assert rec.ch_types[:3] == ["grad", "grad", "mag"]
    assert rec.extra["n_triggers"] == 10 and rec.lead_in == 1.0
    # 1e-13 T = 100 fT (mag) and 1e-11 T/m = 100 fT/cm (grad)
    np.testing.assert_allclose(rec.ephys.std(axis=1), 100.0, rtol=0.05)
    with pytest.raises(IngestError, match="no run with both meg data"):
        load_subject(make_bids(tmp_path / "eeg").root, "01", cfg)


def test_sidecar_inheritance(tmp_path):
    sim = make_bids(tmp_path / "ds")
    bold_json = sim.root / "sub-01/func/sub-01_task-rest_run-1_bold.json"
    bold_json.unlink()
    # a dataset-level task sidecar applies to every run of the task
    (sim.root / "task-rest_bold.json").write_text('{"RepetitionTime": 2.0}')
    rec = load_subject(sim.root, "01", IngestConfig())[0]
    assert rec.tr == 2.0 and rec.source_files["tr"].endswith("task-rest_bold.json")
    # a sidecar of another task does not
    (sim.root / "task-rest_bold.json").rename(sim.root / "task-motor_bold.json")
    with pytest.raises(IngestError, match=r"run-1_bold\.json: sidecar missing"):
        load_subject(sim.root, "01", IngestConfig())


def test_channels_marked_bad_are_dropped(tmp_path):
    sim = make_bids(tmp_path / "ds")
    tsv = sim.root / "sub-01/eeg/sub-01_task-rest_run-1_channels.tsv"
    lines = tsv.read_text().splitlines()
    header = lines[0].split("\t")
    row = lines[3].split("\t")  # F7
    row[header.index("status")] = "bad"
    lines[3] = "\t".join(row)
    tsv.write_text("\n".join(lines) + "\n")
    rec = load_subject(sim.root, "01", IngestConfig())[0]
    assert "F7" not in rec.ch_names and len(rec.ch_names) == len(STANDARD) - 1
    assert any("marked bad" in a and "F7" in a for a in rec.assumptions)


def test_roi_tsv_choice(tmp_path):
    sim = make_bids(tmp_path / "ds")
    func = sim.root / "derivatives/roi/sub-01/func"
    # fMRIPrep-style confounds never count as ROI BOLD
    (func / "sub-01_task-rest_run-1_desc-confounds_timeseries.tsv").write_text("fd\n0.1\n")
    assert load_subject(sim.root, "01", IngestConfig())[0].roi_names == ["left", "right", "top"]
    other = func / "sub-01_task-rest_run-1_atlas-other_timeseries.tsv"
    other.write_text("x\n" + "1.0\n" * 20)
    other.with_suffix(".json").write_text('{"SamplingFrequency": 0.5}')
    with pytest.raises(IngestError, match="several ROI time series match.*bold.roi_atlas"):
        load_subject(sim.root, "01", IngestConfig())
    cfg = IngestConfig()
    cfg.bold.roi_atlas = "other"
    assert load_subject(sim.root, "01", cfg)[0].roi_names == ["x"]
    cfg = IngestConfig()
    cfg.bold.desc = "noisefree"  # explicitly asking for the ground truth works
    assert not load_subject(sim.root, "01", cfg)[0].bold.any()
