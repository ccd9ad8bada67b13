"""Tests of brainxl.baselines: band power features and the ridge baseline."""

from __future__ import annotations

import numpy as np
import pytest

from brainxl import baselines as B
from brainxl.metrics import pearson_per_roi

SFREQ = 100.0


def _sine(freq: float, seconds: float, amp: float = 10.0) -> np.ndarray:
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    return amp * np.sin(2 * np.pi * freq * t)


def test_pure_10hz_sine_lands_in_alpha() -> None:
    ephys = np.stack([_sine(10.0, 30.0), _sine(20.0, 30.0)])  # (C=2, T)
    tr_times = np.array([10.0, 20.0, 30.0])
    feats = B.band_power_features(ephys, SFREQ, tr_times, window_s=8.0)
    assert feats.shape == (3, 2 * len(B.DEFAULT_BANDS))
    f = feats.reshape(3, 1, 2, 5)[:, 0]  # (n_trs, C, n_bands)
    assert (f[:, 0].argmax(axis=-1) == 2).all()  # alpha 8-13 Hz
    assert (f[:, 1].argmax(axis=-1) == 3).all()  # beta 13-30 Hz
    # total power of a sine of amplitude A is A^2 / 2
    assert 10 ** f[0, 0, 2] == pytest.approx(10.0**2 / 2, rel=0.05)


def test_segments_resolve_where_in_the_window_the_power_is() -> None:
    # alpha only in the first half of the window, beta only in the second half
    x = np.concatenate([_sine(10.0, 4.0), _sine(20.0, 4.0)])[None]
    f = B.band_power_features(x, SFREQ, np.array([8.0]), window_s=8.0, n_segments=2)
    f = f.reshape(1, 2, 1, 5)[0, :, 0]  # (segment, band), earliest segment first
    assert f[0].argmax() == 2 and f[1].argmax() == 3


def test_windows_follow_t_start_and_incomplete_windows_fail() -> None:
    x = np.concatenate([_sine(6.0, 10.0), _sine(10.0, 10.0)])[None]  # theta then alpha
    # with lead-in 5 s, time 0 is sample 500: the window ending at 5 s is theta only
    f = B.band_power_features(x, SFREQ, np.array([5.0, 15.0]), window_s=4.0, t_start=-5.0)
    assert f.reshape(2, 5).argmax(axis=1).tolist() == [1, 2]
    with pytest.raises(ValueError, match="full window"):
        B.band_power_features(x, SFREQ, np.array([-2.0]), window_s=4.0, t_start=-5.0)


@pytest.mark.parametrize("n_segments", [1, 3])
def test_recording_features_equal_features_of_cut_windows(n_segments: int) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, int(60 * SFREQ)))
    tr_times = np.r_[np.arange(10.0, 50.0, 2.0), [17.33, 41.07]]  # aligned and not
    fast = B.band_power_features(x, SFREQ, tr_times, 8.0, n_segments=n_segments, t_start=-2.0)
    ends = np.round((tr_times + 2.0) * SFREQ).astype(int)
    windows = np.stack([x[:, e - 800 : e] for e in ends])
    ref = B.band_power_windows(windows, SFREQ, n_segments=n_segments)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-10)


def test_band_outside_the_spectrum_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no frequency bin"):
        B.band_power_windows(np.zeros((1, 1, 400)), SFREQ, bands=((60, 80),))


