"""BOLD per parcel: band-power drive convolved with a per-parcel double-gamma HRF.

Observed BOLD adds aliased cardiac and respiratory fluctuations, slow scanner drift
and thermal noise, with a per-parcel signal-to-noise ratio so that the noise ceiling
(the correlation between observed and noise-free BOLD) is below 1 and varies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HRF_LENGTH_S = 32.0


def double_gamma(
    t: np.ndarray,
    peak: float,
    undershoot: float,
    dispersion: float = 0.9,
    undershoot_dispersion: float = 0.9,
    ratio: float = 1.0 / 6.0,
) -> np.ndarray:
    """Double-gamma haemodynamic response (SPM form), normalised to unit peak.

    Parameters
    ----------
    t : ndarray, shape (n,)
        Time after the neural event (s).
    peak, undershoot : float
        Modes (s) of the positive and of the undershoot gamma densities.
    dispersion, undershoot_dispersion : float
        Scale parameters (s) of the two gamma densities.
    ratio : float
        Undershoot amplitude relative to the positive response.

    Returns
    -------
    h : ndarray, shape (n,)
    """
    a1 = peak / dispersion + 1.0
    a2 = undershoot / undershoot_dispersion + 1.0
    h = _gamma_pdf(t, a1, dispersion) - ratio * _gamma_pdf(t, a2, undershoot_dispersion)
    return h / np.max(h)


def _gamma_pdf(t: np.ndarray, shape: float, scale: float) -> np.ndarray:
    """Gamma density (0 for t <= 0); scipy.stats is ~100x slower per call."""
    from scipy.special import gammaln

    t = np.asarray(t, dtype=float)
    out = np.zeros_like(t)
    pos = t > 0
    x = t[pos] / scale
    out[pos] = np.exp((shape - 1.0) * np.log(x) - x - gammaln(shape)) / scale
    return out


@dataclass
class HRFSet:
    """Per-parcel HRF parameters.

    Attributes
    ----------
    peak, undershoot, dispersion, undershoot_dispersion, ratio : ndarray, shape (P,)
        Parameters of :func:`double_gamma` per parcel.
    """

    peak: np.ndarray
    undershoot: np.ndarray
    dispersion: np.ndarray
    undershoot_dispersion: np.ndarray
    ratio: np.ndarray

    def kernels(self, dt: float, length: float = HRF_LENGTH_S) -> tuple[np.ndarray, np.ndarray]:
        """Sample every parcel's HRF.

        Returns
        -------
        t : ndarray, shape (n_taps,)
            Times of the taps (s), starting at 0.
        h : ndarray, shape (P, n_taps)
            Unit-peak kernels.
        """
        t = np.arange(0.0, length, dt)
        h = np.stack(
            [
                double_gamma(t, *p)
                for p in zip(
                    self.peak,
                    self.undershoot,
                    self.dispersion,
                    self.undershoot_dispersion,
                    self.ratio,
                )
            ]
        )
        return t, h

    def peak_times(self, dt: float = 0.01) -> np.ndarray:
        """Time (s) of the maximum of each kernel, shape (P,)."""
        t, h = self.kernels(dt)
        return t[np.argmax(h, axis=1)]

    def undershoot_times(self, dt: float = 0.01) -> np.ndarray:
        """Time (s) of the minimum (undershoot) of each kernel, shape (P,)."""
        t, h = self.kernels(dt)
        return t[np.argmin(h, axis=1)]


def sample_hrfs(rng: np.random.Generator, n_parcels: int) -> HRFSet:
    """Draw heterogeneous HRFs whose peaks fall in 4.5-6.5 s (inside the 4-7 s range)."""
    peak = rng.uniform(4.6, 6.6, n_parcels)
    return HRFSet(
        peak=peak,
        undershoot=peak + rng.uniform(8.0, 12.0, n_parcels),
        dispersion=rng.uniform(0.8, 1.0, n_parcels),
        undershoot_dispersion=rng.uniform(0.8, 1.0, n_parcels),
        ratio=rng.uniform(0.1, 0.3, n_parcels),
    )


def bold_drive(band_power: dict[str, np.ndarray], weights: dict[str, np.ndarray]) -> np.ndarray:
    """Weighted sum of relative band-power changes.

    Parameters
    ----------
    band_power : dict of str to ndarray, shape (P, n_slow)
    weights : dict of str to ndarray, shape (P,)
        Coupling of each band to BOLD (negative for alpha).

    Returns
    -------
    drive : ndarray, shape (P, n_slow)
    """
    drive = 0.0
    for band, w in weights.items():
        bp = band_power[band]
        drive = drive + w[:, None] * (bp / bp.mean(axis=1, keepdims=True) - 1.0)
    return np.asarray(drive)


#: Band -> (sign, low, high): each parcel's coupling is ``sign * uniform(low, high)``.
COUPLING_RANGES: dict[str, tuple[float, float, float]] = {
    "gamma": (1.0, 0.6, 1.0),
    "beta": (1.0, 0.2, 0.5),
    "alpha": (-1.0, 0.3, 0.7),
}


def sample_coupling(rng: np.random.Generator, n_parcels: int) -> dict[str, np.ndarray]:
    """Per-parcel band-to-BOLD coupling: gamma and beta up, alpha down."""
    return {
        band: sign * rng.uniform(low, high, n_parcels)
        for band, (sign, low, high) in COUPLING_RANGES.items()
    }


def mean_coupling(n_parcels: int) -> dict[str, np.ndarray]:
    """The expected coupling of :func:`sample_coupling`, the same for every parcel."""
    return {
        band: np.full(n_parcels, sign * (low + high) / 2.0)
        for band, (sign, low, high) in COUPLING_RANGES.items()
    }


def mean_hrf_kernel(dt: float, n_draws: int = 20000, seed: int = 0) -> np.ndarray:
    """The expected kernel of :func:`sample_hrfs` (Monte Carlo over ``n_draws`` HRFs).

    Returns
    -------
    h : ndarray, shape (n_taps,)
        Taps every ``dt`` s from 0, as :meth:`HRFSet.kernels`; the mean of unit-peak kernels.
    """
    _, h = sample_hrfs(np.random.default_rng(seed), n_draws).kernels(dt)
    return h.mean(axis=0)


def convolve_hrf(drive: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Causal convolution of each row of ``drive`` with its kernel.

    Parameters
    ----------
    drive : ndarray, shape (P, n)
    kernels : ndarray, shape (P, n_taps)

    Returns
    -------
    y : ndarray, shape (P, n)
    """
    from scipy.signal import fftconvolve

    return fftconvolve(drive, kernels, axes=1)[:, : drive.shape[1]]


