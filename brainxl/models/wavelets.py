"""Discrete wavelet transforms in torch, equal to ``pywt.wavedec`` / ``pywt.waverec``.

The filter banks come from PyWavelets; the transforms run as strided ``conv1d`` /
``conv_transpose1d`` over all leading dimensions at once (windows, parcels, chunks), so a
multi-level transform costs one convolution per level, with no Python loop over signals.

Two boundary modes are implemented exactly as PyWavelets defines them:

- ``"symmetric"`` (PyWavelets' default): half-sample symmetric extension; a level maps
  ``n`` samples to ``(n + L - 1) // 2`` coefficients (``L`` the filter length).
- ``"periodization"``: periodic extension, ``ceil(n / 2)`` coefficients per level (an odd
  signal is first extended by repeating its last sample, as PyWavelets does).

Coefficients are returned in PyWavelets' order: ``[cA_J, cD_J, cD_{J-1}, ..., cD_1]``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

MODES = ("symmetric", "periodization")


def _filters(wavelet: str) -> tuple[list[float], list[float], list[float], list[float]]:
    import pywt

    try:
        w = pywt.Wavelet(wavelet)
    except ValueError as err:
        raise ValueError(
            f"unknown wavelet {wavelet!r}; use a discrete PyWavelets name such as "
            f"'db5', 'sym4', 'coif1' (pywt.wavelist(kind='discrete'))"
        ) from err
    return list(w.dec_lo), list(w.dec_hi), list(w.rec_lo), list(w.rec_hi)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown wavelet mode {mode!r}; supported: {', '.join(MODES)}")


def coeff_lengths(
    n: int, wavelet: str = "db5", level: int = 3, mode: str = "symmetric"
) -> list[int]:
    """Lengths of ``wavedec`` coefficients ``[cA_J, cD_J, ..., cD_1]`` for ``n`` samples.

    Parameters
    ----------
    n : int
        Signal length.
    wavelet, level, mode
        As :class:`DWT1d`.

    Returns
    -------
    list of int, length ``level + 1``
    """
    _check_mode(mode)
    L = len(_filters(wavelet)[0])
    lengths = []
    for _ in range(level):
        n = (n + L - 1) // 2 if mode == "symmetric" else (n + 1) // 2
        lengths.append(n)
    return [lengths[-1], *lengths[::-1]]


class DWT1d(nn.Module):
    """Multi-level 1-D discrete wavelet transform (``pywt.wavedec`` in torch).

    Parameters
    ----------
    wavelet : str
        PyWavelets discrete wavelet name (default ``"db5"``).
    level : int
        Number of decomposition levels (default 3).
    mode : {"symmetric", "periodization"}
        Boundary extension, as in PyWavelets.

    Notes
    -----
    ``forward(x)`` takes ``x`` of shape ``(..., T)`` and returns the list
    ``[cA_J, cD_J, ..., cD_1]``, each of shape ``(..., n_j)``. The filters are
    non-persistent buffers: they follow ``.to()`` but are not saved in ``state_dict``.
    """

    def __init__(self, wavelet: str = "db5", level: int = 3, mode: str = "symmetric") -> None:
        super().__init__()
        _check_mode(mode)
        if level < 1:
            raise ValueError(f"wavelet level must be >= 1, got {level}")
        dec_lo, dec_hi, _, _ = _filters(wavelet)
        self.wavelet, self.level, self.mode = wavelet, level, mode
        self.filter_len = len(dec_lo)
        # conv1d is a cross-correlation: flip the filters to get a convolution.
        w = torch.tensor([dec_lo[::-1], dec_hi[::-1]], dtype=torch.float32).unsqueeze(1)
        self.register_buffer("weight", w, persistent=False)  # (2, 1, L)

    def _extend(self, x: Tensor) -> Tensor:
        n, L = x.shape[-1], self.filter_len
        if self.mode == "symmetric":
            i = torch.arange(-(L - 1), n + L - 1, device=x.device)
            m = torch.remainder(i, 2 * n)
            idx = torch.where(m < n, m, 2 * n - 1 - m)
            return x[..., idx[1:]]  # full-convolution outputs at odd positions
        if n % 2:
            x = torch.cat([x, x[..., -1:]], dim=-1)
            n += 1
        idx = torch.remainder(torch.arange(n + L - 2, device=x.device) - (L - 1) + L // 2, n)
        return x[..., idx]

    def step(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One level: ``x (R, T)`` -> ``(cA, cD)`` each ``(R, n)``."""
        y = F.conv1d(self._extend(x).unsqueeze(1), self.weight.to(x.dtype), stride=2)
        return y[:, 0], y[:, 1]

    def forward(self, x: Tensor) -> list[Tensor]:
        lead, T = x.shape[:-1], x.shape[-1]
        a = x.reshape(-1, T)
        details = []
        for _ in range(self.level):
            a, d = self.step(a)
            details.append(d)
        out = [a, *details[::-1]]
        return [c.reshape(*lead, c.shape[-1]) for c in out]