def _linear_problem(n_subjects: int = 4, n: int = 300, f: int = 20, r: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((f, r))
    xs, ys = [], []
    for _ in range(n_subjects):
        x = rng.standard_normal((n, f)) * rng.uniform(1, 3, f) + rng.uniform(-2, 2, f)
        xs.append(x)
        ys.append(x @ w + rng.standard_normal((n, r)))
    return xs, ys, w


def test_ridge_recovers_known_linear_map_and_beats_the_mean() -> None:
    xs, ys, w = _linear_problem()
    model = B.RidgeBaseline().fit(xs[:3], ys[:3])
    assert "leave-one-subject-out (3" in model.cv_scheme
    assert model.cv_scores.shape == (len(B.DEFAULT_ALPHAS), 3)
    coef_raw = model.coef / model.scaler.scale[:, None]  # back to the unscaled features
    np.testing.assert_allclose(coef_raw, w, atol=0.15)
    pred = model.predict(xs[3])
    r = pearson_per_roi(pred, ys[3])
    assert (r > 0.9).all()
    mse_model = ((pred - ys[3]) ** 2).mean()
    mse_mean = ((np.mean(np.concatenate(ys[:3]), 0) - ys[3]) ** 2).mean()
    assert mse_model < 0.1 * mse_mean


def test_ridge_picks_strong_penalty_for_pure_noise_and_one_subject_cv() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 30))
    y = rng.standard_normal((200, 2))
    model = B.RidgeBaseline().fit([x], [y])
    assert "contiguous blocks" in model.cv_scheme
    assert np.abs(model.predict(x) - y.mean(0)).max() < np.abs(y - y.mean(0)).max()
    shared = B.RidgeBaseline(per_target_alpha=False).fit([x], [y])
    assert shared.alpha[0] == shared.alpha[1]


def test_standardisation_uses_training_subjects_only() -> None:
    xs, ys, _ = _linear_problem()
    model = B.RidgeBaseline().fit(xs[:3], ys[:3])
    train = np.concatenate(xs[:3])
    np.testing.assert_allclose(model.scaler.mean, train.mean(0))
    np.testing.assert_allclose(model.scaler.scale, train.std(0))
    mean0, scale0, coef0 = model.scaler.mean.copy(), model.scaler.scale.copy(), model.coef.copy()
    model.predict(xs[3] * 1e3 + 1e6)  # a wildly shifted held-out subject
    np.testing.assert_array_equal(model.scaler.mean, mean0)
    np.testing.assert_array_equal(model.scaler.scale, scale0)
    np.testing.assert_array_equal(model.coef, coef0)


def test_ridge_input_errors() -> None:
    with pytest.raises(ValueError, match="rows"):
        B.RidgeBaseline().fit([np.zeros((10, 3))], [np.zeros((9, 2))])
    with pytest.raises(ValueError, match="NaN"):
        B.RidgeBaseline().fit([np.full((10, 3), np.nan)], [np.zeros((10, 2))])
    with pytest.raises(ValueError, match="before fit"):
        B.RidgeBaseline().predict(np.zeros((2, 3)))


def _windows(subject: str, n: int, rng: np.random.Generator, gain: np.ndarray):
    """Reader-like samples whose BOLD follows alpha power of channel 0 (C=3, W=4 s)."""
    t = np.arange(int(4 * SFREQ)) / SFREQ
    out = []
    for k in range(n):
        amp = rng.uniform(1, 10)
        eph = rng.standard_normal((3, t.size)) * 0.5
        eph[0] += amp * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6))
        bold = gain * np.log10(amp**2 / 2) + 0.1 * rng.standard_normal(gain.size)
        out.append(
            {"ephys": eph.astype(np.float32), "bold": bold, "subject": subject,
             "tr_index": n - k}  # arrives in reverse order
        )  # fmt: skip
    return out


def test_run_ridge_baseline_on_reader_windows() -> None:
    rng = np.random.default_rng(2)
    gain = np.array([1.0, -0.5])
    train = [w for s in ("01", "02", "03") for w in _windows(s, 40, rng, gain)]
    test = _windows("04", 40, rng, gain)
    res = B.run_ridge_baseline(
        train, test, SFREQ, ["a", "b"], n_segments=1, noise_ceilings={"04": [0.99, 0.98]}
    )
    assert res.train_subjects == ["01", "02", "03"]
    assert res.summary.subjects == ["04"]
    assert res.summary.r.mean > 0.9
    assert res.summary.fraction_of_ceiling is not None
    pred, true = res.predictions["04"]
    assert pred.shape == true.shape == (40, 2)
    feats = B.features_from_windows(test, SFREQ)
    assert feats["04"].tr_index.tolist() == list(range(1, 41))  # sorted in time
    # the held-out subject's data, shifted massively, leaves every fitted quantity alone
    shifted = [dict(w, ephys=w["ephys"] * 1e3 + 1e4) for w in test]
    res2 = B.run_ridge_baseline(train, shifted, SFREQ, ["a", "b"], n_segments=1)
    np.testing.assert_array_equal(res2.model.scaler.mean, res.model.scaler.mean)
    np.testing.assert_array_equal(res2.model.scaler.scale, res.model.scaler.scale)
    np.testing.assert_array_equal(res2.model.coef, res.model.coef)
    with pytest.raises(ValueError, match="both the training and the held-out"):
        B.run_ridge_baseline(train, train[:5], SFREQ, ["a", "b"], n_segments=1)


