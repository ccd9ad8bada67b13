"""The multi-frame ridge (SAMBA's baseline, both directions) and SAMBA's band envelopes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainxl import baselines as B
from brainxl.metrics import pearson_per_roi
from brainxl.models.samba import ENVELOPE_BANDS, band_envelopes

SFREQ, S, F = 200.0, 400, 6


def test_lagged_frames_stay_inside_the_window() -> None:
    frames = np.arange(2 * F * 1, dtype=float).reshape(2, F, 1)  # window i, frame f -> i*F + f
    Z = B.lagged_frames(frames, [0, 1, -2]).reshape(2, F, 3)
    np.testing.assert_array_equal(Z[:, :, 0], frames[:, :, 0])
    assert np.isnan(Z[:, 0, 1]).all()  # frame -1 is not in the window
    np.testing.assert_array_equal(Z[:, 1:, 1], frames[:, :-1, 0])
    np.testing.assert_array_equal(Z[:, : F - 2, 2], frames[:, 2:, 0])
    assert np.isnan(Z[:, F - 2 :, 2]).all()


def test_gram_solver_equals_svd_solver() -> None:
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((200, 12)) for _ in range(3)]
    W = rng.standard_normal((12, 4))
    Y = [x @ W + rng.standard_normal((200, 4)) for x in X]
    a = B.RidgeBaseline().fit(X, Y)
    b = B.RidgeBaseline(solver="gram").fit(X, Y)
    np.testing.assert_allclose(a.coef, b.coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(a.alpha, b.alpha)
    with pytest.raises(ValueError, match="solver"):
        B.RidgeBaseline(solver="qr")


def test_multiframe_ridge_recovers_a_lagged_response() -> None:
    """Y[f] = 2 X[f - 2] - X[f - 3] + noise: the ridge with lags 0..4 finds it; without
    the right lags it cannot."""
    rng = np.random.default_rng(1)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, F + 3, 1))
        y = 2 * x[:, 1:-2] - x[:, :-3] + 0.3 * rng.standard_normal((n, F, 1))
        return x[:, 3:], y  # frames outside the window influence y but are not seen

    train = [make(150) for _ in range(3)]
    Xt, Yt = make(100)
    good = B.MultiFrameRidge(range(5)).fit([t[0] for t in train], [t[1] for t in train])
    pred = good.predict(Xt)
    assert pred.shape == Yt.shape
    r_good = pearson_per_roi(pred[:, 3:].reshape(-1, 1), Yt[:, 3:].reshape(-1, 1))[0]
    bad = B.MultiFrameRidge([0]).fit([t[0] for t in train], [t[1] for t in train])
    r_bad = pearson_per_roi(bad.predict(Xt)[:, 3:].reshape(-1, 1), Yt[:, 3:].reshape(-1, 1))[0]
    assert r_good > 0.95 and r_bad < 0.2


def test_multiframe_ridge_reduces_many_features_and_keeps_the_signal() -> None:
    """40 correlated 'sensors' mixing 3 sources: above max_frame_features the per-frame
    features become principal components fitted on the training frames only, and the
    held-out r stays that of the exact ridge."""
    rng = np.random.default_rng(3)
    mix = rng.standard_normal((3, 40))

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        src = rng.standard_normal((n, F + 1, 3))
        x = src @ mix + 0.3 * rng.standard_normal((n, F + 1, 40))
        y = (src[:, :-1, :1] - 0.5 * src[:, 1:, 1:2]) + 0.3 * rng.standard_normal((n, F, 1))
        return x[:, 1:], y  # y[f] = s0[f - 1] - 0.5 s1[f] + noise

    train = [make(120) for _ in range(3)]
    Xt, Yt = make(100)
    exact = B.MultiFrameRidge([0, 1], max_frame_features=None).fit(*zip(*train))
    assert exact.reducer is None and exact.explained_variance is None
    reduced = B.MultiFrameRidge([0, 1], max_frame_features=8).fit(*zip(*train))
    assert reduced.reducer[-1].n_components_ == 8 and 0.9 < reduced.explained_variance < 1.0
    assert reduced.ridge.coef.shape == (2 * 8, 1)  # 8 components x 2 lags, not 40 x 2

    def r(m: B.MultiFrameRidge) -> float:
        p = m.predict(Xt)[:, 1:].reshape(-1, 1)
        return float(pearson_per_roi(p, Yt[:, 1:].reshape(-1, 1))[0])

    assert r(exact) > 0.8 and abs(r(reduced) - r(exact)) < 0.02
    # deterministic, and the basis is the training frames' own: other subjects, another one
    again = B.MultiFrameRidge([0, 1], max_frame_features=8).fit(*zip(*train))
    np.testing.assert_allclose(again.ridge.coef, reduced.ridge.coef)
    other = B.MultiFrameRidge([0, 1], max_frame_features=8).fit(*zip(*train[:2]))
    assert not np.allclose(other.reducer[-1].components_, reduced.reducer[-1].components_)
    with pytest.raises(ValueError, match="max_frame_features"):
        B.MultiFrameRidge([0], max_frame_features=0)


def _am_sine(freq: float, env: np.ndarray) -> np.ndarray:
    t = np.arange(len(env) * S) / SFREQ
    return np.repeat(env, S) * np.sin(2 * np.pi * freq * t)


def test_band_envelopes_and_frame_band_power_track_amplitude_per_tr() -> None:
    env = np.array([1.0, 2.0, 4.0, 1.0, 0.5, 3.0])
    x = np.stack([_am_sine(10.0, env), _am_sine(20.0, env), _am_sine(40.0, env)])[None]
    out = band_envelopes(torch.from_numpy(x).float(), SFREQ, S).numpy()[0]  # (3 * 3, F)
    assert out.shape == (3 * len(ENVELOPE_BANDS), F)
    for ch, band in enumerate(range(3)):  # channel ch carries band ch
        row = out[ch * 3 + band]
        np.testing.assert_allclose(row - row[0], 2 * np.log10(env / env[0]), atol=0.05)
        others = [out[ch * 3 + b] for b in range(3) if b != band]
        assert all((row > o + 1.0).all() for o in others)
    fb = B.frame_band_power(x, SFREQ, F)  # (1, F, 3 channels * 5 bands)
    alpha = fb[0].reshape(F, 3, 5)[:, 0, 2]
    np.testing.assert_allclose(alpha - alpha[0], 2 * np.log10(env / env[0]), atol=0.05)
    with pytest.raises(ValueError, match="no frequency bin"):
        band_envelopes(torch.zeros(1, 1, 64), 32.0, 64)


def test_run_multiframe_ridge_both_directions_from_reader_batches() -> None:
    """BOLD = alpha power of the same TR (eeg2fmri) and its inverse (fmri2eeg)."""
    rng = np.random.default_rng(2)

    def batch(subject: str, n: int) -> dict:
        env = np.exp(0.5 * rng.standard_normal((n, F)))
        ephys = np.stack([_am_sine(10.0, e) for e in env])[:, None]  # (n, 1, F * S)
        ephys = ephys + 0.05 * rng.standard_normal(ephys.shape)
        bold = (np.log(env) + 0.1 * rng.standard_normal((n, F)))[:, None]  # (n, 1, F)
        return {
            "ephys": ephys.astype(np.float32),
            "bold": bold,
            "subject": [subject] * n,
            "key": [f"rec{subject}"] * n,
            "tr_index": np.arange(n),
        }

    train = [batch("02", 40), batch("03", 40)]
    test = [batch("01", 40)]
    res = B.run_multiframe_ridge(train, test, "eeg2fmri", SFREQ, F, ["roi"], lags=[0])
    assert res.summary.mean_r > 0.9
    names = [f"c:{b}" for b in ENVELOPE_BANDS]
    res = B.run_multiframe_ridge(train, test, "fmri2eeg", SFREQ, F, names, lags=[0])
    r = res.summary.per_subject[0].r
    assert r[0] > 0.9  # alpha envelope from BOLD
    with pytest.raises(ValueError, match="n_targets=6"):
        B.run_multiframe_ridge(
            [{**train[0], "bold": train[0]["bold"][..., 0]}], test, "eeg2fmri", SFREQ, F, ["roi"]
        )
