"""LaBraM encoder, masked-EEG-modeling head and VQ-NSP tokenizer at debug size."""

from __future__ import annotations

import pytest
import torch

from brainxl.models.labram import (
    TUH_23,
    LaBraMForMEM,
    NormEMAVectorQuantizer,
    VQNSPTokenizer,
    build_encoder,
    default_eeg,
    random_mask,
    spectrum_targets,
)
from brainxl.models.registry import build_model


def _encoder(**kw):
    torch.manual_seed(0)
    return build_encoder("debug", drop_path=0.0, **kw).eval()


@pytest.mark.parametrize("seconds", [1, 4, 16])
def test_forward_features_shape(seconds):
    enc = _encoder()
    x, idx = default_eeg(2, seconds=seconds)
    feats = enc.forward_features(x, idx)
    assert feats.shape == (2, len(TUH_23) * seconds, enc.dim)
    assert enc(x, idx).shape == (2, enc.dim)


def test_tokens_are_channel_major_and_position_aware():
    enc = _encoder()
    x, idx = default_eeg(1, seconds=2)
    feats = enc.forward_features(x, idx)
    # swapping channels 0 and 1 (names and data together) swaps their token blocks
    perm = torch.tensor([1, 0] + list(range(2, len(TUH_23))))
    swapped = enc.forward_features(x[:, perm], idx[perm])
    assert torch.allclose(swapped[:, 0:2], feats[:, 2:4], atol=1e-5)


def test_too_long_or_ragged_input_is_rejected():
    enc = _encoder()
    x, idx = default_eeg(1, seconds=17)
    with pytest.raises(ValueError, match="exceed the model's maximum of 16"):
        enc.forward_features(x, idx)
    with pytest.raises(ValueError, match="multiple"):
        enc.forward_features(x[..., :250], idx)
    with pytest.raises(ValueError, match="vocabulary rows"):
        enc.forward_features(x[..., :200], torch.full((len(TUH_23),), 10_000))
    longer = _encoder(max_patches=32)
    assert longer.forward_features(x, idx).shape[1] == 17 * len(TUH_23)


def test_mask_replaces_tokens_and_requires_mask_token():
    enc = _encoder()
    x, idx = default_eeg(2, seconds=2)
    mask = random_mask(2, len(TUH_23) * 2)
    assert mask.sum(1).tolist() == [len(TUH_23)] * 2
    with pytest.raises(ValueError, match="no mask token"):
        enc.forward_features(x, idx, mask)
    mem = build_encoder("debug", use_mask_token=True).eval()
    masked = mem.forward_features(x, idx, mask)
    # a fully masked input no longer depends on the EEG
    full = torch.ones_like(mask)
    a = mem.forward_features(x, idx, full)
    b = mem.forward_features(torch.randn_like(x), idx, full)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(masked, mem.forward_features(x, idx), atol=1e-4)


