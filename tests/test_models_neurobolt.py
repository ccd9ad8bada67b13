"""NeuroBOLT: montages, ROI counts, ablation variants, input checks, spectral module."""

from __future__ import annotations

import pytest
import torch

from brainxl.channels import channel_indices
from brainxl.models.neurobolt import NEUROBOLT_26, NeuroBOLT
from brainxl.models.registry import build_model, count_parameters
from brainxl.models.spectral import MultiScaleSpectral

BIOSEMI64 = [
    "Fp1",
    "AF7",
    "AF3",
    "F1",
    "F3",
    "F5",
    "F7",
    "FT7",
    "FC5",
    "FC3",
    "FC1",
    "C1",
    "C3",
    "C5",
    "T7",
    "TP7",
    "CP5",
    "CP3",
    "CP1",
    "P1",
    "P3",
    "P5",
    "P7",
    "P9",
    "PO7",
    "PO3",
    "O1",
    "Iz",
    "Oz",
    "POz",
    "Pz",
    "CPz",
    "Fpz",
    "Fp2",
    "AF8",
    "AF4",
    "AFz",
    "Fz",
    "F2",
    "F4",
    "F6",
    "F8",
    "FT8",
    "FC6",
    "FC4",
    "FC2",
    "FCz",
    "Cz",
    "C2",
    "C4",
    "C6",
    "T8",
    "TP8",
    "CP6",
    "CP4",
    "CP2",
    "P2",
    "P4",
    "P6",
    "P8",
    "P10",
    "PO8",
    "PO4",
    "O2",
]
LEGACY = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T3",
    "C3",
    "Cz",
    "C4",
    "T4",
    "T5",
    "P3",
    "Pz",
    "P4",
    "T6",
    "O1",
    "O2",
]
MODERN = [
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "O1",
    "O2",
]


def _model(window_s: int = 4, **kw) -> NeuroBOLT:
    torch.manual_seed(0)
    model = NeuroBOLT.from_flavor("debug", window_s=window_s, drop_path=0.0, **kw)
    with torch.no_grad():  # a visible head: the 1e-3 init makes outputs tiny
        if model.readout == "mean":
            model.head.weight.normal_()
        else:
            model.channel_readout.channels.normal_()
    return model.eval()


