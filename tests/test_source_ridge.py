"""experiments/source_ridge.py: the true parcel activity on the sensors' time grid."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sr(load_script):
    return load_script("experiments/source_ridge.py")


def _explained(X: np.ndarray, Y: np.ndarray) -> float:
    """Variance fraction of ``Y`` (samples x sensors) a least-squares fit on ``X`` explains."""
    X, Y = X - X.mean(0), Y - Y.mean(0)
    W, *_ = np.linalg.lstsq(X, Y, rcond=None)
    return float(1 - ((Y - X @ W) ** 2).sum() / (Y**2).sum())


def test_parcel_activity_is_cut_to_the_sensors_time_grid(sr, sim_bids):
    from brainxl.shards.config import IngestConfig
    from brainxl.shards.ingest.bids import load_subject

    (rec,) = load_subject(sim_bids, "01", IngestConfig())
    src = sr.source_recording(rec, sim_bids)
    assert src.ephys.shape[1] == rec.ephys.shape[1]
    assert src.sfreq == rec.sfreq and src.lead_in == rec.lead_in
    assert src.bold is rec.bold
    X, Y = src.ephys.T.astype(np.float64), rec.ephys.T.astype(np.float64)
    # the sensors are the parcels seen through the head model plus noise: on the same grid
    # the parcels explain most of them; 25 ms off (5 samples at 200 Hz) they explain little
    assert _explained(X, Y) > 0.7
    assert _explained(X[5:], Y[:-5]) < 0.3
    assert _explained(X[:-5], Y[5:]) < 0.3


def test_a_dataset_without_parcel_activity_is_named(sr, sim_bids, tmp_path):
    from brainxl.shards.config import IngestConfig
    from brainxl.shards.ingest.bids import load_subject

    (rec,) = load_subject(sim_bids, "01", IngestConfig())
    with pytest.raises(FileNotFoundError, match="sub-01_task-.*_desc-sources_timeseries.npy"):
        sr.source_recording(rec, tmp_path)


def test_table_signs_the_gain_and_summarises_the_folds(sr):
    rows = [
        {"fold": "01", "train": [], "eeg_r": 0.40, "source_r": 0.50, "ceiling": 0.70},
        {"fold": "02", "train": [], "eeg_r": 0.30, "source_r": 0.36, "ceiling": 0.60},
    ]
    lines = sr.table(rows).splitlines()
    assert lines[2] == "| 01 | 0.400 | 0.500 | +0.100 | 0.700 |"
    assert lines[3] == "| 02 | 0.300 | 0.360 | +0.060 | 0.600 |"
    assert lines[4].startswith("| mean [95% t] | 0.350 [") and "| +0.080 [" in lines[4]
    assert lines[4].count("(n=2)") == 4


def test_roi_table_averages_each_roi_over_the_folds(sr):
    def row(eeg, src, ceiling):
        return {"roi_names": ["A", "B"], "eeg_roi_r": np.array(eeg),
                "source_roi_r": np.array(src), "ceiling_roi": ceiling}  # fmt: skip

    rows = [row([0.2, 0.5], [0.6, 0.5], np.array([0.8, 0.7])), row([0.4, 0.3], [0.6, 0.5], None)]
    lines = sr.roi_table(rows).splitlines()
    assert lines[0] == "per ROI over 2 folds:"
    assert lines[3] == "| A | 0.300 | 0.600 | +0.300 | 0.800 |"  # ceiling of the fold with one
    assert lines[4] == "| B | 0.400 | 0.500 | +0.100 | 0.700 |"


def test_folds_all_holds_out_every_subject_of_the_shards(
    sr, synthetic_shards, tmp_path, monkeypatch, capsys
):
    from brainxl.shards.manifest import read_manifest

    seen: list[list[str]] = []

    def rows(bids, shards, folds, config, overrides):
        seen.append(list(folds))
        return []

    monkeypatch.setattr(sr, "fold_rows", rows)
    monkeypatch.setattr(sr, "table", lambda rows: "")
    argv = ["--bids", str(tmp_path), "--folds", "all", "--shards"]
    assert sr.main([*argv, str(synthetic_shards)]) == 0
    assert seen == [sorted(read_manifest(synthetic_shards)["subjects"])]
    with pytest.raises(SystemExit):
        sr.main([*argv, str(tmp_path / "none")])
    assert "--folds all" in capsys.readouterr().err and len(seen) == 1