def hrf_response(
    drive: np.ndarray, drive_sfreq: float, kernels: np.ndarray, vol_index_times: np.ndarray
) -> np.ndarray:
    """The drive convolved with HRF kernels and sampled at the volumes.

    Parameters
    ----------
    drive : ndarray, shape (P, n_slow)
        Sample i at ``(i + 0.5) / drive_sfreq`` s.
    drive_sfreq : float
    kernels : ndarray, shape (P, n_taps) or (n_taps,)
        Taps every ``1 / drive_sfreq`` s; one kernel is used for every parcel.
    vol_index_times : ndarray, shape (n_vols,)
        Volume times on the drive's time axis (s).

    Returns
    -------
    bold : ndarray, shape (P, n_vols)
    """
    kernels = np.broadcast_to(kernels, (drive.shape[0], np.shape(kernels)[-1]))
    conv = convolve_hrf(drive, kernels)
    t_slow = (np.arange(drive.shape[1]) + 0.5) / drive_sfreq
    return np.stack([np.interp(vol_index_times, t_slow, c) for c in conv])


def physiological_noise(
    rng: np.random.Generator, vol_times: np.ndarray, n_parcels: int
) -> np.ndarray:
    """Cardiac and respiratory fluctuations sampled at the volume times (so aliased).

    Parameters
    ----------
    vol_times : ndarray, shape (n_vols,)
        Acquisition times (s).

    Returns
    -------
    noise : ndarray, shape (n_parcels, n_vols), unit variance per row
    """
    dt = 0.05
    t = np.arange(0.0, vol_times[-1] + 1.0, dt)
    out = np.zeros((n_parcels, len(vol_times)))
    for f0, df in ((rng.uniform(0.9, 1.3), 0.08), (rng.uniform(0.22, 0.33), 0.03)):
        wobble = slow_random(rng, len(t), dt, cutoff=0.02)
        phase = 2 * np.pi * np.cumsum(f0 + df * wobble) * dt
        wave = np.interp(vol_times, t, np.sin(phase))
        wave2 = np.interp(vol_times, t, np.cos(phase))
        a = rng.standard_normal((n_parcels, 2))
        out += a[:, :1] * wave + a[:, 1:] * wave2
    out -= out.mean(axis=1, keepdims=True)
    return out / (out.std(axis=1, keepdims=True) + 1e-30)


