"""Shared blocks (memory-lean linear) and the weights save/load mixin."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from brainxl.models.blocks import Block, LoadReport, prefix_linear
from brainxl.models.labram import build_encoder, default_eeg
from brainxl.models.neurobolt import NeuroBOLT


@pytest.mark.parametrize("prefix", ["layernorm", "gelu"])
def test_prefix_linear_gradients_are_exact(prefix):
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    if prefix == "layernorm":
        mod = nn.LayerNorm(6).double()
        with torch.no_grad():
            mod.weight.normal_()
            mod.bias.normal_()
        extra = (mod.weight, mod.bias)
    else:
        mod, extra = nn.GELU(), ()
    x = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    fn = lambda x, w, b, *p: prefix_linear(mod, x, w, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, lin.weight, lin.bias, *extra))
    assert torch.allclose(prefix_linear(mod, x, lin.weight, lin.bias), lin(mod(x)))


def test_prefix_linear_chunks_match_and_tolerate_unused_outputs():
    torch.manual_seed(0)
    norm, lin = nn.LayerNorm(6).double(), nn.Linear(6, 9).double()
    x = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    q, k, v = prefix_linear(norm, x, lin.weight, lin.bias, chunks=3)
    assert q.is_contiguous() and q.shape == (2, 3, 3)
    assert torch.allclose(torch.cat([q, k, v], -1), lin(norm(x)))

    def first_and_last(x, w, b):
        q, _, v = prefix_linear(norm, x, w, b, chunks=3)
        return q * v

    assert torch.autograd.gradcheck(first_and_last, (x, lin.weight, lin.bias))


def test_block_matches_plain_composition():
    torch.manual_seed(0)
    blk = Block(16, 2).double()
    with torch.no_grad():
        blk.ls1.gamma.uniform_()
        blk.ls2.gamma.uniform_()
    h = torch.randn(2, 5, 16, dtype=torch.double, requires_grad=True)
    a = blk.attn

    def reference(x):
        B, N, D = x.shape
        q, k, v = a.qkv(blk.norm1(x)).view(B, N, 3, 2, 8).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(a.q_norm(q), a.k_norm(k), v)
        x = x + blk.ls1.gamma * a.proj(o.transpose(1, 2).reshape(B, N, D))
        return x + blk.ls2.gamma * blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(x))))

    out = blk(h)
    out.pow(2).sum().backward()
    got = [p.grad.clone() for p in blk.parameters()] + [h.grad.clone()]
    blk.zero_grad()
    h.grad = None
    ref = reference(h)
    ref.pow(2).sum().backward()
    want = [p.grad for p in blk.parameters()] + [h.grad]
    assert torch.allclose(out, ref, atol=1e-12)
    assert all(torch.allclose(g, w, atol=1e-10) for g, w in zip(got, want))


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    a = NeuroBOLT.from_flavor("debug", window_s=4).eval()
    torch.manual_seed(1)
    b = NeuroBOLT.from_flavor("debug", window_s=4).eval()
    x = 20 * torch.randn(1, 26, 800)
    idx = torch.arange(26)
    assert not torch.allclose(a(x, idx), b(x, idx))
    path = a.save_weights(tmp_path / "sub" / "nb.pt", meta={"flavor": "debug"})
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["nb.pt"]
    report = b.load_weights(path)
    assert isinstance(report, LoadReport) and report.ok and str(report) == "all keys matched"
    assert torch.equal(a(x, idx), b(x, idx))


def test_load_reports_keys_by_name(tmp_path):
    torch.manual_seed(0)
    multi = NeuroBOLT.from_flavor("debug", window_s=4, n_rois=8)
    path = multi.save_weights(tmp_path / "multi.pt")
    off = NeuroBOLT.from_flavor("debug", window_s=4, spectral="off", n_rois=3)
    before = {k: v.clone() for k, v in off.state_dict().items()}
    with pytest.raises(ValueError, match=r"unexpected key\(s\): spectral\.") as err:
        off.load_weights(path)
    assert "multi.pt" in str(err.value) and "head.weight: file (8, 50)" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in off.state_dict().items())  # untouched
    report = off.load_weights(path, strict=False)
    assert report.missing == []
    assert "spectral.channel_embed" in report.unexpected
    assert sorted(m.split(":")[0] for m in report.mismatched) == ["head.bias", "head.weight"]
    assert torch.equal(off.encoder.spatial_embed, multi.encoder.spatial_embed)
    assert torch.equal(off.head.weight, before["head.weight"])
    enc = build_encoder("debug")
    report = enc.load_weights(path, strict=False)
    assert "cls_token" in report.missing and "encoder.cls_token" in report.unexpected


def test_load_rejects_bad_files(tmp_path):
    enc = build_encoder("debug")
    with pytest.raises(ValueError, match="does not exist"):
        enc.load_weights(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file .*bad.pt"):
        enc.load_weights(bad)
    torch.save({"state_dict": {"x": 3}}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match="no state dict"):
        enc.load_weights(tmp_path / "odd.pt")
    x, idx = default_eeg(1, seconds=1)
    assert enc(x, idx).shape == (1, enc.dim)
