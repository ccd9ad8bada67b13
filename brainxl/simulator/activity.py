"""Neural activity per parcel: band-limited oscillations on a 1/f background.

Alpha (at a per-subject peak), beta and gamma oscillations are narrow-band noise whose
amplitude envelopes follow slow, correlated network factors; a 1/f ("aperiodic")
background is added. Band power of each parcel is what drives its BOLD signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Oscillatory bands: name -> (centre Hz or None for the subject's alpha, bandwidth Hz).
BANDS: dict[str, tuple[float | None, float]] = {
    "alpha": (None, 1.2),
    "beta": (20.0, 4.0),
    "gamma": (40.0, 8.0),
}


def _shaped_noise(
    rng: np.random.Generator, n_signals: int, n_times: int, amplitude: np.ndarray
) -> np.ndarray:
    """Gaussian noise with amplitude spectrum ``amplitude`` (one per row), zero mean, unit variance.

    The spectrum of white Gaussian noise is itself complex Gaussian, so it is drawn
    directly in the frequency domain (one inverse FFT per call). The FFT runs on a fast
    length (``scipy.fft.next_fast_len``) and the result is cut to ``n_times``.

    Parameters
    ----------
    amplitude : callable or ndarray
        Amplitude spectrum on the ``rfftfreq(n_fft)`` grid, shape (n_signals, n_freqs) or
        (n_freqs,), or a function of that frequency grid (in cycles per sample)
        returning it.

    Returns
    -------
    x : ndarray, shape (n_signals, n_times), float32
    """
    from scipy import fft

    n_fft = fft.next_fast_len(n_times, real=True)
    f = np.fft.rfftfreq(n_fft)
    amp = np.broadcast_to(amplitude(f) if callable(amplitude) else amplitude, (n_signals, len(f)))
    # draw only where the spectrum is non-negligible (narrow bands are cheap)
    support = np.flatnonzero((amp > 1e-7 * amp.max()).any(axis=0))
    support = support[support > 0]
    lo, hi = (support[0], support[-1] + 1) if len(support) else (1, 1)
    spec = np.zeros((n_signals, len(f)), dtype=np.complex64)
    draw = rng.standard_normal((2, n_signals, hi - lo), dtype=np.float32)
    draw *= amp[:, lo:hi].astype(np.float32)
    spec.real[:, lo:hi] = draw[0]
    spec.imag[:, lo:hi] = draw[1]
    x = fft.irfft(spec, n=n_fft, axis=1)[:, :n_times]
    x -= x.mean(axis=1, keepdims=True)
    x /= np.sqrt(np.einsum("ij,ij->i", x, x) / n_times)[:, None] + 1e-30
    return x


def pink_noise(
    rng: np.random.Generator, n_signals: int, n_times: int, sfreq: float, exponent: np.ndarray
) -> np.ndarray:
    """Aperiodic 1/f^exponent noise (power spectrum), unit variance, flat below 0.5 Hz.

    Parameters
    ----------
    exponent : ndarray, shape (n_signals,)
        Power-law exponent of each row.

    Returns
    -------
    x : ndarray, shape (n_signals, n_times)
    """
    expo = np.asarray(exponent, dtype=float)[:, None]
    return _shaped_noise(
        rng, n_signals, n_times, lambda f: np.maximum(f * sfreq, 0.5)[None, :] ** (-expo / 2.0)
    )


def band_noise(
    rng: np.random.Generator,
    n_signals: int,
    n_times: int,
    sfreq: float,
    centre: np.ndarray,
    width: float,
) -> np.ndarray:
    """Narrow-band Gaussian noise (Gaussian spectral bump), unit variance.

    Parameters
    ----------
    centre : ndarray, shape (n_signals,)
        Centre frequency of each row (Hz).
    width : float
        Standard deviation of the spectral bump (Hz).

    Returns
    -------
    x : ndarray, shape (n_signals, n_times)
    """
    c = np.asarray(centre, dtype=float)[:, None]
    return _shaped_noise(
        rng, n_signals, n_times, lambda f: np.exp(-0.5 * ((f[None, :] * sfreq - c) / width) ** 2)
    )


def slow_signals(
    rng: np.random.Generator, n_signals: int, n_times: int, sfreq: float, cutoff: float
) -> np.ndarray:
    """Smooth unit-variance signals with power below ``cutoff`` Hz.

    Returns
    -------
    x : ndarray, shape (n_signals, n_times)
    """
    return _shaped_noise(
        rng, n_signals, n_times, lambda f: np.exp(-0.5 * (f * sfreq / cutoff) ** 2)
    )


@dataclass
class ParcelActivity:
    """Simulated neural activity of all parcels of one subject.

    Attributes
    ----------
    activity : ndarray, shape (n_parcels, n_times), float32
        Unit-free parcel time courses (scaled to A*m by the caller).
    band_power : dict of str to ndarray, shape (n_parcels, n_slow)
        Power of each oscillatory band, averaged over blocks of ``decim`` samples.
    decim : int
        Samples of ``activity`` per sample of ``band_power``.
    alpha_peak : ndarray, shape (n_parcels,)
        Alpha centre frequency of each parcel (Hz).
    """

    activity: np.ndarray
    band_power: dict[str, np.ndarray]
    decim: int
    alpha_peak: np.ndarray


def simulate_activity(
    rng: np.random.Generator,
    centroids: np.ndarray,
    r0: np.ndarray,
    n_times: int,
    sfreq: float,
    alpha_peak: float,
    *,
    n_factors: int = 5,
    decim: int = 25,
) -> ParcelActivity:
    """Simulate oscillations + 1/f background for every parcel.

    Amplitude envelopes of alpha, beta and gamma are log-normal processes driven by
    ``n_factors`` slow network factors (< 0.05 Hz) shared across parcels and bands, so
    parcels within a network co-fluctuate and alpha tends to anti-correlate with beta
    and gamma. Alpha is strongest over posterior parcels.

    Parameters
    ----------
    rng : numpy.random.Generator
    centroids : ndarray, shape (n_parcels, 3)
        Parcel centroids (metres, head coordinates).
    r0 : ndarray, shape (3,)
        Head centre.
    n_times : int
    sfreq : float
    alpha_peak : float
        The subject's alpha peak frequency (Hz).
    n_factors : int
        Number of slow network factors.
    decim : int
        Block length (samples) of the returned band power.

    Returns
    -------
    activity : ParcelActivity
    """
    P = len(centroids)
    n_slow = int(np.ceil(n_times / decim))
    slow_sfreq = sfreq / decim
    t_fast = np.arange(n_times) / sfreq
    t_slow = (np.arange(n_slow) + 0.5) / slow_sfreq
    # linear interpolation weights from the slow grid to the sample grid
    pos = np.clip((t_fast - t_slow[0]) * slow_sfreq, 0.0, n_slow - 1 - 1e-9)
    i0 = np.minimum(pos.astype(int), max(n_slow - 2, 0))
    w = (pos - i0).astype(np.float32)
    factors = slow_signals(rng, n_factors, n_slow, slow_sfreq, cutoff=0.05)
    y = (centroids - r0)[:, 1]
    posterior = 1.0 / (1.0 + np.exp(y / 0.02))  # ~1 at the back, ~0 at the front
    amp = {
        "alpha": 0.8 + 2.2 * posterior,
        "beta": rng.uniform(0.45, 0.8, P),
        "gamma": rng.uniform(0.2, 0.4, P),
    }
    peaks = np.clip(alpha_peak + rng.normal(0.0, 0.25, P), 7.5, 13.0)
    # band loadings on the network factors; alpha loads with opposite sign to beta/gamma
    base = rng.standard_normal((P, n_factors)) / np.sqrt(n_factors)
    activity = np.zeros((P, n_times), dtype=np.float32)
    band_power: dict[str, np.ndarray] = {}
    for band, (centre, width) in BANDS.items():
        sign = -1.0 if band == "alpha" else 1.0
        W = sign * base + 0.5 * rng.standard_normal((P, n_factors)) / np.sqrt(n_factors)
        own = slow_signals(rng, P, n_slow, slow_sfreq, cutoff=0.05)
        log_env = 0.6 * (W @ factors) / np.sqrt((W**2).sum(1, keepdims=True)) + 0.3 * own
        env_slow = np.exp(log_env).astype(np.float32)
        env = env_slow[:, i0] * (1.0 - w) + env_slow[:, i0 + 1] * w
        centres = peaks if centre is None else np.full(P, centre) + rng.normal(0, 1.0, P)
        comp = band_noise(rng, P, n_times, sfreq, centres, width)
        comp *= env
        sq = comp * comp
        gain = (amp[band] / np.sqrt(sq.mean(1, dtype=np.float64))).astype(np.float32)
        comp *= gain[:, None]
        sq *= (gain**2)[:, None]
        activity += comp
        pad = n_slow * decim - n_times
        if pad:
            sq = np.concatenate([sq, sq[:, -pad:]], axis=1)
        band_power[band] = sq.reshape(P, n_slow, decim).mean(2, dtype=np.float64)
        del comp, sq, env
    exponent = rng.uniform(1.0, 2.0, P)
    activity += pink_noise(rng, P, n_times, sfreq, exponent)
    return ParcelActivity(activity=activity, band_power=band_power, decim=decim, alpha_peak=peaks)