def _eeg(names, seconds: int, batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = 30.0 * torch.randn(batch, len(names), seconds * 200, generator=gen)
    return x, torch.tensor(channel_indices(names))


@pytest.mark.parametrize("names", [NEUROBOLT_26, BIOSEMI64, LEGACY], ids=["26ch", "bio64", "t3t4"])
@pytest.mark.parametrize("n_rois", [1, 7, 64])
def test_output_shape_for_montages_and_rois(names, n_rois):
    model = _model(n_rois=n_rois)
    x, idx = _eeg(names, 4)
    y = model(x, idx)
    assert y.shape == (2, n_rois) and torch.isfinite(y).all()


def test_legacy_names_share_embeddings_with_modern_names():
    model = _model()
    x, idx_old = _eeg(LEGACY, 4)
    _, idx_new = _eeg(MODERN, 4)
    assert torch.equal(idx_old, idx_new)
    assert torch.allclose(model(x, idx_old), model(x, idx_new))


def test_output_depends_on_channel_names_not_order():
    model = _model()
    x, idx = _eeg(NEUROBOLT_26, 4)
    perm = torch.randperm(len(NEUROBOLT_26), generator=torch.Generator().manual_seed(1))
    y = model(x, idx)
    assert torch.allclose(y, model(x[:, perm], idx[perm]), atol=1e-5)
    # same data labelled with other channels is a different input
    assert not torch.allclose(y, model(x, idx.roll(1)), atol=1e-5)


def test_base_window_and_default_registry_build():
    model = build_model("neurobolt", "debug", n_rois=3)
    assert model.window_s == 16 and model.n_rois == 3
    x, idx = _eeg(NEUROBOLT_26, 16, batch=1)
    assert model(x, idx).shape == (1, 3)


def test_head_starts_small():
    torch.manual_seed(0)
    model = NeuroBOLT.from_flavor("debug", window_s=4).eval()
    x, idx = _eeg(NEUROBOLT_26, 4)
    assert model(x, idx).abs().max() < 0.05


def test_spectral_variants():
    multi, single, off = (_model(spectral=s) for s in ("multi", "single", "off"))
    assert multi.scales == (0.5, 1.0, 2.0, 4.0) and len(multi.spectral.freq_maps) == 4
    assert single.scales == (1.0,) and len(single.spectral.freq_maps) == 1
    assert off.spectral is None and off.scales == ()
    assert count_parameters(multi) > count_parameters(single) > count_parameters(off)
    custom = _model(spectral="single", scales=(2.0,))
    assert custom.scales == (2.0,)
    x, idx = _eeg(NEUROBOLT_26, 4)
    outs = [m(x, idx) for m in (multi, single, off, custom)]
    assert all(o.shape == (2, 64) for o in outs)
    assert _model(spectral=False).spectral is None  # `model.overrides.spectral=off` (YAML)
    with pytest.raises(ValueError, match="spectral must be"):
        _model(spectral="wavelet")
    with pytest.raises(ValueError, match="does not fit"):
        _model(window_s=2, scales=(4.0,))


def test_input_errors_name_the_fix():
    model = _model(window_s=4)
    x, idx = _eeg(NEUROBOLT_26, 4)
    with pytest.raises(ValueError, match="multiple of the 200-sample patch"):
        model(x[..., :-10], idx)
    with pytest.raises(ValueError, match="built for 4 s windows"):
        model(x[..., :600], idx)
    with pytest.raises(ValueError, match="one vocabulary index per channel"):
        model(x, idx[:-1])
    with pytest.raises(ValueError, match="exceed the model's maximum"):
        model(torch.zeros(1, 26, 17 * 200), idx)
    with pytest.raises(ValueError, match="shape"):
        model(x[0], idx)


def test_spectrogram_matches_torch_stft_per_channel():
    spec = MultiScaleSpectral(800, (0.5, 1.0), dim=16, n_tokens=4, depth=1, heads=2)
    x = torch.randn(2, 3, 800)
    for n_fft in spec.n_ffts:
        got = spec.spectrogram(x, n_fft)
        for c in range(3):  # the per-channel loop of the official code, as a reference
            ref = torch.stft(x[:, c], n_fft, hop_length=n_fft, window=torch.ones(n_fft),
                             center=False, return_complex=True).abs().transpose(1, 2)  # fmt: skip
            assert torch.allclose(got[:, c], ref, atol=1e-4)
    assert spec(x, torch.tensor([0, 1, 2])).shape == (2, 16)


def test_grad_checkpointing_gives_same_gradients():
    x, idx = _eeg(NEUROBOLT_26, 4)
    grads = []
    for ckpt in (False, True):
        model = _model(window_s=4).train()
        model.set_grad_checkpointing(ckpt)
        model(x, idx).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_layer_ids_for_layerwise_lr_decay():
    model = _model()
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["encoder.spatial_embed"] == 0
    assert ids["encoder.blocks.1.attn.qkv.weight"] == 2
    assert ids["head.weight"] == model.encoder.depth + 1


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = NeuroBOLT.from_flavor("debug", window_s=4, n_rois=4).train()
    x, idx = _eeg(NEUROBOLT_26[:8], 4, batch=4)
    y = torch.randn(4, 4, generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(model(x, idx), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_channel_readout_is_montage_independent_and_per_roi():
    model = _model(readout="channel", readout_rank=2, n_rois=5)
    assert not hasattr(model, "head")
    rows, n_rois, rank = model.channel_readout.channels.shape
    assert (n_rois, rank) == (5, 2) and model.channel_readout.features.shape[:2] == (5, 2)
    x, idx = _eeg(NEUROBOLT_26, 4)
    perm = torch.randperm(len(NEUROBOLT_26), generator=torch.Generator().manual_seed(2))
    y = model(x, idx)
    assert y.shape == (2, 5)
    assert torch.allclose(y, model(x[:, perm], idx[perm]), atol=1e-5)
    # a channel's weight for one ROI moves that ROI's output only
    with torch.no_grad():
        model.channel_readout.channels[idx[3] + 1, 2] += 1.0
    moved = (model(x, idx) - y).abs().amax(dim=0)
    assert moved[2] > 1e-4 and torch.all(moved[[0, 1, 3, 4]] == 0)
    # a subset of the montage still works (unused vocabulary rows are ignored)
    assert model(x[:, :8], idx[:8]).shape == (2, 5)


def test_channel_readout_options_are_checked():
    with pytest.raises(ValueError, match="readout must be"):
        _model(readout="attention")
    with pytest.raises(ValueError, match="readout_rank must be"):
        _model(readout="channel", readout_rank=0)


def test_channel_readout_learns_a_channel_specific_target():
    """Targets = log power of two different channels, under random per-channel gains."""
    torch.manual_seed(0)
    model = NeuroBOLT.from_flavor(
        "debug", window_s=4, n_rois=2, readout="channel", drop_path=0.0
    ).train()
    names = NEUROBOLT_26[:6]
    gen = torch.Generator().manual_seed(5)
    gains = torch.exp(torch.randn(64, len(names), 1, generator=gen))
    x = 20.0 * gains * torch.randn(64, len(names), 800, generator=gen)
    idx = torch.tensor(channel_indices(names))
    y = torch.log(x[:, [0, 4]].pow(2).mean(-1))
    y = (y - y.mean(0)) / y.std(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model(x, idx), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model.eval()(x, idx)
    r = [torch.corrcoef(torch.stack([pred[:, k], y[:, k]]))[0, 1].item() for k in range(2)]
    assert min(r) > 0.7, r


def test_spatial_filters_are_montage_independent_weighted_sums():
    model = _model(readout="channel", spatial_filters=3, n_rois=4)
    filters = model.spatial_filters
    x, idx = _eeg(NEUROBOLT_26, 4)
    v = filters(x, idx)
    w = filters.weight[idx + 1] * filters.gain / len(NEUROBOLT_26) ** 0.5
    assert v.shape == (2, 3, 800)
    assert torch.allclose(v[:, 1], torch.einsum("bct,c->bt", x, w[:, 1]), atol=1e-3)
    perm = torch.randperm(len(NEUROBOLT_26), generator=torch.Generator().manual_seed(4))
    assert torch.allclose(v, filters(x[:, perm], idx[perm]), atol=1e-3)
    y = model(x, idx)
    assert torch.allclose(y, model(x[:, perm], idx[perm]), atol=1e-5)
    # each filter is a channel of its own in the spectral embedding and the readout
    rows = model.spectral.channel_embed.shape[0]
    assert rows == model.channel_readout.channels.shape[0] == filters.weight.shape[0] + 3
    with torch.no_grad():
        model.channel_readout.channels[-1] += 1.0  # the last filter's readout weights
    assert not torch.allclose(y, model(x, idx), atol=1e-5)
    mean = _model(spatial_filters=3)
    assert mean(x, idx).shape == (2, 64)


def test_spatial_filters_see_what_per_channel_spectra_cannot():
    """Two channels in phase or in antiphase: same per-channel spectra, not the same sum."""
    model = _model(readout="channel", spatial_filters=4)
    names = NEUROBOLT_26[:4]
    idx = torch.tensor(channel_indices(names))
    t = torch.arange(800) / 200.0
    s = 20.0 * torch.sin(2 * torch.pi * 10.0 * t)
    noise = torch.randn(2, 800, generator=torch.Generator().manual_seed(6))
    x_in = torch.stack([s, s, *noise])[None]
    x_anti = torch.stack([s, -s, *noise])[None]
    spec_in, rows = model.spectral_input(x_in, idx)
    spec_anti, _ = model.spectral_input(x_anti, idx)
    assert rows[:4].tolist() == idx.tolist() and len(rows) == 8
    mags = [model.spectral.spectrogram(z, 200)[..., 10] for z in (spec_in, spec_anti)]
    assert torch.allclose(mags[0][:, :4], mags[1][:, :4], atol=1e-4)  # the sensors
    assert (mags[0][:, 4:] - mags[1][:, 4:]).abs().max() > 0.05  # the filters


def test_spatial_filter_options_are_checked():
    with pytest.raises(ValueError, match="spatial_filters must be >= 0"):
        _model(spatial_filters=-1)
    with pytest.raises(ValueError, match="feed the spectral branch"):
        _model(spectral="off", spatial_filters=4)
    assert _model().spatial_filters is None
