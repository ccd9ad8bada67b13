"""``brainxl predict``: every input form, the errors, the derivatives layout (BIDS validator),
NIfTI/TSV/MNE round trips, and predict(held-out subject) == ``brainxl evaluate``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import ATLAS, World, make_world

import brainxl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("predict"))


def _tr_of(key: str) -> int:
    return int(key.rsplit("_tr", 1)[1])


def _same_windows_as_evaluate(run_or_ckpt: Path, world: World) -> None:
    """Predicting the whole held-out recording gives ``brainxl evaluate``'s windows, values
    and r: evaluate scores every TR with a full window (no partial batch dropped)."""
    from brainxl.distrib.prediction import score_predictions
    from brainxl.distrib.rundir import RunDir
    from brainxl.launch.cmd_evaluate import evaluate, locate

    result = evaluate(run_or_ckpt, "test", report=False, baseline=False)
    run_dir, _, tag = locate(run_or_ckpt)
    npz = np.load(RunDir.predictions(RunDir(run_dir).evaluation_dir(tag or "final"), "04"))
    (pred,) = brainxl.predict(run_or_ckpt, world.bids, subjects=["04"], progress=False)
    assert pred.window_true is not None
    evaluated = [_tr_of(k) for k in npz["keys"]]
    assert sorted(evaluated) == list(pred.window_trs)  # the same windows, all of them
    assert len(pred.window_trs) % 4 != 0  # train.batch_size=4: a partial last batch counts
    idx = [list(pred.window_trs).index(k) for k in evaluated]
    np.testing.assert_allclose(pred.window_pred[idx], npz["pred"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.window_true[idx], npz["true"], rtol=1e-6, atol=1e-6)
    mine = score_predictions([pred], "04")
    assert mine.n_times == len(evaluated)
    assert mine.mean_r == pytest.approx(result["per_subject"]["04"], abs=1e-6)
    assert mine.mean_r == pytest.approx(result["mean_r"], abs=1e-6)
    assert list(pred.volumes) == list(range(pred.volumes[0], pred.volumes[-1] + 1))


def test_predicting_the_held_out_subject_reproduces_evaluate(world: World) -> None:
    _same_windows_as_evaluate(world.neurobolt, world)


def test_zero3_checkpoint_is_consolidated_and_reproduces_evaluate(world: World) -> None:
    from brainxl.distrib.rundir import RunDir

    ckpt = sorted(RunDir(world.neurobolt).checkpoints.glob("step*"))[-1]
    assert json.loads((ckpt / "brainxl_meta.json").read_text())["zero_stage"] == 3
    _same_windows_as_evaluate(ckpt, world)


def test_bids_derivatives_nifti_tsv_round_trip_and_validator(world: World, tmp_path: Path) -> None:
    import nibabel as nib
    from brainxl.launch.cli import main
    from nilearn.maskers import NiftiLabelsMasker

    from brainxl.derivatives import read_roi_timeseries

    out = tmp_path / "pred"
    rc = main(
        ["predict", str(world.neurobolt), str(world.bids), str(out), "--subjects", "04,03"]
        + ["--report", "--no-progress"]
    )
    assert rc == 0
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "brainxl" and world.neurobolt.name in gen["Description"]
    assert "best weights" in gen["Description"]
    preds = {p.subject: p for p in brainxl.predict(world.neurobolt, world.bids, progress=False)}
    assert sorted(preds) == ["01", "02", "03", "04"]
    for sub in ("03", "04"):
        func = out / f"sub-{sub}" / "func"
        stem = f"sub-{sub}_task-rest_run-1"
        data, names, meta = read_roi_timeseries(func / f"{stem}_desc-brainxl_timeseries.tsv")
        p = preds[sub]
        assert names == p.names == ["P001", "P002", "P003", "P004"]
        np.testing.assert_allclose(data, p.data, rtol=1e-6, atol=1e-7)
        assert meta["RepetitionTime"] == 2.0 and meta["StartTime"] == p.times[0] == 0.0
        assert meta["SourceRun"].endswith(f"{stem}_eeg.vhdr")
        assert meta["GeneratedBy"]["weights"] == "best"
        img = nib.load(func / f"{stem}_space-brainxlsim_desc-brainxl_bold.nii.gz")
        assert img.ndim == 4 and img.shape[3] == data.shape[0]
        assert img.header.get_zooms()[3] == pytest.approx(2.0)
        back = NiftiLabelsMasker(world.bids / f"{ATLAS}.nii.gz").fit_transform(img)
        np.testing.assert_allclose(back, data, rtol=1e-5, atol=1e-5)
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 2 and "mean_signal_brain" in html
    from brainxl.simulator.validate import find_validator, validate_bids, validation_errors

    if find_validator() is None:
        pytest.skip("bids-validator-deno is not installed")
    report = validate_bids(out)
    assert validation_errors(report) == []
    assert "MRI" in report["summary"]["modalities"]  # the NIfTI was validated, not ignored


def _eeg_only_copy(world: World, dest: Path, subject: str = "04") -> Path:
    """The simulated dataset with ``subject`` only and no BOLD of it anywhere."""
    shutil.copytree(world.bids, dest, ignore=shutil.ignore_patterns("*.npy"))
    for other in dest.glob("sub-*"):
        if other.name != f"sub-{subject}":
            shutil.rmtree(other)
    shutil.rmtree(dest / f"sub-{subject}" / "func")
    shutil.rmtree(dest / "derivatives" / "brainxl-sim" / f"sub-{subject}" / "func")
    return dest


def test_eeg_only_bids_input_predicts_the_same_bold(world: World, tmp_path: Path) -> None:
    import nibabel as nib

    bids = _eeg_only_copy(world, tmp_path / "bids")
    (with_bold,) = brainxl.predict(world.neurobolt, world.bids, subjects=["04"], progress=False)
    (pred,) = brainxl.predict(world.neurobolt, bids, tmp_path / "out", progress=False)
    assert pred.true is None and pred.window_true is None
    # without BOLD, every TR the EEG covers (the simulated EEG runs past the last volume)
    n = len(with_bold.volumes)
    assert list(pred.volumes[:n]) == list(with_bold.volumes) and len(pred.volumes) >= n
    np.testing.assert_allclose(pred.data[:n], with_bold.data, rtol=1e-5, atol=1e-6)
    img = nib.load(pred.files["out_nifti"])
    assert img.shape[3] == len(pred.volumes)
    assert any("no BOLD" in n for n in pred.notes)


@pytest.fixture(scope="module")
def parcel_run(world: World) -> Path:
    """SAMBA EEG -> fMRI debug trained on source-parcel shards of the same dataset."""
    from brainxl.shards.config import IngestConfig, ShardingConfig, SourceConfig
    from brainxl.shards.writer import shard_bids
    from predict_fixtures import train

    root = world.shards.parent
    shards = root / "shards-parcels"
    cfg = ShardingConfig(
        segment_trs=8, lead_in_s=6.0, bold_lead_trs=2, workers=1, max_shard_bytes=2_000_000
    )
    ingest = IngestConfig(source=SourceConfig(enabled=True))
    shard_bids(world.bids, shards, ingest, cfg, progress=False)
    return train(
        "samba-eeg2fmri-debug",
        shards,
        root / "runs-parcels",
        "data.reader.window_s=6.0",
        "data.reader.n_targets=3",
        "data.reader.modality=parcels",
        "train.steps=2",
        "train.val_every=2",
        "train.ckpt_every=0",
    )


def test_parcel_run_reconstructs_sources_from_eeg_only_input(
    world: World, parcel_run: Path, tmp_path: Path
) -> None:
    """A run on source parcels, given EEG without BOLD: the parcels are reconstructed with
    the run's ingest source settings and the subject's forward model, as at sharding."""
    bids = _eeg_only_copy(world, tmp_path / "bids")
    (with_bold,) = brainxl.predict(parcel_run, world.bids, subjects=["04"], progress=False)
    (pred,) = brainxl.predict(parcel_run, bids, tmp_path / "out", progress=False)
    assert with_bold.true is not None and pred.true is None and pred.window_true is None
    assert any(n.startswith("parcels: eLORETA inverse") for n in pred.notes)
    assert pred.names == with_bold.names == ["P001", "P002", "P003", "P004"]
    # the same windows as with BOLD (the EEG-only run also covers volumes past its end)
    n = len(with_bold.window_trs)
    assert list(pred.window_trs[:n]) == list(with_bold.window_trs)
    np.testing.assert_allclose(pred.window_pred[:n], with_bold.window_pred, rtol=1e-4, atol=1e-5)
    assert Path(pred.files["out_tsv"]).is_file()
    # without the subject's forward model: one line naming the file and the fix
    fwd = next((bids / "derivatives" / "brainxl-sim" / "sub-04").rglob("*_fwd.fif"))
    fwd.unlink()
    with pytest.raises(ValueError, match=rf"reads source parcels.*{fwd.name}, which does not ex"):
        brainxl.predict(parcel_run, bids, progress=False)


def test_single_recording_files(world: World, tmp_path: Path) -> None:
    import mne

    vhdr = world.bids / "sub-04" / "eeg" / "sub-04_task-rest_run-1_eeg.vhdr"
    tsv = next((world.bids / "derivatives").rglob("sub-04_*_atlas-brainxlsim_timeseries.tsv"))
    (ref,) = brainxl.predict(world.neurobolt, world.bids, subjects=["04"], progress=False)
    # the simulator's markers read outside BIDS are "Stimulus/S  1", not "Volume"
    marker = r"Stimulus/S\s+1"
    (bv,) = brainxl.predict(world.neurobolt, vhdr, bold=tsv, volume_marker=marker, progress=False)
    np.testing.assert_allclose(bv.data, ref.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bv.true, ref.true, rtol=1e-6, atol=1e-6)
    raw = mne.io.read_raw(vhdr, preload=True, verbose=False)
    for fmt, name in (("fif", "rec_raw.fif"), ("edf", "rec.edf")):
        path = tmp_path / name
        if fmt == "fif":
            raw.save(path, verbose=False)
        else:
            mne.export.export_raw(path, raw, fmt="edf", verbose=False)
        (p,) = brainxl.predict(
            world.neurobolt, path, tmp_path / fmt, volume_marker=marker, progress=False
        )
        n = len(ref.volumes)  # without BOLD: every TR the EEG covers, a volume more here
        assert p.true is None and list(p.volumes[:n]) == list(ref.volumes)
        assert np.corrcoef(p.data[:n].ravel(), ref.data.ravel())[0, 1] > 0.99
        assert Path(p.files["out_tsv"]).is_file()


def test_recordings_that_do_not_fit_get_clear_errors(world: World, tmp_path: Path) -> None:
    import mne

    vhdr = world.bids / "sub-04" / "eeg" / "sub-04_task-rest_run-1_eeg.vhdr"
    raw = mne.io.read_raw(vhdr, preload=True, verbose=False)
    dropped = raw.copy().drop_channels(["Cz", "Pz"])
    missing = tmp_path / "missing_raw.fif"
    dropped.save(missing, verbose=False)
    with pytest.raises(ValueError, match=r"missing_raw\.fif: 2 of the run's 32 channels are"):
        brainxl.predict(world.neurobolt, missing, progress=False)
    with pytest.raises(ValueError, match="allow-missing-channels"):
        brainxl.predict(world.neurobolt, missing, progress=False)
    (p,) = brainxl.predict(world.neurobolt, missing, allow_missing_channels=True, progress=False)
    (note,) = [n for n in p.notes if n.startswith("MISSING channels")]
    assert "'Cz'" in note and "'Pz'" in note and "nothing was zero-filled" in note
    assert any("no annotation matches the volume marker" in n for n in p.notes)
    slow = tmp_path / "slow_raw.fif"
    raw.copy().resample(100.0, verbose=False).save(slow, verbose=False)
    with pytest.raises(ValueError, match=r"slow_raw\.fif: recorded at 100 Hz .* >= 200 Hz"):
        brainxl.predict(world.neurobolt, slow, progress=False)
    short = tmp_path / "short_raw.fif"
    raw.copy().crop(0.0, 1.0).save(short, verbose=False)
    with pytest.raises(ValueError, match=r"short_raw\.fif: .* no complete window"):
        brainxl.predict(world.neurobolt, short, progress=False)
    wrong = tmp_path / "wrong_timeseries.tsv"
    wrong.write_text("A\tB\n1\t2\n3\t4\n")
    vhdr_in = str(vhdr)
    with pytest.raises(ValueError, match=r"wrong_timeseries\.tsv: ROIs \['A', 'B'\]"):
        brainxl.predict(world.neurobolt, vhdr_in, bold=wrong, progress=False)
    with pytest.raises(ValueError, match="not a BIDS dataset"):
        brainxl.predict(world.neurobolt, tmp_path, progress=False)
    with pytest.raises(ValueError, match="no BOLD"):
        brainxl.predict(world.samba, vhdr_in, progress=False)


def test_fmri_to_eeg_writes_readable_raw_files(world: World, tmp_path: Path) -> None:
    import mne
    from brainxl.distrib.trained_run import load_trained_run

    run = load_trained_run(world.samba)
    out = tmp_path / "eeg"
    (pred,) = brainxl.predict(world.samba, world.bids, out, subjects=["04"], progress=False)
    assert pred.task == "fmri2eeg" and pred.names == run.ch_names and pred.units == "µV"
    assert pred.true is not None and pred.true.shape == pred.data.shape
    raw = mne.io.read_raw(pred.files["out_raw"], preload=True, verbose=False)
    assert raw.ch_names == run.ch_names and raw.info["sfreq"] == 200.0
    assert set(raw.get_channel_types()) == {"eeg"}
    np.testing.assert_allclose(raw.get_data().T * 1e6, pred.data, rtol=1e-5, atol=1e-3)
    # sliding windows of 3 TRs every TR: each sample is the mean of the windows covering it
    from brainxl.distrib.prediction import normalisation

    W, sf = run.window, 200.0
    ends = [int(round(k * 2.0 * sf)) for k in pred.window_trs]  # samples from volume 0
    s = ends[len(ends) // 2] - 5
    cover = [(w, s - (e - W)) for w, e in enumerate(ends) if e - W <= s < e]
    assert len(cover) == 3
    z = np.mean([pred.window_pred[w][:, j] for w, j in cover], axis=0)
    mean, std = normalisation(run, "ephys", [])
    row = s - int(round(pred.times[0] * sf))
    np.testing.assert_allclose(pred.data[row], z * std + mean, rtol=1e-4, atol=1e-3)
    for fmt in ("brainvision", "edf"):
        (p,) = brainxl.predict(
            world.samba, world.bids, tmp_path / fmt, subjects=["04"], raw_format=fmt, progress=False
        )
        back = mne.io.read_raw(p.files["out_raw"], preload=True, verbose=False)
        assert back.ch_names == run.ch_names and back.info["sfreq"] == 200.0
        assert np.corrcoef(back.get_data().ravel(), p.data.T.ravel())[0, 1] > 0.999


def test_fmri_to_eeg_from_bold_files_only(world: World, tmp_path: Path) -> None:
    nifti = world.bids / "sub-04" / "func" / "sub-04_task-rest_run-1_bold.nii.gz"
    tsv = next((world.bids / "derivatives").rglob("sub-04_*_atlas-brainxlsim_timeseries.tsv"))
    atlas = world.bids / f"{ATLAS}.nii.gz"
    labels = world.bids / f"{ATLAS}.tsv"
    (from_tsv,) = brainxl.predict(world.samba, tsv, tmp_path / "a", progress=False)
    (from_nii,) = brainxl.predict(
        world.samba, nifti, tmp_path / "b", atlas=atlas, atlas_labels=labels, progress=False
    )
    assert from_tsv.true is None and from_tsv.data.shape == from_nii.data.shape
    np.testing.assert_allclose(from_nii.data, from_tsv.data, rtol=1e-3, atol=1e-2)
    with pytest.raises(ValueError, match="needs the atlas"):
        brainxl.predict(world.samba, nifti, progress=False)


def test_evaluation_reports_show_brain_topographies_and_spectra(world: World) -> None:
    from brainxl.distrib.rundir import RunDir
    from brainxl.launch.cmd_evaluate import evaluate

    evaluate(world.neurobolt, "test", report=True, baseline=False)
    report = RunDir(world.neurobolt).report_dir
    assert (report / "roi_r_brain.png").is_file() and (report / "readout_topomaps.png").is_file()
    md = (report / "report.md").read_text()
    assert md.index("### roi_r_vs_ceiling") < md.index("### roi_r_brain") < md.index("### per_")
    evaluate(world.samba, "test", report=True, baseline=False)
    assert (RunDir(world.samba).report_dir / "power_spectra_sub-04.png").is_file()


def test_predict_killed_mid_way_then_rerun_leaves_a_complete_folder(
    world: World, tmp_path: Path
) -> None:
    """``kill -9`` while the outputs are written: every file there is whole (files are
    staged and renamed into place), and the rerun completes the folder and removes the
    staging folder the killed process left."""
    import signal
    import subprocess
    import sys
    import time

    import nibabel as nib
    from brainxl.launch.cli import main
    from predict_fixtures import REPO

    from brainxl.derivatives import PARTIAL, read_roi_timeseries

    clean, out = tmp_path / "clean", tmp_path / "out"
    args = ["predict", str(world.neurobolt), str(world.bids)]
    assert main([*args, str(clean), "--no-progress"]) == 0
    cmd = [sys.executable, "-m", "brainxl.launch.cli", *args, str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        # the first recording written, or any file being staged: kill it there
        if out.is_dir() and (any(out.rglob(f"{PARTIAL}*")) or any(out.rglob("*.tsv"))):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    names = sorted(p.relative_to(clean) for p in clean.rglob("*") if p.is_file())
    left = [p for p in out.rglob("*") if p.is_file() and PARTIAL not in str(p)]
    assert len(left) < len(names)  # killed before the end
    for p in left:  # what is there is whole
        rel = p.relative_to(out)
        assert rel in names and p.stat().st_size == (clean / rel).stat().st_size, rel
        if p.name.endswith(".nii.gz"):
            assert nib.load(p).get_fdata().shape == nib.load(clean / rel).shape
    assert main([*args, str(out), "--no-progress"]) == 0
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == names
    assert not list(out.rglob(f"{PARTIAL}*")) and not list(out.rglob("*.tmp"))
    for tsv in clean.rglob("*_timeseries.tsv"):
        a, _, _ = read_roi_timeseries(tsv)
        b, _, _ = read_roi_timeseries(out / tsv.relative_to(clean))
        np.testing.assert_array_equal(a, b)