def test_mem_symmetric_logits_and_learning():
    torch.manual_seed(0)
    model = build_model("labram", "debug", drop_path=0.0)
    assert isinstance(model, LaBraMForMEM) and model.symmetric
    x, idx = default_eeg(2, names=TUH_23[:6], seconds=2)
    L = 6 * 2
    mask = random_mask(2, L)
    targets = torch.randint(0, model.codebook_size, (2, L))
    out = model(x, idx, mask, targets)
    assert out["logits"].shape == (2 * L, model.codebook_size)  # both passes: every token
    model.symmetric = False
    assert model(x, idx, mask)["logits"].shape == (int(mask.sum()), model.codebook_size)
    model.symmetric = True
    with pytest.raises(ValueError, match="targets must have shape"):
        model(x, idx, mask, targets[:, :-1])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(12):
        loss = model(x, idx, mask, targets)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_quantizer_kmeans_ema_and_straight_through():
    torch.manual_seed(0)
    vq = NormEMAVectorQuantizer(16, 8, kmeans_iters=5)
    z = torch.randn(64, 8, requires_grad=True)
    assert not bool(vq.initted)
    vq.eval()
    before = vq.codebook.clone()
    vq(z)
    assert torch.equal(before, vq.codebook) and not bool(vq.initted)  # eval: no update
    vq.train()
    zq, loss, codes = vq(z)
    assert bool(vq.initted) and not torch.equal(before, vq.codebook)
    assert torch.allclose(vq.codebook.norm(dim=-1), torch.ones(16), atol=1e-5)
    assert codes.shape == (64,) and int(codes.max()) < 16 and loss.item() >= 0
    assert vq.cluster_size.sum() > 0
    (zq.sum() + loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through


def test_tokenizer_codes_and_reconstruction_targets():
    torch.manual_seed(0)
    tok = build_model("labram-tokenizer", "debug")
    assert isinstance(tok, VQNSPTokenizer)
    x, idx = default_eeg(2, names=TUH_23[:6], seconds=3)
    out = tok(x, idx)
    L = 6 * 3
    assert out["codes"].shape == (2, L)
    assert out["amplitude"].shape == (2, L, 101) and out["phase"].shape == (2, L, 101)
    assert torch.isclose(out["loss"], out["loss_quant"] + out["loss_amp"] + out["loss_phase"])
    codes = tok.tokenize(x, idx)
    assert tok.training and codes.dtype == torch.long and torch.equal(codes, tok.tokenize(x, idx))
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        loss = tok(x, idx)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_amplitude_embedding_adds_each_filters_log_power_to_its_token():
    x, idx = default_eeg(2, seconds=2)
    plain, enc = _encoder(), _encoder(amplitude_embed=True)
    assert plain.amplitude_embed is None
    extra = set(enc.state_dict()) - set(plain.state_dict())
    assert extra == {"amplitude_embed.weight", "amplitude_embed.bias"}
    assert enc.amplitude_embed.in_features == enc.patch_embed.conv1.out_channels
    with torch.no_grad():
        tokens, _ = enc.patch_tokens(x, idx)
        louder, _ = enc.patch_tokens(3.0 * x, idx)
        conv = enc.patch_embed((x * 0.01).reshape(2, -1, 200))
        conv3 = enc.patch_embed((3.0 * x * 0.01).reshape(2, -1, 200))
    # the group norms pool over the whole sample: only the embedding sees the 3x level,
    # as log(9) more power at the output of every first-conv filter
    step = (louder - conv3) - (tokens - conv)
    expected = enc.amplitude_embed.weight.sum(dim=1) * torch.log(torch.tensor(9.0))
    torch.testing.assert_close(step, expected.expand_as(step), atol=1e-4, rtol=1e-3)
    # and it sees frequency: power added in one band moves the filters' powers unequally
    t = torch.arange(400) / 200.0
    slow = 20.0 * torch.sin(2 * torch.pi * 3.0 * t)
    fast = 20.0 * torch.sin(2 * torch.pi * 40.0 * t)
    with torch.no_grad():
        _, p_slow = enc.patch_embed.forward_with_power((slow * 0.01).reshape(1, 2, 200))
        _, p_fast = enc.patch_embed.forward_with_power((fast * 0.01).reshape(1, 2, 200))
    assert p_slow.shape == (1, 2, enc.patch_embed.conv1.out_channels)
    diff = (p_fast - p_slow)[0, 0]
    assert float(diff.max() - diff.min()) > 0.1


def test_log_amplitude_targets_keep_the_level_that_patch_targets_remove():
    patches = 20.0 * torch.randn(5, 200, generator=torch.Generator().manual_seed(1))
    amp, phase = spectrum_targets(patches)
    amp3, phase3 = spectrum_targets(3.0 * patches)
    torch.testing.assert_close(amp3, amp, atol=1e-4, rtol=1e-4)
    log_amp, log_phase = spectrum_targets(patches, "log")
    log_amp3, _ = spectrum_targets(3.0 * patches, "log")
    torch.testing.assert_close(log_phase, phase)
    shift = (log_amp3 - log_amp).median()
    assert abs(float(shift) - float(torch.log(torch.tensor(3.0)))) < 0.01
    with pytest.raises(ValueError, match="amplitude target"):
        spectrum_targets(patches, "power")
    with pytest.raises(ValueError, match="amplitude_target"):
        VQNSPTokenizer(amplitude_target="power", depth=1, filters=2, heads=2)
    tok = build_model("labram-tokenizer", "debug", amplitude_target="log", amplitude_embed=True)
    x, idx = default_eeg(2, names=TUH_23[:4], seconds=2)
    out = tok(x, idx)
    target, _ = spectrum_targets(x.reshape(2, 8, 200), "log")
    expected = torch.nn.functional.mse_loss(out["amplitude"].float(), target)
    torch.testing.assert_close(out["loss_amp"], expected.detach())


def test_band_amplitude_targets_are_the_rhythms_levels_without_the_bin_scatter():
    from brainxl.models.labram import BAND_EDGES

    t = torch.arange(200) / 200.0
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(64, 200, generator=gen)
    alpha = noise + 4.0 * torch.sin(2 * torch.pi * 10.0 * t + torch.rand(64, 1, generator=gen))
    band, phase = spectrum_targets(noise, "band")
    log, log_phase = spectrum_targets(noise, "log")
    torch.testing.assert_close(phase, log_phase)
    amp = torch.fft.rfft(noise * 0.01, dim=-1).abs()
    edges = [*BAND_EDGES, 101]
    for lo, hi in zip(edges[:-1], edges[1:]):
        # one value per band: the log of the band's mean amplitude
        expected = torch.log(amp[:, lo:hi].mean(-1) + 1e-3)
        torch.testing.assert_close(band[:, lo:hi], expected[:, None].expand(-1, hi - lo))
    # far less scatter across patches of the same white noise than the per-bin log
    assert float(band[:, 30:40].std(0).mean()) < 0.5 * float(log[:, 30:40].std(0).mean())
    # an alpha rhythm raises the 10-13 Hz band (bins 10..12) and no band above 16 Hz
    band_alpha, _ = spectrum_targets(alpha, "band")
    rise = (band_alpha - band).mean(0)
    assert float(rise[10]) > 1.0 and float(rise[20:].abs().max()) < 1e-4
    tok = build_model("labram-tokenizer", "debug", amplitude_target="band")
    x, idx = default_eeg(2, names=TUH_23[:4], seconds=2)
    out = tok(x, idx)
    target, _ = spectrum_targets(x.reshape(2, 8, 200), "band")
    expected = torch.nn.functional.mse_loss(out["amplitude"].float(), target)
    torch.testing.assert_close(out["loss_amp"], expected.detach())


def test_grad_checkpointing_matches():
    x, idx = default_eeg(1, seconds=2)
    grads = []
    for ckpt in (False, True):
        enc = _encoder().train()
        enc.set_grad_checkpointing(ckpt)
        enc(x, idx).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in enc.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
