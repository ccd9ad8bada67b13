"""The torch DWT/IDWT equals PyWavelets' wavedec/waverec."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from brainxl.models.wavelets import DWT1d, IDWT1d, coeff_lengths

WAVELETS = ["db1", "haar", "db4", "db5", "sym4", "coif1"]


@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_wavedec_waverec_match_pywt(wavelet: str, level: int, mode: str) -> None:
    rng = np.random.default_rng(level)
    for n in (400, 237):  # even and odd lengths
        x = rng.standard_normal((3, 2, n))
        ref = pywt.wavedec(x, wavelet, mode=mode, level=level, axis=-1)
        got = DWT1d(wavelet, level, mode)(torch.tensor(x, dtype=torch.float64))
        assert [c.shape[-1] for c in got] == [c.shape[-1] for c in ref]
        assert [c.shape[-1] for c in ref] == coeff_lengths(n, wavelet, level, mode)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g.numpy(), r, atol=1e-5)
        rec_ref = pywt.waverec(ref, wavelet, mode=mode, axis=-1)
        rec = IDWT1d(wavelet, mode)([torch.tensor(c) for c in ref])
        assert rec.shape[-1] == rec_ref.shape[-1]
        np.testing.assert_allclose(rec.numpy(), rec_ref, atol=1e-5)
        np.testing.assert_allclose(rec.numpy()[..., :n], x, atol=1e-5)


def test_float32_and_gradients() -> None:
    x = torch.randn(4, 400, requires_grad=True)
    coeffs = DWT1d("db5", 3)(x)
    assert [c.shape[-1] for c in coeffs] == [57, 57, 106, 204]
    y = IDWT1d("db5")(coeffs)[..., :400]
    torch.testing.assert_close(y, x, atol=1e-4, rtol=0)
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="unknown wavelet"):
        DWT1d("nope")
    with pytest.raises(ValueError, match="mode"):
        DWT1d("db5", mode="zero")
    with pytest.raises(ValueError, match="do not match"):
        IDWT1d("db1")([torch.zeros(1, 5), torch.zeros(1, 9)])


@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_dense_matrices_match_pywt(mode: str) -> None:
    from brainxl.models.wavelets import dwt_matrix, idwt_matrix

    n, rng = 400, np.random.default_rng(1)
    x = rng.standard_normal((5, n))
    W = dwt_matrix(n, "db5", 3, mode).double().numpy()
    ref = np.concatenate(pywt.wavedec(x, "db5", mode=mode, level=3, axis=-1), axis=-1)
    np.testing.assert_allclose(x @ W.T, ref, atol=1e-5)
    V = idwt_matrix(n, "db5", 3, mode).double().numpy()
    np.testing.assert_allclose(ref @ V.T, x, atol=1e-5)
