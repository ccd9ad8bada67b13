"""Unit tests of the simulator's physics: head model, neural activity, haemodynamics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import welch

from brainxl.simulator.activity import band_noise, pink_noise, simulate_activity
from brainxl.simulator.headmodel import build_template, jitter_positions, subject_head
from brainxl.simulator.hemodynamics import (
    bold_drive,
    convolve_hrf,
    double_gamma,
    physiological_noise,
    sample_coupling,
    sample_hrfs,
)
from brainxl.simulator.volume import bold_image, make_grid, roi_means


@pytest.fixture(scope="module")
def template():
    return build_template("biosemi32", 16, rng=np.random.default_rng(0))


def test_template_parcels_cover_all_sources(template):
    labels = template.parcel_of_source
    assert labels.shape == (len(template.source_pos),)
    assert np.bincount(labels, minlength=16).min() > 0
    assert template.parcel_names[:2] == ["P001", "P002"]
    # sources lie inside the brain sphere and none sits on the sphere centre
    d = np.linalg.norm(template.source_pos - template.r0, axis=1)
    assert d.max() <= template.brain_radius + 1e-9
    assert d.min() > 1e-3
    np.testing.assert_allclose(np.linalg.norm(template.orientations, axis=1), 1.0)


def test_subject_heads_differ_and_are_finite(template):
    a = subject_head(template, 250.0, np.random.default_rng(1))
    b = subject_head(template, 250.0, np.random.default_rng(2))
    assert a.parcel_gain.shape == (32, 16)
    assert np.isfinite(a.fwd["sol"]["data"]).all()
    assert a.sigmas != b.sigmas
    pos_a = np.array([ch["loc"][:3] for ch in a.info["chs"]])
    pos_b = np.array([ch["loc"][:3] for ch in b.info["chs"]])
    shift = np.linalg.norm(pos_a - pos_b, axis=1)
    assert 0.5e-3 < np.median(shift) < 10e-3  # a few millimetres of electrode jitter
    # one 10 nAm source gives scalp potentials of ~0.1-100 microvolts
    assert 1e-7 < np.abs(a.fwd["sol"]["data"]).max() * 1e-8 < 1e-4


def test_jitter_keeps_distance_to_centre():
    rng = np.random.default_rng(0)
    r0 = np.array([0.0, 0.0, 0.04])
    pos = r0 + 0.09 * rng.standard_normal((20, 3))
    out = jitter_positions(pos, r0, 0.003, rng)
    np.testing.assert_allclose(np.linalg.norm(out - r0, axis=1), np.linalg.norm(pos - r0, axis=1))
    assert not np.allclose(out, pos)


def test_unknown_montage_is_a_value_error():
    with pytest.raises(ValueError, match="biosemi64"):
        build_template("no-such-cap", 8, rng=np.random.default_rng(0))


def test_band_noise_peaks_at_its_centre():
    rng = np.random.default_rng(0)
    x = band_noise(rng, 2, 250 * 60, 250.0, np.array([9.0, 11.5]), 1.0)
    np.testing.assert_allclose(x.std(axis=1), 1.0, rtol=1e-4)
    f, p = welch(x, fs=250.0, nperseg=1000)
    np.testing.assert_allclose(f[np.argmax(p, axis=1)], [9.0, 11.5], atol=0.3)


def test_pink_noise_has_the_requested_slope():
    rng = np.random.default_rng(0)
    x = pink_noise(rng, 2, 250 * 120, 250.0, np.array([1.0, 2.0]))
    f, p = welch(x, fs=250.0, nperseg=2500)
    band = (f > 2) & (f < 40)
    slope = np.polyfit(np.log(f[band]), np.log(p[:, band].T), 1)[0]
    np.testing.assert_allclose(slope, [-1.0, -2.0], atol=0.15)


def test_activity_has_posterior_alpha_at_the_subject_peak(template):
    rng = np.random.default_rng(3)
    act = simulate_activity(rng, template.centroids, template.r0, 250 * 60, 250.0, 10.5)
    assert act.activity.shape == (16, 250 * 60)
    assert act.band_power["alpha"].shape == (16, 250 * 60 // 25)
    post = np.argmin(template.centroids[:, 1])
    f, p = welch(act.activity[post], fs=250.0, nperseg=1000)
    assert abs(f[np.argmax(p)] - 10.5) < 1.0
    # envelopes are slow and correlated: alpha power fluctuates by tens of percent
    rel = act.band_power["alpha"].std(1) / act.band_power["alpha"].mean(1)
    assert (rel > 0.1).all()


def test_hrf_peaks_within_4_to_7_s_with_undershoot():
    hrfs = sample_hrfs(np.random.default_rng(0), 200)
    peaks = hrfs.peak_times()
    assert peaks.min() >= 4.0 and peaks.max() <= 7.0
    assert peaks.std() > 0.3  # heterogeneous across parcels
    t, k = hrfs.kernels(0.1)
    assert (k.min(axis=1) < -0.05).all()  # an undershoot
    assert (hrfs.undershoot_times() > peaks + 4).all()
    assert abs(t[np.argmax(double_gamma(t, 5.0, 15.0))] - 5.0) < 0.5


def test_convolution_is_causal_and_returns_the_kernel():
    hrfs = sample_hrfs(np.random.default_rng(0), 3)
    _, k = hrfs.kernels(0.1)
    drive = np.zeros((3, 600))
    drive[:, 100] = 1.0
    y = convolve_hrf(drive, k)
    assert np.abs(y[:, :100]).max() < 1e-12
    np.testing.assert_allclose(y[:, 100 : 100 + k.shape[1]], k, atol=1e-12)


def test_drive_follows_gamma_up_and_alpha_down():
    rng = np.random.default_rng(0)
    power = {b: 1.0 + rng.random((4, 500)) for b in ("alpha", "beta", "gamma")}
    coupling = sample_coupling(rng, 4)
    drive = bold_drive(power, coupling)
    for p in range(4):
        assert np.corrcoef(drive[p], power["gamma"][p])[0, 1] > 0
        assert np.corrcoef(drive[p], power["alpha"][p])[0, 1] < 0


def test_physiological_noise_is_shared_cardiac_and_respiratory():
    vol_times = np.arange(600) * 2.0
    noise = physiological_noise(np.random.default_rng(0), vol_times, 12)
    np.testing.assert_allclose(noise.std(axis=1), 1.0, rtol=1e-6)
    # every parcel mixes the same 4 waveforms (cardiac and respiratory sin/cos)
    sv = np.linalg.svd(noise, compute_uv=False)
    assert sv[3] > 1e-3 * sv[0]
    assert sv[4] < 1e-8 * sv[0]


def test_grid_and_roi_extraction_recover_parcel_bold(template):
    grid = make_grid(
        template.source_pos, template.parcel_of_source, template.r0, template.brain_radius
    )
    assert set(np.unique(grid.labels)) == set(range(17))
    rng = np.random.default_rng(0)
    pct = rng.standard_normal((16, 40))
    img, base = bold_image(rng, grid, pct)
    assert img.dtype == np.int16
    roi = roi_means(img, grid.labels, 16)
    base_roi = roi_means(base[..., None], grid.labels, 16)
    recovered = (roi / base_roi - 1.0) * 100.0
    for p in range(16):
        assert np.corrcoef(recovered[p], pct[p])[0, 1] > 0.95
