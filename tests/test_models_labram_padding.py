"""Mixed-montage padded batches, LaBraM masking, codebook statistics and dead codes."""

from __future__ import annotations

import pytest
import torch

from brainxl.models.labram import (
    LaBraMEncoder,
    LaBraMForMEM,
    NormEMAVectorQuantizer,
    VQNSPTokenizer,
)
from brainxl.models.labram_pretrain import (
    CodebookMonitor,
    channel_mask,
    masked_token_accuracy,
    pad_eeg_batch,
    symmetric_mask,
    token_budget_batches,
)
from brainxl.models.neurobolt import NEUROBOLT_26

MONTAGES = [
    (list(NEUROBOLT_26[:16]), 4),  # 16 channels x 4 s
    (["Fp1", "Cz", "O2", "T7", "FP1-F7"], 3),  # a bipolar channel among them
    (list(NEUROBOLT_26), 2),
]


def _samples(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [(25.0 * torch.randn(len(ch), s * 200, generator=gen), ch) for ch, s in MONTAGES]


@pytest.mark.parametrize(
    ("filters", "amplitude_embed"), [(4, False), (2, False), (4, True)]
)  # 4 group-norm groups, and 1; with the per-patch amplitude embedding
def test_padded_batch_matches_each_sample_alone(filters, amplitude_embed):
    torch.manual_seed(0)
    enc = LaBraMEncoder(depth=2, filters=filters, heads=2, amplitude_embed=amplitude_embed).eval()
    samples = _samples()
    batch = pad_eeg_batch(samples)
    assert batch.x.shape == (3, 26, 800) and batch.ch_idx.shape == (3, 26)
    assert 0.0 < batch.padding_fraction < 1.0
    with torch.no_grad():
        feats = enc.forward_features(batch.x, batch.ch_idx, pad_mask=batch.pad_mask)
        pooled = enc(batch.x, batch.ch_idx, pad_mask=batch.pad_mask)
        for i, (x, ch) in enumerate(samples):
            alone = pad_eeg_batch([(x, ch)])
            assert alone.pad_mask.sum() == 0
            ref = enc.forward_features(x[None], alone.ch_idx[0])[0]
            torch.testing.assert_close(batch.sample_tokens(feats, i), ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(pooled[i], ref.mean(0), atol=1e-5, rtol=1e-4)


def test_padding_changes_nothing_when_it_is_absent_and_is_needed_when_present():
    torch.manual_seed(0)
    enc = LaBraMEncoder(depth=1, filters=4, heads=2).eval()
    x, ch = _samples()[0]
    single = pad_eeg_batch([(x, ch)])
    with torch.no_grad():
        a = enc.forward_features(x[None], single.ch_idx[0])
        b = enc.forward_features(x[None], single.ch_idx, pad_mask=single.pad_mask)
        assert torch.equal(a, b)  # no padding: the unpadded code path
        batch = pad_eeg_batch(_samples())
        # without the masks the zeros of the padding leak into the real tokens
        leaky = enc.forward_features(batch.x, batch.ch_idx.clamp(min=0))
        exact = enc.forward_features(batch.x, batch.ch_idx, pad_mask=batch.pad_mask)
    assert not torch.allclose(batch.sample_tokens(leaky, 1), batch.sample_tokens(exact, 1))


def test_mem_on_padded_batch_matches_samples_alone():
    torch.manual_seed(0)
    mem = LaBraMForMEM(codebook_size=32, symmetric=False, depth=2, filters=4, heads=2).eval()
    samples = _samples()
    batch = pad_eeg_batch(samples)
    gen = torch.Generator().manual_seed(3)
    mask = symmetric_mask(batch.pad_mask, 0.5, gen)
    targets = torch.randint(0, 32, mask.shape, generator=gen)
    with torch.no_grad():
        out = mem(batch.x, batch.ch_idx, mask, targets, pad_mask=batch.pad_mask)
        logits, losses, counts = [], [], []
        for i, (x, ch) in enumerate(samples):
            alone = pad_eeg_batch([(x, ch)])
            m = batch.sample_tokens(mask, i)[None]
            t = batch.sample_tokens(targets, i)[None]
            o = mem(x[None], alone.ch_idx[0], m, t)
            logits.append(o["logits"])
            losses.append(o["loss"] * m.sum())
            counts.append(m.sum())
    torch.testing.assert_close(out["logits"], torch.cat(logits), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["loss"], sum(losses) / sum(counts), atol=1e-5, rtol=1e-5)
    mem.symmetric = True
    with torch.no_grad():
        both = mem(batch.x, batch.ch_idx, mask, targets, pad_mask=batch.pad_mask)
    assert both["logits"].shape[0] == int((~batch.pad_mask).sum())  # every real token once
    real = (~batch.pad_mask).sum(1)
    assert torch.equal(torch.bincount(both["sample_index"], minlength=3), real)
    assert both["accuracy"] == both["correct"].float().mean()


def test_symmetric_mask_halves_real_tokens_only():
    pad = pad_eeg_batch(_samples()).pad_mask
    mask = symmetric_mask(pad, 0.5, torch.Generator().manual_seed(0))
    real = (~pad).sum(1)
    assert torch.equal(mask.sum(1), (real.float() * 0.5).round().long())
    assert not (mask & pad).any()
    assert torch.equal((mask | (~mask & ~pad)), ~pad)
    with pytest.raises(ValueError, match="mask ratio"):
        symmetric_mask(pad, 1.0)


def test_channel_mask_takes_whole_real_channels():
    batch = pad_eeg_batch(_samples())
    B, C, T = batch.x.shape
    n = T // 200
    mask = channel_mask(batch.pad_mask, C, 0.5, torch.Generator().manual_seed(0))
    per_channel = mask.reshape(B, C, n)
    pad = batch.pad_mask.reshape(B, C, n)
    assert not (mask & batch.pad_mask).any()
    for i in range(B):
        real_ch = ~pad[i].all(dim=1)
        chosen = per_channel[i].any(dim=1)
        # a chosen channel is masked at every real patch; the others at none
        assert torch.equal(per_channel[i], chosen[:, None] & ~pad[i])
        assert not (chosen & ~real_ch).any()
        assert int(chosen.sum()) == round(0.5 * int(real_ch.sum()))
    # different draws choose different channels
    other = channel_mask(batch.pad_mask, C, 0.5, torch.Generator().manual_seed(1))
    assert not torch.equal(mask, other)
    with pytest.raises(ValueError, match="do not split into 5 channels"):
        channel_mask(batch.pad_mask, 5)
    with pytest.raises(ValueError, match="mask ratio"):
        channel_mask(batch.pad_mask, C, 0.0)
    from brainxl.models.labram_tasks import MEMTask

    with pytest.raises(ValueError, match="mask_unit must be one of"):
        MEMTask("debug", {}, None, ["a"], mask_unit="token")


def test_token_budget_batches():
    shapes = [(16, 16), (26, 16), (19, 10), (64, 4), (8, 16), (26, 16), (4, 2)]
    batches = token_budget_batches(shapes, 1024)
    assert [i for b in batches for i in b] == list(range(len(shapes)))
    for b in batches:
        cost = len(b) * max(shapes[i][0] for i in b) * max(shapes[i][1] for i in b)
        assert cost <= 1024
    with pytest.raises(ValueError, match="over the budget"):
        token_budget_batches([(64, 32)], 1024)


def test_codebook_monitor_and_accuracy():
    mon = CodebookMonitor(8)
    mon.update(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    mon.update(torch.tensor([[0, 1], [2, 3]]))
    assert mon.usage() == 0.5
    assert mon.perplexity() == pytest.approx(4.0)
    mon.reset()
    assert mon.usage() == 0.0 and mon.perplexity() == 0.0
    logits = torch.tensor([[0.0, 2.0], [3.0, 1.0], [0.0, 1.0]])
    assert masked_token_accuracy(logits, torch.tensor([1, 1, 1])).item() == pytest.approx(2 / 3)


def test_dead_codes_are_reseeded_from_the_batch():
    torch.manual_seed(0)
    vq = NormEMAVectorQuantizer(16, 4, decay=0.5, kmeans_iters=0, dead_code_threshold=0.2).train()
    z = torch.nn.functional.normalize(torch.randn(2, 4), dim=-1).repeat(32, 1)  # 2 directions
    vq(z)
    # 64 tokens on 2 codes: EMA counts 16, 16 and 0; the floor is 0.2 x 32 / 16 = 0.4
    assert vq.reseeded == 14
    fresh = torch.isclose(vq.cluster_size, torch.tensor(0.4))
    assert int(fresh.sum()) == vq.reseeded
    dist = torch.cdist(vq.codebook[fresh], z[:2])
    assert torch.allclose(dist.min(dim=1).values, torch.zeros(vq.reseeded), atol=1e-5)
    off = NormEMAVectorQuantizer(16, 4, kmeans_iters=0).train()
    off(z)
    assert off.reseeded == 0


def test_tokenizer_reports_usage_and_perplexity():
    torch.manual_seed(0)
    tok = VQNSPTokenizer(codebook_size=32, code_dim=8, decoder_depth=1, depth=1, filters=2,
                         heads=2, dead_code_threshold=0.5).train()  # fmt: skip
    x = 20.0 * torch.randn(2, 3, 400)
    idx = torch.tensor([0, 1, 2])
    out = tok(x, idx)
    n_used = len(out["codes"].unique())
    assert out["usage"].item() == pytest.approx(n_used / 32)
    assert 1.0 <= out["perplexity"].item() <= n_used + 1e-4
    assert out["dead_codes"].item() >= 0


def test_tokenizer_on_padded_batch_matches_samples_alone():
    torch.manual_seed(0)
    tok = VQNSPTokenizer(codebook_size=32, code_dim=8, decoder_depth=1, depth=2, filters=2,
                         heads=2)  # fmt: skip
    samples = _samples(1)
    batch = pad_eeg_batch(samples)
    codes = tok.tokenize(batch.x, batch.ch_idx, batch.pad_mask)
    assert bool((codes[batch.pad_mask] == -1).all()) and bool((codes[~batch.pad_mask] >= 0).all())
    for i, (x, ch) in enumerate(samples):
        alone = tok.tokenize(x[None], batch.ch_idx[i, : len(ch)])[0]
        assert torch.equal(batch.sample_tokens(codes[..., None], i)[:, 0], alone)
    tok.eval()
    out = tok(batch.x, batch.ch_idx, batch.pad_mask)  # padding counts in no loss
    parts = [tok(x[None], batch.ch_idx[i, : len(ch)]) for i, (x, ch) in enumerate(samples)]
    n = torch.tensor([x.shape[0] * x.shape[1] // 200 for x, _ in samples], dtype=torch.float)
    amp = sum(p["loss_amp"] * k for p, k in zip(parts, n)) / n.sum()
    torch.testing.assert_close(out["loss_amp"], amp, rtol=1e-4, atol=1e-5)
