"""Translation objectives: values on known inputs, gradients, config selection."""

from __future__ import annotations

import pytest
import torch

from brainxl.objectives import (
    build_objective,
    cosine_loss,
    mse_loss,
    pearson_loss,
    pearson_r,
    wavelet_decompose,
    wavelet_skip_loss,
)


def test_pearson_axes_and_values() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randn(32, 5, generator=g)
    assert torch.allclose(pearson_r(2 * y + 1, y), torch.ones(5), atol=1e-5)
    assert torch.allclose(pearson_r(-y, y), -torch.ones(5), atol=1e-5)
    seq = torch.randn(4, 3, 16, generator=g)
    assert pearson_r(seq, seq).shape == (4, 3)
    assert pearson_loss(y, y).item() == pytest.approx(0.0, abs=1e-5)


def test_mse_cosine_and_shape_errors() -> None:
    a, b = torch.ones(2, 3), torch.zeros(2, 3)
    assert mse_loss(a, b).item() == pytest.approx(1.0)
    assert cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="n_targets"):
        mse_loss(a, torch.zeros(2, 4))


def test_haar_decomposition_matches_pywavelets() -> None:
    import numpy as np
    import pywt

    x = torch.randn(2, 3, 32, generator=torch.Generator().manual_seed(1))
    ours = wavelet_decompose(x, "haar", levels=3)
    ref = pywt.wavedec(x.numpy(), "haar", level=3, axis=-1)  # [cA3, cD3, cD2, cD1]
    assert np.allclose(ours[-1].numpy(), ref[0], atol=1e-5)
    for lvl in range(3):
        assert np.allclose(ours[lvl].numpy(), ref[3 - lvl], atol=1e-5)


def test_wavelet_loss_sees_fast_components_and_has_gradients() -> None:
    t = torch.arange(64.0)
    slow = torch.sin(t / 10).expand(2, 3, 64)
    fast = slow + 0.5 * torch.sign(torch.sin(t * 3.0))
    assert wavelet_skip_loss(slow, slow).item() == pytest.approx(0.0, abs=1e-7)
    assert wavelet_skip_loss(fast, slow).item() > 0.01
    pred = slow.clone().requires_grad_(True)
    loss, parts = build_objective("samba")(pred, fast)
    loss.backward()
    assert set(parts) == {"mse", "pearson", "wavelet"} and pred.grad.abs().sum() > 0


def test_build_objective_names() -> None:
    for name in ("mse", "pearson", "cosine"):
        loss, parts = build_objective(name)(torch.randn(8, 3), torch.randn(8, 3))
        assert loss.ndim == 0 and name in parts
    with pytest.raises(ValueError, match="train.loss.name"):
        build_objective("huber")