def test_batched_windows_match_single_windows() -> None:
    rng = np.random.default_rng(3)
    samples = _windows("01", 6, rng, np.array([1.0]))
    batch = {
        "ephys": np.stack([s["ephys"] for s in samples]),
        "bold": np.stack([s["bold"] for s in samples]),
        "subject": [s["subject"] for s in samples],
        "tr_index": np.array([s["tr_index"] for s in samples]),
    }
    a = B.features_from_windows(samples, SFREQ)["01"]
    b = B.features_from_windows([batch], SFREQ)["01"]
    np.testing.assert_allclose(a.X, b.X)
    np.testing.assert_allclose(a.Y, b.Y)


def _recording(subject: str, rng: np.random.Generator, n_trs: int = 60):
    """A Recording whose BOLD is the alpha power of channel 0 about 4 s before each TR."""
    from brainxl.shards.ingest.recording import Recording

    tr, lead_in = 2.0, 0.0
    n = int((n_trs * tr + 1) * SFREQ)
    t = np.arange(n) / SFREQ
    env = np.repeat(rng.uniform(1, 10, size=n // int(2 * SFREQ) + 1), int(2 * SFREQ))[:n]
    ephys = 0.5 * rng.standard_normal((2, n))
    ephys[0] += env * np.sin(2 * np.pi * 10 * t)
    vols = (np.arange(n_trs) * tr - 4.0) * SFREQ
    alpha = np.log10(env[np.clip(vols.astype(int) + 10, 0, n - 1)] ** 2 / 2)
    bold = np.stack([alpha, -alpha]) + 0.2 * rng.standard_normal((2, n_trs))
    return Recording(
        subject=subject, session="", task="rest", run="1", ephys=ephys.astype(np.float32),
        sfreq=SFREQ, ch_names=["O1", "O2"], ch_types=["eeg", "eeg"],
        bold=bold.astype(np.float32), tr=tr, roi_names=["V1", "PFC"], lead_in=lead_in,
    )  # fmt: skip


def test_ridge_from_recordings_uses_full_windows_and_hrf_lag_bins() -> None:
    rng = np.random.default_rng(8)
    recs = [_recording(s, rng) for s in ("01", "02", "03", "04")]
    feats = B.features_from_recordings(recs, window_s=8.0, n_segments=4)
    assert feats["01"].tr_index[0] == 4  # TRs 0-3 have no full 8 s window (lead-in 0)
    assert feats["01"].X.shape == (56, 4 * 2 * 5)
    train = {s: feats[s] for s in ("01", "02", "03")}
    res = B.fit_and_score(train, {"04": feats["04"]}, ["V1", "PFC"])
    flat = B.features_from_recordings(recs, window_s=8.0, n_segments=1)
    res_flat = B.fit_and_score(
        {s: flat[s] for s in ("01", "02", "03")}, {"04": flat["04"]}, ["V1", "PFC"]
    )
    # the 2 s lag bin holding the alpha burst 4 s before the TR carries the signal
    assert res.summary.r.mean > 0.8
    assert res.summary.r.mean > res_flat.summary.r.mean + 0.1
    with pytest.raises(ValueError, match="both"):
        B.fit_and_score(train, {"01": feats["01"]}, ["V1", "PFC"])