def slow_random(rng: np.random.Generator, n: int, dt: float, cutoff: float) -> np.ndarray:
    """One smooth unit-variance signal with power below ``cutoff`` Hz, shape (n,)."""
    f = np.fft.rfftfreq(n, dt)
    spec = np.fft.rfft(rng.standard_normal(n)) * np.exp(-0.5 * (f / cutoff) ** 2)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-30)


def drift(rng: np.random.Generator, vol_times: np.ndarray, n_parcels: int) -> np.ndarray:
    """Slow scanner drift (linear trend + cosines below 0.01 Hz), unit variance per row."""
    T = vol_times[-1] - vol_times[0] + 1e-9
    tt = (vol_times - vol_times[0]) / T
    basis = [tt - 0.5] + [np.cos(np.pi * k * tt) for k in range(1, max(2, int(T * 0.02)) + 1)]
    B = np.stack(basis)
    out = rng.standard_normal((n_parcels, len(B))) / np.arange(1, len(B) + 1) @ B
    out -= out.mean(axis=1, keepdims=True)
    return out / (out.std(axis=1, keepdims=True) + 1e-30)


@dataclass
class ParcelBold:
    """BOLD of all parcels at the volume times, in percent signal change.

    Attributes
    ----------
    clean : ndarray, shape (P, n_vols)
        Noise-free BOLD (HRF-convolved drive).
    observed : ndarray, shape (P, n_vols)
        ``clean`` plus physiological noise, drift and thermal noise (parcel level).
    target_ceiling : ndarray, shape (P,)
        The noise ceiling each parcel's SNR was set for.
    """

    clean: np.ndarray
    observed: np.ndarray
    target_ceiling: np.ndarray


def simulate_bold(
    rng: np.random.Generator,
    drive: np.ndarray,
    drive_sfreq: float,
    hrfs: HRFSet,
    vol_index_times: np.ndarray,
    vol_times: np.ndarray,
) -> ParcelBold:
    """Convolve the drive with the HRFs, sample at the volumes and add noise.

    Parameters
    ----------
    drive : ndarray, shape (P, n_slow)
        Neural drive sampled at ``drive_sfreq`` (sample i at ``(i + 0.5) / drive_sfreq``).
    drive_sfreq : float
    hrfs : HRFSet
    vol_index_times : ndarray, shape (n_vols,)
        Volume times on the drive's time axis (s).
    vol_times : ndarray, shape (n_vols,)
        Volume times relative to the first volume (s), for the noise processes.

    Returns
    -------
    bold : ParcelBold
    """
    P = drive.shape[0]
    _, kernels = hrfs.kernels(1.0 / drive_sfreq)
    clean = hrf_response(drive, drive_sfreq, kernels, vol_index_times)
    clean -= clean.mean(axis=1, keepdims=True)
    amp = rng.uniform(0.5, 1.5, P)  # percent signal change (SD)
    clean *= (amp / (clean.std(axis=1) + 1e-30))[:, None]
    target = rng.uniform(0.45, 0.92, P)
    noise_sd = amp * np.sqrt(1.0 - target**2) / target
    frac = rng.dirichlet([3.0, 2.0, 4.0], P)  # physio, drift, thermal variance shares
    noise = (
        np.sqrt(frac[:, :1]) * physiological_noise(rng, vol_times, P)
        + np.sqrt(frac[:, 1:2]) * drift(rng, vol_times, P)
        + np.sqrt(frac[:, 2:]) * rng.standard_normal((P, len(vol_times)))
    )
    # remove the noise's chance correlation with the signal, so that the realised
    # ceiling equals the designed one even for short runs
    cz = clean / (np.linalg.norm(clean, axis=1, keepdims=True) + 1e-30)
    noise -= np.einsum("pt,pt->p", noise, cz)[:, None] * cz
    noise -= noise.mean(axis=1, keepdims=True)
    noise /= noise.std(axis=1, keepdims=True) + 1e-30
    observed = clean + noise_sd[:, None] * noise
    return ParcelBold(clean=clean, observed=observed, target_ceiling=target)
