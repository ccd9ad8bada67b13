"""Per-parcel learnable double-gamma haemodynamic response, applied by FFT convolution.

Every parcel has its own six parameters (``delay1``, ``delay2``, ``dispersion1``,
``dispersion2``, ``scale1``, ``scale2``), stored unconstrained in one ``(P, 6)``
parameter and mapped into their bounds with a sigmoid. The kernel is the Glover form

    h(t) = scale1 * g(t; delay1, dispersion1) - scale2 * g(t; delay2, dispersion2),
    g(t; d, b) = (t / d) ** (d / b) * exp(-(t - d) / b),

so each gamma bump peaks (at value 1) exactly at its delay; ``h`` is then normalised to
unit L1 norm (``sum |h| = 1``), which keeps its scale fixed while its shape learns.

The convolution is causal: ``y[t] = sum_{k=0..t} h[k] x[t-k]`` (taps applied forward in
time, zero history before the window), computed for all parcels at once with a
zero-padded ``rfft`` of length ``>= T + L - 1`` so nothing wraps around.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor

PARAM_NAMES = ("delay1", "delay2", "dispersion1", "dispersion2", "scale1", "scale2")
# (low, high) bounds in seconds / arbitrary units; the sigmoid maps into them.
BOUNDS = {
    "delay1": (2.0, 10.0),
    "delay2": (6.0, 24.0),
    "dispersion1": (0.3, 2.0),
    "dispersion2": (0.3, 2.0),
    "scale1": (0.1, 2.0),
    "scale2": (0.0, 1.0),
}


def fast_fft_len(n: int) -> int:
    """Smallest ``m >= n`` whose only prime factors are 2, 3 and 5 (fast for pocketfft/cuFFT)."""
    m = max(n, 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def causal_fft_conv(x: Tensor, kernel: Tensor) -> Tensor:
    """Causal linear convolution of each row of ``x`` with its own kernel.

    Parameters
    ----------
    x : Tensor, shape (..., P, T)
    kernel : Tensor, shape (P, L)

    Returns
    -------
    Tensor, shape (..., P, T)
        ``y[..., p, t] = sum_{k=0}^{min(t, L-1)} kernel[p, k] * x[..., p, t-k]``.
    """
    T = x.shape[-1]
    kernel = kernel[:, :T]  # taps beyond the window never reach an output sample
    n = fast_fft_len(T + kernel.shape[-1] - 1)
    work = _fft_dtype(x.dtype)  # rfft has no half/bfloat16 kernels on CPU
    xf = torch.fft.rfft(x.to(work), n=n)
    hf = torch.fft.rfft(kernel.to(work), n=n)
    return torch.fft.irfft(xf * hf, n=n)[..., :T].to(x.dtype)


def _fft_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class DoubleGammaHRF(nn.Module):
    """Learnable double-gamma HRF, one per parcel, applied causally by FFT.

    Parameters
    ----------
    n_parcels : int
        Number of parcels ``P`` (each gets its own six parameters).
    sfreq : float
        Sampling rate of the signals it convolves, in Hz.
    length_s : float
        Kernel length in seconds (default 30 s, i.e. ``L = length_s * sfreq`` taps).
    peak_s : float
        Initial ``delay1`` (the response peak, default 6 s).
    undershoot_s : float
        Initial ``delay2`` (default 12 s).
    dispersion : tuple of float
        Initial ``(dispersion1, dispersion2)`` (default 0.9 s each, as Glover 1999).
    scales : tuple of float
        Initial ``(scale1, scale2)`` (default 1.0, 0.35).
    offset_s : float
        Time of tap 0 in seconds (default 0). A kernel applied to block averages (one
        value per ``1 / sfreq`` seconds, ending at the output time) has its taps at
        ``(l + 0.5) / sfreq``: pass ``offset_s = 0.5 / sfreq`` there.
    """

    def __init__(
        self,
        n_parcels: int,
        sfreq: float,
        length_s: float = 30.0,
        peak_s: float = 6.0,
        undershoot_s: float = 12.0,
        dispersion: tuple[float, float] = (0.9, 0.9),
        scales: tuple[float, float] = (1.0, 0.35),
        offset_s: float = 0.0,
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        if n_parcels < 1 or sfreq <= 0 or length_s <= 0:
            raise ValueError(
                f"DoubleGammaHRF needs n_parcels >= 1, sfreq > 0, length_s > 0; got "
                f"{n_parcels}, {sfreq}, {length_s}"
            )
        if gain <= 0:
            raise ValueError(f"DoubleGammaHRF gain must be > 0, got {gain}")
        self.n_parcels, self.sfreq, self.offset_s = n_parcels, float(sfreq), float(offset_s)
        self.gain = float(gain)
        self.n_taps = max(2, int(round(length_s * sfreq)))
        init = dict(zip(PARAM_NAMES, (peak_s, undershoot_s, *dispersion, *scales), strict=True))
        raw = []
        for name in PARAM_NAMES:
            lo, hi = BOUNDS[name]
            if not lo < init[name] < hi:
                raise ValueError(f"HRF initial {name}={init[name]} outside its bounds ({lo}, {hi})")
            u = (init[name] - lo) / (hi - lo)
            raw.append(math.log(u / (1 - u)) / self.gain)
        self.raw = nn.Parameter(torch.tensor(raw).repeat(n_parcels, 1))  # (P, 6)
        lo = torch.tensor([BOUNDS[k][0] for k in PARAM_NAMES])
        hi = torch.tensor([BOUNDS[k][1] for k in PARAM_NAMES])
        self.register_buffer("lo", lo, persistent=False)
        self.register_buffer("hi", hi, persistent=False)

    def params(self) -> dict[str, Tensor]:
        """Bounded parameters, each of shape ``(P,)``."""
        # float32 whatever the module dtype (bf16 would quantise delays and times)
        lo, hi = self.lo.float(), self.hi.float()
        v = lo + (hi - lo) * torch.sigmoid(self.gain * self.raw.float())
        return {name: v[:, i] for i, name in enumerate(PARAM_NAMES)}

    def kernel(self) -> Tensor:
        """The normalised kernels, shape ``(P, L)``, unit L1 norm per parcel."""
        t = torch.arange(self.n_taps, device=self.raw.device, dtype=torch.float32) / self.sfreq
        h = self._shape(t + self.offset_s)
        return h / h.abs().sum(-1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def curves(self, dt: float = 0.1, length_s: float | None = None) -> Tensor:
        """The kernels on a fine grid ``t = 0, dt, 2 dt, ...`` seconds, unit peak.

        Parameters
        ----------
        dt : float
            Grid step (s), independent of the rate the kernel is applied at.
        length_s : float, optional
            Grid length (default: the kernel's length).

        Returns
        -------
        Tensor, shape (P, n), float32
            Each row divided by its maximum absolute value.
        """
        length = self.n_taps / self.sfreq if length_s is None else float(length_s)
        t = torch.arange(int(round(length / dt)), device=self.raw.device, dtype=torch.float32)
        h = self._shape(t * dt)
        return h / h.abs().amax(-1, keepdim=True).clamp_min(1e-12)

    def _shape(self, t: Tensor) -> Tensor:
        """Unnormalised double gamma of every parcel at times ``t`` (s), shape ``(P, n)``."""
        p = self.params()
        t = t.clamp_min(1e-6)[None, :]  # log(0) would give NaN gradients

        def bump(d: Tensor, b: Tensor) -> Tensor:
            d, b = d[:, None], b[:, None]
            return torch.exp((d / b) * (torch.log(t) - torch.log(d)) - (t - d) / b)

        h = p["scale1"][:, None] * bump(p["delay1"], p["dispersion1"])
        return h - p["scale2"][:, None] * bump(p["delay2"], p["dispersion2"])

    def _check(self, x: Tensor) -> None:
        if x.dim() < 2 or x.shape[-2] != self.n_parcels:
            raise ValueError(
                f"HRF input must be (..., {self.n_parcels} parcels, T); got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, history: int = 0) -> Tensor:
        """Causal convolution ``(B, P, T) -> (B, P, T)`` (see :func:`causal_fft_conv`).

        Parameters
        ----------
        x : Tensor, shape (..., P, T)
        history : int
            ``0``: nothing before ``x`` (zero history). ``n > 0``: the signal before ``x``
            is taken to have stood at the mean of its first ``n`` samples (a steady state),
            so a constant input gives a constant output from the first sample on, instead
            of a ramp that lasts the kernel's length. Output ``t`` still reads no input
            after ``max(t, n - 1)``.
        """
        self._check(x)
        kernel = self.kernel()
        y = causal_fft_conv(x, kernel)
        if history <= 0:
            return y
        T = x.shape[-1]
        # taps that reach before sample 0 at output t: kernel[t + 1 :], summed
        tail = kernel.flip(-1).cumsum(-1).flip(-1)[:, 1:]  # tail[:, t] = sum kernel[t + 1 :]
        tail = nn.functional.pad(tail, (0, max(0, T - tail.shape[-1])))[:, :T]
        level = x[..., : min(history, T)].mean(-1, keepdim=True)
        return y + level * tail.to(y.dtype)

    def deconvolve(self, y: Tensor, reg: float = 1e-2) -> Tensor:
        """Wiener-regularised pseudo-inverse of :meth:`forward`.

        Parameters
        ----------
        y : Tensor, shape (..., P, T)
            Signals convolved with this HRF.
        reg : float
            Regularisation relative to each parcel's peak ``|H(f)|^2`` (larger = smoother).

        Returns
        -------
        Tensor, shape (..., P, T)
            ``irfft(Y conj(H) / (|H|^2 + reg * max|H|^2))`` with the same zero padding
            as the forward convolution; exact where the forward response is fully inside
            the window and ``reg -> 0``, approximate near the window's end.
        """
        self._check(y)
        T = y.shape[-1]
        h = self.kernel()[:, :T]
        n = fast_fft_len(T + h.shape[-1] - 1)
        work = _fft_dtype(y.dtype)
        hf = torch.fft.rfft(h.to(work), n=n)
        power = hf.real.square() + hf.imag.square()
        denom = power + reg * power.amax(-1, keepdim=True)
        yf = torch.fft.rfft(y.to(work), n=n)
        return torch.fft.irfft(yf * hf.conj() / denom, n=n)[..., :T].to(y.dtype)

    @torch.no_grad()
    def peak_time(self, dt: float | None = None) -> Tensor:
        """Time of each kernel's maximum in seconds, shape ``(P,)`` (parabolic refinement).

        ``dt`` (s): search on that grid (default: the taps, ``1 / sfreq`` apart, shifted
        by ``offset_s``).
        """
        if dt is not None:
            h = self.curves(dt)
            i = h.argmax(-1).clamp(1, h.shape[-1] - 2)
            step, t0 = float(dt), 0.0
        else:
            h = self.kernel()
            i = h.argmax(-1).clamp(1, self.n_taps - 2)
            step, t0 = 1.0 / self.sfreq, self.offset_s
        rows = torch.arange(h.shape[0], device=h.device)
        y0, y1, y2 = h[rows, i - 1], h[rows, i], h[rows, i + 1]
        den = y0 - 2 * y1 + y2
        shift = torch.where(den.abs() > 1e-12, 0.5 * (y0 - y2) / den, torch.zeros_like(den))
        return (i.float() + shift.clamp(-0.5, 0.5)) * step + t0
