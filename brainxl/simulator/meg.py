"""A 306-channel MEG helmet (Neuromag names) built from MNE's shipped Vectorview layout.

MNE ships no sensor geometry of a real MEG system offline, only the 2D layout. The
layout is mapped onto a spherical helmet around the head: at each of the 102 locations a
magnetometer (``MEG xxx1``) and two orthogonal planar gradiometers (``MEG xxx2``,
``MEG xxx3``), with Vectorview coil definitions, so MNE's sphere model (Sarvas) gives
a realistic MEG forward. Names match the Neuromag entries of the channel vocabulary.
"""

from __future__ import annotations

from typing import Any

import numpy as np

HELMET_RADIUS = 0.12  # metres from the sphere centre to the sensors
MAX_POLAR_DEG = 110.0  # the helmet reaches below the ear line


def meg_channels() -> tuple[list[str], list[str], np.ndarray]:
    """Neuromag channel names, types and helmet directions.

    Returns
    -------
    names : list of str, length 306
    types : list of str, ``"mag"`` or ``"grad"`` per channel
    uv : ndarray, shape (306, 2)
        Layout position of each channel's sensor triplet (centred, unit max radius).
    """
    import mne

    lay = mne.channels.read_layout("Vectorview-all")
    centres = lay.pos[:, :2] + lay.pos[:, 2:4] / 2.0
    names = [n.replace(" ", "") for n in lay.names]
    triplet = [n[:-1] for n in names]
    mean = {t: centres[[i for i, u in enumerate(triplet) if u == t]].mean(0) for t in triplet}
    uv = np.array([mean[t] for t in triplet])
    uv -= (uv.max(0) + uv.min(0)) / 2.0
    uv /= np.linalg.norm(uv, axis=1).max()
    types = ["mag" if n.endswith("1") else "grad" for n in names]
    return [f"MEG {n[3:]}" for n in names], types, uv


def set_helmet_locations(info: Any, r0: np.ndarray) -> None:
    """Fill ``loc`` of the MEG channels of ``info`` (in place) with helmet geometry.

    Parameters
    ----------
    info : mne.Info
        Holds the channels of :func:`meg_channels` (and possibly others).
    r0 : ndarray, shape (3,)
        Helmet centre (metres, head coordinates = device coordinates).
    """
    from mne.io.constants import FIFF

    names, _, uv = meg_channels()
    where = {n: i for i, n in enumerate(names)}
    for ch in info["chs"]:
        if ch["ch_name"] not in where:
            continue
        u, v = uv[where[ch["ch_name"]]]
        theta = np.deg2rad(MAX_POLAR_DEG) * np.hypot(u, v)
        phi = np.arctan2(v, u)  # layout up (v > 0) is the nose (+y)
        ez = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        e_theta = np.array(
            [np.cos(theta) * np.cos(phi), np.cos(theta) * np.sin(phi), -np.sin(theta)]
        )
        e_phi = np.array([-np.sin(phi), np.cos(phi), 0.0])
        pos = np.asarray(r0) + HELMET_RADIUS * ez
        if ch["ch_name"].endswith("3"):
            ex, ey = e_phi, -e_theta
        else:
            ex, ey = e_theta, e_phi
        ch["loc"] = np.concatenate([pos, ex, ey, ez])
        if ch["ch_name"].endswith("1"):
            ch["coil_type"] = FIFF.FIFFV_COIL_VV_MAG_T3
        else:
            ch["coil_type"] = FIFF.FIFFV_COIL_VV_PLANAR_T1
        ch["coord_frame"] = FIFF.FIFFV_COORD_DEVICE


def sensor_noise(
    rng: np.random.Generator, signal: np.ndarray, types: list[str], fraction: float = 0.05
) -> np.ndarray:
    """White sensor noise at ``fraction`` of each channel type's signal RMS.

    Parameters
    ----------
    signal : ndarray, shape (n_channels, n_times)
    types : list of str, length n_channels

    Returns
    -------
    noise : ndarray, shape (n_channels, n_times)
    """
    out = rng.standard_normal(signal.shape)
    kinds = np.array(types)
    for kind in np.unique(kinds):
        sel = kinds == kind
        out[sel] *= fraction * np.sqrt((signal[sel] ** 2).mean())
    return out
