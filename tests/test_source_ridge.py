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


def _row(fold, eeg, src, bf, fixed, pop, own, ceiling):
    return {"fold": fold, "train": [], "eeg_r": eeg, "source_r": src, "beamformer_r": bf,
            "beamformer_fixed_r": fixed, "oracle_pop_r": pop, "oracle_own_r": own,
            "ceiling": ceiling}  # fmt: skip


def test_table_signs_the_gain_and_summarises_the_folds(sr):
    rows = [
        _row("01", 0.40, 0.50, 0.6, 0.61, 0.66, 0.7, 0.70),
        _row("02", 0.30, 0.36, 0.5, 0.52, 0.55, 0.6, 0.60),
    ]
    lines = sr.table(rows).splitlines()
    assert lines[0].count("|") == 10 and "beamformer read-out r" in lines[0]
    assert "training subjects' covariance" in lines[0]
    assert lines[2] == "| 01 | 0.400 | 0.500 | 0.600 | 0.610 | 0.660 | 0.700 | +0.100 | 0.700 |"
    assert lines[3] == "| 02 | 0.300 | 0.360 | 0.500 | 0.520 | 0.550 | 0.600 | +0.060 | 0.600 |"
    assert lines[4].startswith("| mean [95% t] | 0.350 [") and "| +0.080 [" in lines[4]
    assert lines[4].count("(n=2)") == 8
    assert "ICA" not in lines[0]
    for r, ica in zip(rows, (0.45, 0.33)):
        r["ica_r"] = ica  # with --unmixing: its column after the source ridge
    lines = sr.table(rows).splitlines()
    assert lines[0].count("|") == 11 and "| source ridge r | ICA components ridge r |" in lines[0]
    assert lines[2].startswith("| 01 | 0.400 | 0.500 | 0.450 | 0.600 |")


def test_unmixed_recording_holds_the_components_of_z_scored_channels(sr):
    from dataclasses import dataclass

    @dataclass
    class Rec:
        ephys: np.ndarray
        ch_names: list
        ch_types: list

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 500)) * [[1.0], [10.0], [100.0]] + [[5.0], [0.0], [-7.0]]
    rec = Rec(x.astype(np.float32), ["a", "b", "c"], ["eeg"] * 3)
    U = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    out = sr.unmixed(rec, U)
    z = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    np.testing.assert_allclose(out.ephys, U @ z, rtol=1e-5, atol=1e-5)
    assert out.ch_names == ["IC0", "IC1"] and rec.ephys.shape == (3, 500)


def test_roi_table_averages_each_roi_over_the_folds(sr):
    def row(eeg, src, ceiling):
        return {"roi_names": ["A", "B"], "eeg_roi_r": np.array(eeg),
                "source_roi_r": np.array(src), "beamformer_roi_r": np.array(src) + 0.1,
                "beamformer_fixed_roi_r": np.array(src) + 0.15,
                "oracle_pop_roi_r": np.array(src) + 0.2, "oracle_own_roi_r": np.array(src) + 0.3,
                "ceiling_roi": ceiling}  # fmt: skip

    rows = [row([0.2, 0.5], [0.6, 0.5], np.array([0.8, 0.7])), row([0.4, 0.3], [0.6, 0.5], None)]
    lines = sr.roi_table(rows).splitlines()
    assert lines[0] == "per ROI over 2 folds:"
    # the ceiling is that of the fold with one
    assert lines[3] == "| A | 0.300 | 0.600 | 0.700 | 0.750 | 0.800 | 0.900 | +0.300 | 0.800 |"
    assert lines[4] == "| B | 0.400 | 0.500 | 0.600 | 0.650 | 0.700 | 0.800 | +0.100 | 0.700 |"


def test_read_outs_of_the_exact_drive_and_of_the_sensors(sr, sim_bids):
    """The own-subject drive is the noise-free BOLD (its r is the noise ceiling on the scored
    TRs); the population's is a little below; the beamformer reads the sensors far above
    chance, and not with the parcels' gains shuffled."""
    from brainxl.shards.config import IngestConfig
    from brainxl.shards.ingest.bids import load_subject

    from brainxl import metrics as bm
    from brainxl.baselines import features_from_recordings
    from brainxl.simulator.truth import subject_truth, template_gain

    (rec,) = load_subject(sim_bids, "01", IngestConfig())
    feats = features_from_recordings([rec], 16.0)["01"]
    names = list(rec.roi_names)
    truth = subject_truth(sim_bids, "01")
    own = sr.drive_oracle_r(truth, feats, names, population=False)
    pop = sr.drive_oracle_r(truth, feats, names, population=True)
    ceiling = bm.ceiling_array(bm.load_noise_ceiling_on_trs(sim_bids, "01", feats.tr_index), names)
    np.testing.assert_allclose(own, ceiling, atol=1e-3)
    assert 0.0 < np.mean(own) - np.mean(pop) < 0.1
    gain = template_gain(sim_bids, list(rec.ch_names))
    parcels = truth.parcel_names
    bf = sr.beamformer_r(rec, feats, gain, parcels, names)
    shuffle = np.random.default_rng(0).permutation(64)
    shuffled = sr.beamformer_r(rec, feats, gain[:, shuffle], parcels, names)
    assert np.mean(bf) > 0.3 and np.mean(shuffled) < np.mean(bf) - 0.2, (bf.mean(), shuffled.mean())
    # filters from given covariances: the recording's own (scaled) are the same filters,
    # and two other subjects' pooled still read the parcels (fixed before sub-01 is seen)
    signals = sr.band_signals(rec)
    own_cov = sr.beamformer_r(rec, feats, gain, parcels, names, sr.band_covariances(signals))
    np.testing.assert_allclose(own_cov, bf, atol=1e-6)
    given = sr.beamformer_r(rec, feats, gain, parcels, names, signals=signals)
    np.testing.assert_array_equal(given, bf)
    others = [
        sr.band_covariances(sr.band_signals(load_subject(sim_bids, s, IngestConfig())[0]))
        for s in ("02", "03")
    ]
    pooled = {b: (others[0][b] + others[1][b]) / 2 for b in sr.READOUT_BANDS}
    assert all(np.isclose(np.trace(c), 1.0) for c in others[0].values())
    fixed = sr.beamformer_r(rec, feats, gain, parcels, names, pooled)
    assert np.mean(fixed) > 0.3 and np.mean(fixed) > np.mean(shuffled) + 0.2, fixed.mean()
    assert not np.allclose(fixed, bf, atol=1e-3)


def test_folds_all_holds_out_every_subject_of_the_shards(
    sr, synthetic_shards, tmp_path, monkeypatch, capsys
):
    from brainxl.shards.manifest import read_manifest

    seen: list[list[str]] = []

    def rows(bids, shards, folds, config, overrides, unmixing=None):
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
