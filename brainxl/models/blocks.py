"""Shared transformer building blocks and the weights save/load mixin.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (fused,
memory-efficient kernels on CPU and GPU), so no ``(N, N)`` attention matrix is kept for
the backward pass. Other models (SAMBA) import from here: keep the names stable.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "LayerScale",
    "LoadReport",
    "Mlp",
    "TemporalConvPatchEmbed",
    "WeightsMixin",
    "gathered_for_init",
    "init_transformer_weights",
    "MaskedGroupNorm",
    "prefix_linear",
    "sinusoidal_positions",
]


class _PrefixLinear(torch.autograd.Function):
    """``linear(fn(x, *params), weight, bias)`` saving ``x`` instead of ``fn(x)``.

    ``fn`` is cheap and elementwise-like (LayerNorm, GELU): the backward pass recomputes
    it, so the (often 4x wider) intermediate is never kept between forward and backward.
    With ``chunks > 1`` the output features are returned as that many separate contiguous
    tensors (e.g. q, k, v), avoiding strided slices that later ops would copy.
    """

    @staticmethod
    def forward(ctx, fn, chunks, x, weight, bias, *params):  # type: ignore[override]
        with torch.no_grad():
            a = fn(x, *params)
        ctx.fn, ctx.chunks = fn, chunks
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, *params)
        if chunks == 1:
            return F.linear(a, weight, bias)
        bs = bias.chunk(chunks) if bias is not None else [None] * chunks
        return tuple(F.linear(a, w, b) for w, b in zip(weight.chunk(chunks), bs))

    @staticmethod
    def backward(ctx, *grad_outs):  # type: ignore[override]
        x, weight, *params = ctx.saved_tensors
        need_x = ctx.needs_input_grad[2]
        need_p = list(ctx.needs_input_grad[5:])
        with torch.enable_grad():
            xd = x.detach().requires_grad_(need_x)
            pd = [p.detach().requires_grad_(n) for p, n in zip(params, need_p)]
            a = ctx.fn(xd, *pd)
        ref = next(g for g in grad_outs if g is not None)
        dt = ref.dtype
        gos = [g if g is not None else torch.zeros_like(ref) for g in grad_outs]
        go = gos[0] if len(gos) == 1 else torch.cat(gos, dim=-1)
        go2 = go.reshape(-1, go.shape[-1])
        grad_w = grad_b = None
        if ctx.needs_input_grad[3]:
            grad_w = (go2.t() @ a.detach().reshape(-1, a.shape[-1]).to(dt)).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b = go2.sum(0).to(weight.dtype)
        grad_x, grad_p = None, [None] * len(params)
        wanted = ([xd] if need_x else []) + [t for t, n in zip(pd, need_p) if n]
        if wanted:
            grad_a = (go @ weight.to(dt)).to(a.dtype)
            got = list(torch.autograd.grad(a, wanted, grad_a))
            grad_x = got.pop(0) if need_x else None
            grad_p = [got.pop(0) if n else None for n in need_p]
        return (None, None, grad_x, grad_w, grad_b, *grad_p)


def _layer_norm_fn(norm: nn.LayerNorm):
    shape, eps = norm.normalized_shape, norm.eps
    return lambda x, w, b: F.layer_norm(x, shape, w, b, eps)


def prefix_linear(
    prefix: nn.Module | None,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    chunks: int = 1,
) -> Tensor | tuple[Tensor, ...]:
    """Memory-lean ``F.linear(prefix(x), weight, bias)`` for ``prefix`` in {LayerNorm, GELU}.

    While gradients are recorded, ``prefix(x)`` is recomputed in the backward pass
    instead of being stored (it is cheap; the saved activation is not). Otherwise, and
    for other prefixes, it is the plain composition.

    Parameters
    ----------
    prefix : nn.LayerNorm, nn.GELU or None
    x : Tensor, shape (..., in_features)
    weight : Tensor, shape (out_features, in_features)
    bias : Tensor or None, shape (out_features,)
    chunks : int
        Split the output features into this many contiguous tensors.

    Returns
    -------
    Tensor, shape (..., out_features), or a tuple of ``chunks`` tensors
    (..., out_features // chunks)
    """
    fused = torch.is_grad_enabled() and (
        (isinstance(prefix, nn.LayerNorm) and prefix.elementwise_affine)
        or (isinstance(prefix, nn.GELU) and prefix.approximate == "none")
    )
    if fused:
        if isinstance(prefix, nn.LayerNorm):
            return _PrefixLinear.apply(_layer_norm_fn(prefix), chunks, x, weight, bias,
                                       prefix.weight, prefix.bias)  # fmt: skip
        return _PrefixLinear.apply(F.gelu, chunks, x, weight, bias)
    a = x if prefix is None else prefix(x)
    if chunks == 1:
        return F.linear(a, weight, bias)
    bs = bias.chunk(chunks) if bias is not None else [None] * chunks
    return tuple(F.linear(a, w, b) for w, b in zip(weight.chunk(chunks), bs))


def _scaled(linear: nn.Linear, scale: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Weight and bias of ``linear`` with the output multiplied by ``scale`` (layer-scale).

    Folding the scale into the weights avoids storing the unscaled output for the
    gradient of ``scale``.
    """
    if scale is None:
        return linear.weight, linear.bias
    bias = linear.bias * scale if linear.bias is not None else None
    return linear.weight * scale[:, None], bias


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop-path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def residual(self, x: Tensor, branch: Tensor) -> Tensor:
        """``x + self(branch)`` in one pass (``addcmul``) when dropping is active."""
        if self.p == 0.0 or not self.training:
            return x + branch
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return torch.addcmul(x, branch, x.new_empty(shape).bernoulli_(keep).div_(keep))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (CaiT / BEiT ``gamma``)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Two-layer feed-forward network ``Linear -> GELU -> Linear``.

    Parameters
    ----------
    dim : int
        Input and output width.
    hidden : int
        Hidden width.
    drop : float
        Dropout after each linear layer.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(
        self, x: Tensor, pre_norm: nn.Module | None = None, out_scale: Tensor | None = None
    ) -> Tensor:
        """Apply ``fc2(GELU(fc1(pre_norm(x)))) * out_scale``.

        Parameters
        ----------
        x : Tensor, shape (..., dim)
        pre_norm : nn.LayerNorm or None
            Norm applied first (recomputed in backward rather than stored).
        out_scale : Tensor or None, shape (dim,)
            Layer-scale folded into ``fc2``.

        Returns
        -------
        Tensor, shape (..., dim)
        """
        h = prefix_linear(pre_norm, x, self.fc1.weight, self.fc1.bias)
        w2, b2 = _scaled(self.fc2, out_scale)
        if self.drop.p and self.training:
            return self.drop(F.linear(self.drop(self.act(h)), w2, b2))
        return prefix_linear(self.act, h, w2, b2)


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head q/k layer norm.

    Parameters
    ----------
    dim : int
        Token width; must be divisible by ``heads``.
    heads : int
        Number of attention heads.
    qkv_bias : bool
        Bias on the fused q/k/v projection.
    qk_norm : bool
        LayerNorm over each head's queries and keys (LaBraM), stabilising large models.
    attn_drop, proj_drop : float
        Dropout on the attention weights and on the output projection.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        pre_norm: nn.Module | None = None,
        out_scale: Tensor | None = None,
    ) -> Tensor:
        """Attend over tokens.

        Parameters
        ----------
        x : Tensor, shape (B, N, D)
        attn_mask : Tensor or None, shape broadcastable to (B, heads, N, N)
            Boolean (True = may attend) or additive float mask.
        pre_norm : nn.LayerNorm or None
            Norm applied to ``x`` first (recomputed in backward rather than stored).
        out_scale : Tensor or None, shape (D,)
            Layer-scale folded into the output projection.

        Returns
        -------
        Tensor, shape (B, N, D)
        """
        B, N, D = x.shape
        # separate contiguous q, k, v: the per-head norms then run without copies
        q, k, v = (
            t.view(B, N, self.heads, self.head_dim)
            for t in prefix_linear(pre_norm, x, self.qkv.weight, self.qkv.bias, chunks=3)
        )
        q, k, v = (t.transpose(1, 2) for t in (self.q_norm(q), self.k_norm(k), v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        w, b = _scaled(self.proj, out_scale)
        return self.proj_drop(F.linear(y.transpose(1, 2).reshape(B, N, D), w, b))


class Block(nn.Module):
    """Pre-norm transformer block with layer-scale and drop-path (BEiT / LaBraM).

    Parameters
    ----------
    dim, heads : int
        Width and number of heads.
    mlp_ratio : float
        Hidden width of the MLP relative to ``dim``.
    qkv_bias, qk_norm : bool
        See :class:`Attention`.
    drop, attn_drop : float
        Dropout rates.
    drop_path : float
        Stochastic-depth probability of this block.
    init_values : float or None
        Layer-scale initial value; None disables layer-scale.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_norm: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = 0.1,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias, qk_norm, attn_drop, drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """Apply the block; ``x`` has shape (B, N, D) and so has the result."""
        x = self.drop_path.residual(x, self.attn(x, attn_mask, self.norm1, _gamma(self.ls1)))
        return self.drop_path.residual(x, self.mlp(x, self.norm2, _gamma(self.ls2)))


def _gamma(ls: nn.Module) -> Tensor | None:
    return ls.gamma if isinstance(ls, LayerScale) else None


class TemporalConvPatchEmbed(nn.Module):
    """LaBraM's temporal convolution: one token per (channel, patch) of raw EEG.

    Three conv blocks act on every patch independently (1 -> ``filters`` channels, kernel
    15 stride 8, then two kernel-3 convs, each followed by GroupNorm and GELU); the
    ``filters x patch_size // 8`` outputs are flattened into the token.

    Parameters
    ----------
    patch_size : int
        Samples per patch (200 = 1 s at 200 Hz).
    filters : int
        Conv filters; the token width is ``filters * out_len`` (``out_len`` = 25 for 200).
    """

    def __init__(self, patch_size: int = 200, filters: int = 8) -> None:
        super().__init__()
        groups = 4 if filters % 4 == 0 else 1
        self.conv1 = nn.Conv2d(1, filters, (1, 15), (1, 8), (0, 7))
        self.norm1 = MaskedGroupNorm(groups, filters)
        self.conv2 = nn.Conv2d(filters, filters, (1, 3), padding=(0, 1))
        self.norm2 = MaskedGroupNorm(groups, filters)
        self.conv3 = nn.Conv2d(filters, filters, (1, 3), padding=(0, 1))
        self.norm3 = MaskedGroupNorm(groups, filters)
        self.act = nn.GELU()
        self.out_len = (patch_size + 2 * 7 - 15) // 8 + 1
        self.dim = filters * self.out_len

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Embed patches.

        Parameters
        ----------
        x : Tensor, shape (B, L, patch_size)
            ``L`` patches (all channels and positions flattened).
        valid : BoolTensor or None, shape (B, L)
            Patches that are data (False = padding). The group norms pool their
            statistics over a sample's patches; with ``valid`` only over the valid ones,
            so a padded sample's valid tokens equal those of the sample alone.

        Returns
        -------
        Tensor, shape (B, L, dim)
        """
        return self._embed(x, valid, None)[0]

    def forward_with_power(
        self, x: Tensor, valid: Tensor | None = None, floor: float = 1e-10
    ) -> tuple[Tensor, Tensor]:
        """Embed patches and return each first-conv filter's log power per patch.

        The group norms pool over the whole sample, so the tokens keep how patches and
        channels differ within a sample but not the sample's overall level in any band;
        the log variance of each filter's output over the patch keeps it (a learned band
        power per filter).

        Returns
        -------
        tokens : Tensor, shape (B, L, dim)
        log_power : Tensor, shape (B, L, filters), float32
            ``log(var + floor)`` of each filter's output over the patch's samples.
        """
        tokens, log_power = self._embed(x, valid, floor)
        assert log_power is not None
        return tokens, log_power

    def _embed(
        self, x: Tensor, valid: Tensor | None, floor: float | None
    ) -> tuple[Tensor, Tensor | None]:
        """Tokens, and the filters' log power when ``floor`` is given (None: not computed)."""
        B, L, _ = x.shape
        x = x.unsqueeze(1)  # (B, 1, L, P): Conv2d with kernel height 1 = per-patch conv1d
        keep = None if valid is None else valid.to(x.dtype)[:, None, :, None]  # (B, 1, L, 1)
        if keep is not None:
            x = x * keep
        first = self.conv1(x)  # (B, F, L, out_len)
        log_power = None
        if floor is not None:
            power = first.float().var(dim=-1, unbiased=False)
            log_power = torch.log(power + floor).transpose(1, 2)
        # the same modules run with and without padding (ZeRO-3 needs one call order
        # on every rank, whichever batches they get)
        x = self.act(self.norm1(first, keep))
        for conv, norm in ((self.conv2, self.norm2), (self.conv3, self.norm3)):
            x = self.act(norm(conv(x if keep is None else x * keep), keep))
        if keep is not None:
            x = x * keep
        return x.permute(0, 2, 1, 3).reshape(B, L, self.dim), log_power


class MaskedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics can leave out padding positions.

    ``forward(x, keep)`` with ``keep`` (B, 1, L, 1), 1 where a position counts and 0 for
    padding, normalises ``x`` (B, F, L, T) with each group's mean and variance over the
    kept positions only; without ``keep`` it is ``nn.GroupNorm``. Same parameters and
    state-dict keys as ``nn.GroupNorm``.
    """

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:  # noqa: D102
        if keep is None:
            return super().forward(x)
        B, Fc, L, T = x.shape
        G = self.num_groups
        xg = x.reshape(B, G, Fc // G, L, T)
        w = keep.reshape(B, 1, 1, L, 1)
        count = w.sum(dim=(2, 3, 4), keepdim=True) * (Fc // G) * T
        mean = (xg * w).sum(dim=(2, 3, 4), keepdim=True) / count
        var = ((xg - mean).square() * w).sum(dim=(2, 3, 4), keepdim=True) / count
        out = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(B, Fc, L, T)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def sinusoidal_positions(n: int, dim: int) -> Tensor:
    """Fixed sine/cosine position table.

    Returns
    -------
    Tensor, shape (n, dim), float32
    """
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


def gathered_for_init(module: nn.Module) -> contextlib.AbstractContextManager:
    """Context in which the parameters of ``module`` can be initialised in place.

    Under DeepSpeed's ``zero.Init`` (ZeRO-3 pretraining) a child module's parameters are
    partitioned as soon as its constructor returns, so a parent that initialises its
    children afterwards would write into empty partitions. This gathers them and, on exit,
    re-partitions rank 0's values (``deepspeed.zero.GatheredParameters``); a no-op for
    ordinary parameters and when DeepSpeed was never imported.
    """
    if "deepspeed" not in sys.modules:  # nothing can be partitioned
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0)


def init_transformer_weights(module: nn.Module, std: float = 0.02) -> None:
    """BEiT/LaBraM initialisation: truncated-normal linears, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass
class LoadReport:
    """Result of :meth:`WeightsMixin.load_weights`.

    Attributes
    ----------
    missing : list of str
        Keys of the model that the file did not provide.
    unexpected : list of str
        Keys in the file that the model does not have.
    mismatched : list of str
        Keys present in both with different shapes (never loaded), as
        ``"key: file (a, b) vs model (c, d)"``.
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every key matched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape-mismatched", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else "")
                parts.append(f"{len(keys)} {label} key(s): {shown}")
        return "; ".join(parts) if parts else "all keys matched"


class WeightsMixin:
    """``save_weights`` / ``load_weights`` for any ``nn.Module`` (mix in first)."""

    def save_weights(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write the state dict to ``path`` atomically (a crash never leaves half a file).

        Parameters
        ----------
        path : str or PathLike
            Target file (``.pt``); parent folders are created.
        meta : dict, optional
            Extra JSON-like information stored next to the weights.

        Returns
        -------
        Path
            The written file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "brainxl-weights-v1",
            "class": type(self).__name__,
            "meta": dict(meta or {}),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load_weights(self, path: str | os.PathLike, strict: bool = True) -> LoadReport:
        """Load weights written by :meth:`save_weights` (or a bare state dict).

        Parameters
        ----------
        path : str or PathLike
            Weights file.
        strict : bool
            If True, any missing, unexpected or shape-mismatched key raises before the
            model is changed. If False, matching keys are loaded and the rest reported.

        Returns
        -------
        LoadReport
            The missing / unexpected / mismatched keys by name.

        Raises
        ------
        ValueError
            If the file is unreadable, or ``strict`` and the keys do not match.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"weights file {path} does not exist; check the path")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
            raise ValueError(
                f"cannot read weights file {path}: {err}. Re-save it with save_weights()."
            ) from err
        state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
            raise ValueError(
                f"{path} holds no state dict of tensors; re-save it with save_weights()"
            )
        own = self.state_dict()  # type: ignore[attr-defined]
        report = LoadReport(
            missing=sorted(set(own) - set(state)),
            unexpected=sorted(set(state) - set(own)),
            mismatched=[
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in sorted(set(own) & set(state))
                if state[k].shape != own[k].shape
            ],
        )
        if strict and not report.ok:
            raise ValueError(
                f"weights in {path} do not match {type(self).__name__}: {report}. "
                "Use the flavor/options the file was saved with, or load_weights(strict=False)."
            )
        bad = {m.split(":")[0] for m in report.mismatched}
        loadable = {k: v for k, v in state.items() if k in own and k not in bad}
        self.load_state_dict(loadable, strict=False)  # type: ignore[attr-defined]
        return report
