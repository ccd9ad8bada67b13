"""Translation objectives: values on known inputs, gradients, config selection."""

from __future__ import annotations

import pytest
import torch

from brainxl.models.wavelets import DWT1d
from brainxl.objectives import (
    build_objective,
    cosine_loss,
    mse_loss,
    pearson_loss,
    pearson_r,
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
    ours = DWT1d("haar", 3)(x)[::-1]  # the one DWT, reordered finest detail first
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


def _valid_dwt(x: torch.Tensor, wavelet: str, levels: int) -> list[torch.Tensor]:
    """The DWT the objectives used before: strided convolution WITHOUT boundary extension
    (finest detail first, approximation last)."""
    import pywt
    import torch.nn.functional as F

    w = pywt.Wavelet(wavelet)
    kernel = torch.tensor([w.dec_lo[::-1], w.dec_hi[::-1]], dtype=x.dtype).unsqueeze(1)
    a, out = x.reshape(-1, 1, x.shape[-1]), []
    for _ in range(levels):
        y = F.conv1d(a, kernel, stride=2)
        out.append(y[:, 1:2].reshape(*x.shape[:-1], -1))
        a = y[:, 0:1]
    return [*out, a.reshape(*x.shape[:-1], -1)]


@pytest.mark.parametrize("wavelet", ["haar", "db2", "db5"])
def test_wavelet_skip_loss_differs_from_the_old_one_only_at_the_boundaries(wavelet: str) -> None:
    """The skip loss now uses the DWT with PyWavelets' symmetric boundary extension. Its
    interior coefficients are exactly the old unextended ones; only the L//2 - 1 boundary
    coefficients per side are new. For Haar (no boundary coefficients) on a power-of-two
    length the loss value is unchanged."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 3, 64, generator=g, dtype=torch.float64)
    target = torch.randn(2, 3, 64, generator=g, dtype=torch.float64)
    L = len(__import__("pywt").Wavelet(wavelet).dec_lo)
    # one level: the new coefficients contain the old ones at offset L // 2 - 1
    new = DWT1d(wavelet, 1).double()(pred)[1]
    old = _valid_dwt(pred, wavelet, 1)[0]
    off = L // 2 - 1
    torch.testing.assert_close(new[..., off : off + old.shape[-1]], old)
    assert new.shape[-1] - old.shape[-1] == L - 2 + (pred.shape[-1] % 2)
    old_loss = torch.stack(
        [
            F.mse_loss(a, b)
            for a, b in zip(_valid_dwt(pred, wavelet, 3), _valid_dwt(target, wavelet, 3))
        ]
    ).mean()
    new_loss = wavelet_skip_loss(pred, target, wavelet, 3)
    if wavelet == "haar":
        assert new_loss.item() == pytest.approx(old_loss.item(), rel=1e-6)
    else:
        assert new_loss.item() != pytest.approx(old_loss.item(), rel=1e-6)


def test_one_correlation_serves_losses_and_metrics() -> None:
    """objectives.correlation is what pearson_r, cosine_loss and the metrics compute."""
    import numpy as np

    from brainxl import metrics
    from brainxl.objectives import correlation

    g = torch.Generator().manual_seed(5)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64)
    b = a + torch.randn(40, 6, generator=g, dtype=torch.float64)
    np.testing.assert_allclose(
        metrics.pearson_per_roi(a.numpy(), b.numpy()), pearson_r(a, b, eps=0.0).numpy()
    )
    np.testing.assert_allclose(
        metrics.pearson_per_roi(a.numpy(), b.numpy()),
        [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(6)],
    )
    cos = correlation(a.T, b.T, centered=False, eps=0.0)
    np.testing.assert_allclose(metrics.cosine_per_roi(a.numpy(), b.numpy()), cos.numpy())
    assert cosine_loss(a.T, b.T).item() == pytest.approx(1 - cos.mean().item(), abs=1e-6)
    assert cosine_loss(a.T, b.T, centered=True).item() == pytest.approx(
        1 - pearson_r(a, b).mean().item(), abs=1e-6
    )


def test_streamed_pearson_equals_the_batch_one() -> None:
    from brainxl.objectives import correlation_moments, pearson_from_moments

    g = torch.Generator().manual_seed(9)
    a = torch.randn(30, 4, generator=g, dtype=torch.float64)
    b = a + torch.randn(30, 4, generator=g, dtype=torch.float64)
    sums = sum(correlation_moments(a[i : i + 7], b[i : i + 7]) for i in range(0, 30, 7))
    torch.testing.assert_close(pearson_from_moments(sums), pearson_r(a, b, eps=0.0))
