"""A state dict in the official LaBraM layout and the official forward, for the tests.

Written for brainxl's tests from the layout documented in ``brainxl.models.labram_convert``
(key names, shapes, the time-major token flattening, the 129-row position table): random
tensors with the official key names, and the official computation in plain torch ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def official_state(
    depth: int = 2,
    filters: int = 4,
    heads: int = 2,
    qkv_bias: bool = False,
    prefix: str = "student.",
    vocab: int = 32,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Random official-layout state dict (masked-modeling student with its heads)."""
    gen = torch.Generator().manual_seed(seed)
    dim, hd = filters * 25, filters * 25 // heads

    def r(*shape: int, scale: float = 0.1, offset: float = 0.0) -> Tensor:
        return offset + scale * torch.randn(*shape, generator=gen)

    sd = {
        "cls_token": r(1, 1, dim),
        "mask_token": r(1, 1, dim),
        "pos_embed": r(1, 129, dim),
        "time_embed": r(1, 16, dim),
        "patch_embed.conv1.weight": r(filters, 1, 1, 15, scale=0.3),
        "patch_embed.conv1.bias": r(filters),
    }
    for i in (1, 2, 3):
        if i > 1:
            sd[f"patch_embed.conv{i}.weight"] = r(filters, filters, 1, 3, scale=0.3)
            sd[f"patch_embed.conv{i}.bias"] = r(filters)
        sd[f"patch_embed.norm{i}.weight"] = r(filters, offset=1.0)
        sd[f"patch_embed.norm{i}.bias"] = r(filters)
    for i in range(depth):
        b = f"blocks.{i}."
        sd |= {
            b + "gamma_1": r(dim, offset=0.5),
            b + "gamma_2": r(dim, offset=0.5),
            b + "norm1.weight": r(dim, offset=1.0),
            b + "norm1.bias": r(dim),
            b + "attn.qkv.weight": r(3 * dim, dim),
            b + "attn.q_norm.weight": r(hd, offset=1.0),
            b + "attn.q_norm.bias": r(hd),
            b + "attn.k_norm.weight": r(hd, offset=1.0),
            b + "attn.k_norm.bias": r(hd),
            b + "attn.proj.weight": r(dim, dim),
            b + "attn.proj.bias": r(dim),
            b + "norm2.weight": r(dim, offset=1.0),
            b + "norm2.bias": r(dim),
            b + "mlp.fc1.weight": r(4 * dim, dim),
            b + "mlp.fc1.bias": r(4 * dim),
            b + "mlp.fc2.weight": r(dim, 4 * dim),
            b + "mlp.fc2.bias": r(dim),
        }
        if qkv_bias:
            sd[b + "attn.q_bias"] = r(dim)
            sd[b + "attn.v_bias"] = r(dim)
    sd |= {"norm.weight": r(dim, offset=1.0), "norm.bias": r(dim)}
    sd |= {"lm_head.weight": r(vocab, dim), "lm_head.bias": r(vocab)}
    return {prefix + k: v for k, v in sd.items()}


def official_forward(
    state: dict[str, Tensor], x: Tensor, input_chans: list[int], heads: int, prefix: str
) -> Tensor:
    """Patch tokens of the official encoder (eval mode), shape (B, C * n, D).

    ``x`` (B, C, n, 200) is already scaled (microvolts / 100); ``input_chans`` holds the
    position-table rows, 0 (cls) first.
    """
    s = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    B, C, n, P = x.shape
    h = x.reshape(B, 1, C * n, P)
    for i, (stride, pad) in enumerate(((8, 7), (1, 1), (1, 1)), start=1):
        w, b = s[f"patch_embed.conv{i}.weight"], s[f"patch_embed.conv{i}.bias"]
        h = F.conv2d(h, w, b, stride=(1, stride), padding=(0, pad))
        gw, gb = s[f"patch_embed.norm{i}.weight"], s[f"patch_embed.norm{i}.bias"]
        h = F.gelu(F.group_norm(h, 4, gw, gb))
    tok = h.permute(0, 2, 3, 1).reshape(B, C * n, -1)  # time-major (T, filters) flattening
    D = tok.shape[-1]
    hd = D // heads
    pos = s["pos_embed"][0, input_chans]
    t = torch.cat([s["cls_token"].expand(B, -1, -1), tok], dim=1)
    t = t + torch.cat([pos[:1], pos[1:].repeat_interleave(n, 0)])[None]
    t[:, 1:] = t[:, 1:] + s["time_embed"][0, :n].repeat(C, 1)[None]
    N = t.shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in s if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        y = F.layer_norm(t, (D,), s[b + "norm1.weight"], s[b + "norm1.bias"], 1e-6)
        bias = None
        if b + "attn.q_bias" in s:
            q_b, v_b = s[b + "attn.q_bias"], s[b + "attn.v_bias"]
            bias = torch.cat([q_b, torch.zeros_like(q_b), v_b])
        qkv = F.linear(y, s[b + "attn.qkv.weight"], bias).reshape(B, N, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        q = F.layer_norm(q, (hd,), s[b + "attn.q_norm.weight"], s[b + "attn.q_norm.bias"], 1e-6)
        k = F.layer_norm(k, (hd,), s[b + "attn.k_norm.weight"], s[b + "attn.k_norm.bias"], 1e-6)
        a = ((q * hd**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(B, N, D)
        a = F.linear(a, s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        t = t + s[b + "gamma_1"] * a
        y = F.layer_norm(t, (D,), s[b + "norm2.weight"], s[b + "norm2.bias"], 1e-6)
        m = F.linear(F.gelu(F.linear(y, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])),
                     s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])  # fmt: skip
        t = t + s[b + "gamma_2"] * m
    return F.layer_norm(t, (D,), s["norm.weight"], s["norm.bias"], 1e-6)[:, 1:]
