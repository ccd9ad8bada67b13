"""NeuroBOLT's multi-scale spectral module: STFT magnitudes of every channel at once.

For each scale (window of ``s`` seconds, hop = window, rectangular, no centring) the
magnitude spectrogram of all channels is taken in one ``unfold + rfft``; a linear map over
frequency (bins -> ``dim``) and one over frames (frames -> ``n_tokens``) embed it, the
scales are summed, a learned per-channel embedding (by vocabulary row) and sinusoidal
positions are added, and a linear-attention transformer encodes the ``C x n_tokens``
tokens. The output is their mean, shape (B, dim), or with :meth:`forward_tokens` the
tokens themselves, per channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch import Tensor

from brainxl.models.blocks import (
    DropPath,
    Mlp,
    init_transformer_weights,
    prefix_linear,
    sinusoidal_positions,
)


class LinearAttention(nn.Module):
    """Efficient attention (Shen et al. 2021): softmax over features of q, over tokens of k.

    Cost is linear in the number of tokens: ``O(N * D * D / heads)``.

    Parameters
    ----------
    dim, heads : int
        Width and heads (``dim % heads == 0``).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, pre_norm: nn.Module | None = None) -> Tensor:
        """``x`` (B, N, D) -> (B, N, D); ``pre_norm`` is applied first."""
        B, N, D = x.shape
        q, k, v = (
            t.view(B, N, self.heads, D // self.heads).transpose(1, 2)
            for t in prefix_linear(pre_norm, x, self.qkv.weight, None, chunks=3)
        )
        q, k = q.softmax(dim=-1), k.softmax(dim=-2)
        # the 1/sqrt(d) scale goes on the small (d, d) context: no scaled copy of q is stored
        context = (k.transpose(-2, -1) @ v) * (D // self.heads) ** -0.5  # (B, h, d, d)
        y = q @ context  # (B, h, N, d)
        return self.proj(y.transpose(1, 2).reshape(B, N, D))


class LinearBlock(nn.Module):
    """Pre-norm block with :class:`LinearAttention` and an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, N, D) -> (B, N, D)."""
        x = self.drop_path.residual(x, self.attn(x, self.norm1))
        return self.drop_path.residual(x, self.mlp(x, self.norm2))


class MultiScaleSpectral(nn.Module):
    """Multi-scale STFT embedding + linear-attention encoder over all channels at once.

    Parameters
    ----------
    n_samples : int
        Window length in samples (fixed: the frame maps depend on it).
    scales : sequence of float
        STFT window lengths in seconds (e.g. ``(0.5, 1, 2, 4)``).
    sfreq : float
        Sampling rate (Hz).
    dim : int
        Token width.
    n_tokens : int
        Tokens per channel after the frame map.
    depth, heads : int
        Linear-attention transformer size.
    n_spatial : int
        Rows of the per-channel embedding (indexed by vocabulary row + 1).
    """

    def __init__(
        self,
        n_samples: int,
        scales: Sequence[float] = (0.5, 1.0, 2.0, 4.0),
        sfreq: float = 200.0,
        dim: int = 200,
        n_tokens: int = 32,
        depth: int = 4,
        heads: int = 8,
        n_spatial: int = 768,
    ) -> None:
        super().__init__()
        if not scales:
            raise ValueError("the spectral module needs at least one STFT scale")
        self.n_samples = n_samples
        self.n_ffts: list[int] = []
        freq_maps, frame_maps = [], []
        for s in scales:
            n_fft = int(round(s * sfreq))
            frames = n_samples // n_fft if n_fft > 0 else 0
            if frames < 1:
                raise ValueError(
                    f"STFT scale {s} s ({n_fft} samples) does not fit the {n_samples}-sample "
                    "window; use scales shorter than the window"
                )
            self.n_ffts.append(n_fft)
            freq_maps.append(nn.Linear(n_fft // 2 + 1, dim))
            frame_maps.append(nn.Linear(frames, n_tokens))
        self.freq_maps = nn.ModuleList(freq_maps)
        self.frame_maps = nn.ModuleList(frame_maps)
        self.channel_embed = nn.Parameter(torch.zeros(n_spatial, dim))
        self.register_buffer("positions", sinusoidal_positions(n_tokens, dim), persistent=False)
        self.blocks = nn.ModuleList(LinearBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        if not self.channel_embed.is_meta:
            init_transformer_weights(self)
            nn.init.trunc_normal_(self.channel_embed, std=0.02, a=-0.04, b=0.04)

    def spectrogram(self, x: Tensor, n_fft: int) -> Tensor:
        """Magnitude STFT of every channel (rectangular window, hop = ``n_fft``).

        Parameters
        ----------
        x : Tensor, shape (B, C, T)

        Returns
        -------
        Tensor, shape (B, C, T // n_fft, n_fft // 2 + 1)
        """
        frames = x.unfold(-1, n_fft, n_fft)
        return torch.fft.rfft(frames.float(), dim=-1).abs()

    def forward(self, x: Tensor, ch_idx: Tensor) -> Tensor:
        """Mean of :meth:`forward_tokens` over channels and tokens, shape (B, dim)."""
        return self.forward_tokens(x, ch_idx).mean(dim=(1, 2))

    def forward_tokens(self, x: Tensor, ch_idx: Tensor) -> Tensor:
        """Encode into final-normed tokens, kept per channel.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
            Scaled EEG, ``T == n_samples``.
        ch_idx : LongTensor, shape (C,)

        Returns
        -------
        Tensor, shape (B, C, n_tokens, dim)
        """
        B, C, T = x.shape
        if self.n_samples != T:
            raise ValueError(
                f"spectral module built for {self.n_samples} samples got {T}; build the "
                "model with the window length of the data"
            )
        h = None
        for n_fft, fmap, tmap in zip(self.n_ffts, self.freq_maps, self.frame_maps):
            spec = fmap(self.spectrogram(x, n_fft))  # (B, C, frames, D)
            tok = tmap(spec.transpose(-1, -2)).transpose(-1, -2)  # (B, C, n_tokens, D)
            h = tok if h is None else h + tok
        h = h + self.channel_embed[ch_idx.long() + 1][:, None, :] + self.positions
        n_tokens, dim = h.shape[-2:]
        h = h.reshape(B, -1, dim)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h).reshape(B, C, n_tokens, dim)
