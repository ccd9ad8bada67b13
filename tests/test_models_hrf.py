"""DoubleGammaHRF: causal FFT convolution, normalisation, recovery of a known HRF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import gamma

from brainxl.models.hrf import PARAM_NAMES, DoubleGammaHRF, causal_fft_conv


def test_parameters_registered_and_kernel_normalised() -> None:
    hrf = DoubleGammaHRF(7, sfreq=20.0)
    assert dict(hrf.named_parameters())["raw"].shape == (7, len(PARAM_NAMES))
    assert "raw" in hrf.state_dict()
    k = hrf.kernel()
    assert k.shape == (7, 600)
    torch.testing.assert_close(k.abs().sum(-1), torch.ones(7))
    peak = hrf.peak_time()
    assert torch.all((peak > 5.0) & (peak < 6.5)), peak


def test_fft_conv_equals_direct_causal_convolution() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 50, dtype=torch.float64)
    for L in (7, 80):  # kernel shorter and longer than the window
        h = torch.randn(3, L, dtype=torch.float64)
        y = causal_fft_conv(x, h)
        ref = np.stack(
            [[np.convolve(x[b, p].numpy(), h[p].numpy())[:50] for p in range(3)] for b in range(2)]
        )
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-10)


def test_forward_is_causal_and_deconvolve_inverts() -> None:
    hrf = DoubleGammaHRF(4, sfreq=10.0)
    x = torch.randn(2, 4, 400)
    y = hrf(x)
    x2 = x.clone()
    x2[..., 250:] += torch.randn(2, 4, 150)  # change the future only
    torch.testing.assert_close(hrf(x2)[..., :250], y[..., :250])
    assert not torch.allclose(hrf(x2)[..., 250:], y[..., 250:])
    # Wiener deconvolution inverts a slow drive whose response ends inside the window
    # (L = 300 taps); fast components are attenuated ~1e-10 by the HRF and lost.
    g = torch.exp(-0.5 * (torch.arange(-40, 41) / 10.0) ** 2)
    drive = torch.nn.functional.conv1d(torch.randn(4, 1, 180), (g / g.sum())[None, None])
    drive = torch.nn.functional.pad(drive.reshape(1, 4, 100) * torch.hann_window(100), (0, 300))
    rec = hrf.deconvolve(hrf(drive), reg=1e-6)
    r = torch.nn.functional.cosine_similarity(rec, drive, dim=-1)
    assert r.min() > 0.99, r
    assert hrf.deconvolve(y).shape == y.shape


def test_wrong_parcel_count_raises() -> None:
    with pytest.raises(ValueError, match="parcels"):
        DoubleGammaHRF(4, sfreq=10.0)(torch.zeros(1, 5, 10))


def test_hrf_recovers_known_peak_time() -> None:
    """BOLD = causal conv(drive, SPM-style double gamma peaking near 5 s) + noise."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sfreq, n_parcels, T = 10.0, 3, 3000
    t = np.arange(int(30 * sfreq)) / sfreq
    true = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0  # peaks at ~5 s
    fine = np.arange(0, 30, 1e-3)
    true_peak = fine[np.argmax(gamma.pdf(fine, 6) - gamma.pdf(fine, 16) / 6.0)]
    assert abs(true_peak - 5.0) < 0.2
    drive = (rng.random((1, n_parcels, T)) < 0.05) * rng.standard_normal((1, n_parcels, T))
    drive = torch.tensor(drive, dtype=torch.float32)
    kernel = torch.tensor(np.tile(true, (n_parcels, 1)), dtype=torch.float32)
    bold = causal_fft_conv(drive, kernel)
    bold = bold + 0.05 * bold.std() * torch.randn_like(bold)

    hrf = DoubleGammaHRF(n_parcels, sfreq=sfreq)  # starts with its peak near 6 s
    assert (hrf.peak_time() - true_peak).abs().min() > 0.5
    opt = torch.optim.Adam(hrf.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = 1 - torch.nn.functional.cosine_similarity(hrf(drive), bold, dim=-1).mean()
        loss.backward()
        opt.step()
    err = (hrf.peak_time() - true_peak).abs()
    assert err.max() < 0.5, (hrf.peak_time(), true_peak, float(loss))


def test_kernel_stays_float32_in_a_bfloat16_module() -> None:
    hrf = DoubleGammaHRF(2, sfreq=200.0)
    ref = hrf.kernel()
    hrf = hrf.to(torch.bfloat16)
    k = hrf.kernel()
    assert k.dtype == torch.float32
    # only the bf16 rounding of the raw parameters remains
    torch.testing.assert_close(k, ref, atol=2e-4, rtol=0.05)
    y = hrf(torch.randn(1, 2, 400, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_steady_state_history_equals_a_long_constant_past_and_stays_causal() -> None:
    """history=n: as if the input had stood at the mean of its first n samples forever."""
    torch.manual_seed(0)
    hrf = DoubleGammaHRF(3, sfreq=2.0, length_s=20.0)  # 40 taps
    x = torch.randn(2, 3, 30) + 5.0
    n = 4
    level = x[..., :n].mean(-1, keepdim=True)
    past = level.expand(-1, -1, hrf.n_taps)  # a constant past as long as the kernel
    full = hrf(torch.cat([past, x], dim=-1))[..., hrf.n_taps :]
    torch.testing.assert_close(hrf(x, history=n), full)
    # a constant input gives a constant output from the first sample (zero history: a ramp)
    c = torch.full((1, 3, 30), 2.0)
    steady = torch.full_like(c, 2.0) * hrf.kernel().sum(-1)[:, None]
    torch.testing.assert_close(hrf(c, history=1), steady)
    assert (hrf(c)[..., 0] < hrf(c)[..., 20]).all()
    # output t reads no input after max(t, n - 1)
    y = x.clone()
    y[..., 10:] += 3.0
    torch.testing.assert_close(hrf(y, history=n)[..., :10], hrf(x, history=n)[..., :10])
    assert torch.equal(hrf(x, history=0), hrf(x))