class IDWT1d(nn.Module):
    """Multi-level inverse DWT (``pywt.waverec`` in torch).

    Parameters
    ----------
    wavelet, mode
        As :class:`DWT1d` (use the same values as the forward transform).

    Notes
    -----
    ``forward(coeffs)`` takes ``[cA_J, cD_J, ..., cD_1]`` (each ``(..., n_j)``) and returns
    the signal ``(..., T)``. As in PyWavelets, an approximation one sample longer than the
    next detail is trimmed, and the output length may exceed the original by one sample
    for odd lengths (trim to the known length).
    """

    def __init__(self, wavelet: str = "db5", mode: str = "symmetric") -> None:
        super().__init__()
        _check_mode(mode)
        _, _, rec_lo, rec_hi = _filters(wavelet)
        self.wavelet, self.mode = wavelet, mode
        self.filter_len = len(rec_lo)
        w = torch.tensor([rec_lo, rec_hi], dtype=torch.float32).unsqueeze(1)
        self.register_buffer("weight", w, persistent=False)  # (2, 1, L)

    def step(self, a: Tensor, d: Tensor) -> Tensor:
        """One level: ``cA, cD (R, n)`` -> ``(R, n_out)``."""
        L, n = self.filter_len, a.shape[-1]
        ad = torch.stack([a, d], dim=1)  # (R, 2, n)
        w = self.weight.to(a.dtype)
        if self.mode == "symmetric":
            full = F.conv_transpose1d(ad, w, stride=2)[:, 0]  # (R, 2n + L - 2)
            return full[:, L - 2 : 2 * n]
        p = L // 2
        idx = torch.remainder(torch.arange(-p, n + p, device=a.device), n)
        full = F.conv_transpose1d(ad[..., idx], w, stride=2)[:, 0]
        start = L // 2 - 1 + 2 * p
        return full[:, start : start + 2 * n]

    def forward(self, coeffs: list[Tensor]) -> Tensor:
        if len(coeffs) < 2:
            raise ValueError("IDWT1d needs [cA_J, cD_J, ..., cD_1] (at least two arrays)")
        lead = coeffs[0].shape[:-1]
        a = coeffs[0].reshape(-1, coeffs[0].shape[-1])
        for d in coeffs[1:]:
            d = d.reshape(-1, d.shape[-1])
            if a.shape[-1] == d.shape[-1] + 1:
                a = a[:, :-1]
            elif a.shape[-1] != d.shape[-1]:
                raise ValueError(
                    f"wavelet coefficient lengths do not match: approximation "
                    f"{a.shape[-1]} vs detail {d.shape[-1]}"
                )
            a = self.step(a, d)
        return a.reshape(*lead, a.shape[-1])


def dwt_matrix(n: int, wavelet: str = "db5", level: int = 3, mode: str = "symmetric") -> Tensor:
    """The whole multi-level DWT of an ``n``-sample signal as one matrix.

    For short fixed-length chunks (one TR) a single matmul ``x @ W.T`` is much faster on
    CPU than ``level`` single-channel strided convolutions, and exactly the same map.

    Returns
    -------
    Tensor, shape (sum(coeff_lengths), n), float32
        Rows ordered as the concatenation of ``[cA_J, cD_J, ..., cD_1]``.
    """
    eye = torch.eye(n, dtype=torch.float64)
    coeffs = DWT1d(wavelet, level, mode).double()(eye)  # each (n, n_j)
    return torch.cat(coeffs, dim=-1).T.contiguous().float()


def idwt_matrix(n: int, wavelet: str = "db5", level: int = 3, mode: str = "symmetric") -> Tensor:
    """The multi-level inverse DWT back to ``n`` samples as one matrix.

    Returns
    -------
    Tensor, shape (n, sum(coeff_lengths)), float32
        ``x = W @ concat(coeffs)`` (the reconstruction trimmed to ``n`` samples).
    """
    lengths = coeff_lengths(n, wavelet, level, mode)
    total = sum(lengths)
    eye = torch.eye(total, dtype=torch.float64)
    bands = list(torch.split(eye, lengths, dim=-1))
    rec = IDWT1d(wavelet, mode).double()(bands)[..., :n]  # (total, n)
    return rec.T.contiguous().float()
