"""Head model of the simulator: montage, sphere conductor, volume sources and parcels.

The template (montage, fitted sphere, volume source space, parcellation and source
orientations) is computed once per dataset and shared by every subject; each subject
gets jittered electrodes and scaled tissue conductivities, hence its own forward model.
Everything is built from what MNE ships offline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

#: Relative radii and conductivities (S/m) of brain, CSF, skull and scalp in MNE's
#: default three/four-shell sphere model.
RELATIVE_RADII = (0.90, 0.92, 0.97, 1.0)
SIGMAS = (0.33, 1.0, 0.004, 0.33)


@dataclass
class TemplateHead:
    """The head model shared by all subjects of one simulated dataset.

    Attributes
    ----------
    montage_name : str
        MNE built-in montage the electrodes come from.
    ch_names : list of str
        EEG channel names of the montage (standard names), length n_channels.
    ch_pos : ndarray, shape (n_channels, 3)
        Template electrode positions in head coordinates (metres).
    fiducials : dict of str to ndarray, shape (3,)
        ``nasion``, ``lpa`` and ``rpa`` in head coordinates (metres).
    r0 : ndarray, shape (3,)
        Centre of the fitted sphere (metres).
    head_radius : float
        Scalp radius of the fitted sphere (metres).
    src : mne.SourceSpaces
        Discrete volume source space inside the brain sphere.
    source_pos : ndarray, shape (n_sources, 3)
        Positions of the used sources (metres, head coordinates).
    parcel_of_source : ndarray, shape (n_sources,), int
        0-based parcel index of each source.
    orientations : ndarray, shape (n_sources, 3)
        Unit dipole orientation of each source.
    gains : ndarray, shape (n_sources,)
        Relative strength of each source within its parcel (mean 1 per parcel).
    centroids : ndarray, shape (n_parcels, 3)
        Parcel centroids (metres, head coordinates).
    parcel_names : list of str
        ``"P001"``, ``"P002"``, ...
    """

    montage_name: str
    ch_names: list[str]
    ch_pos: np.ndarray
    fiducials: dict[str, np.ndarray]
    r0: np.ndarray
    head_radius: float
    src: Any
    source_pos: np.ndarray
    parcel_of_source: np.ndarray
    orientations: np.ndarray
    gains: np.ndarray
    centroids: np.ndarray
    parcel_names: list[str]

    @property
    def n_parcels(self) -> int:
        """Number of parcels."""
        return len(self.parcel_names)

    @property
    def brain_radius(self) -> float:
        """Radius of the innermost (brain) sphere in metres."""
        return RELATIVE_RADII[0] * self.head_radius


def load_montage(name: str) -> Any:
    """Return the MNE built-in montage ``name`` with its EEG channels only.

    Raises
    ------
    ValueError
        If ``name`` is not an MNE built-in montage (the message lists them).
    """
    import mne

    builtin = mne.channels.get_builtin_montages()
    if name not in builtin:
        raise ValueError(
            f"unknown montage {name!r}: pass one of MNE's built-in montages ({', '.join(builtin)})"
        )
    return mne.channels.make_standard_montage(name)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, n_iter: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; returns labels with no empty cluster."""
    n = len(points)
    centres = [points[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(points[rng.choice(n, p=d2 / d2.sum())])
    C = np.array(centres)
    labels = np.zeros(n, dtype=int)
    for _ in range(n_iter):
        labels_new = np.argmin(((points[:, None, :] - C[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            members = labels_new == j
            if not members.any():  # re-seed an empty cluster on the farthest point
                far = np.argmax(((points - C[labels_new]) ** 2).sum(-1))
                labels_new[far] = j
                members = labels_new == j
            C[j] = points[members].mean(0)
        if np.array_equal(labels_new, labels):
            break
        labels = labels_new
    assert len(np.unique(labels)) == k
    return labels


def build_template(
    montage: str = "biosemi64",
    n_parcels: int = 64,
    *,
    spacing_mm: float = 10.0,
    rng: np.random.Generator,
) -> TemplateHead:
    """Fit the sphere to ``montage``, place volume sources and cluster them into parcels.

    Parameters
    ----------
    montage : str
        MNE built-in montage name.
    n_parcels : int
        Number of parcels P (k-means clusters of the volume sources).
    spacing_mm : float
        Grid spacing of the volume source space.
    rng : numpy.random.Generator
        Source of the parcellation and source orientations.

    Returns
    -------
    template : TemplateHead
    """
    import mne

    mont = load_montage(montage)
    pos = mont.get_positions()
    ch_names = list(pos["ch_pos"])
    ch_pos = np.array([pos["ch_pos"][c] for c in ch_names], dtype=float)
    info = mne.create_info(ch_names, 250.0, "eeg")
    info.set_montage(mont)
    sphere = mne.make_sphere_model("auto", "auto", info, verbose=False)
    r0 = np.asarray(sphere["r0"], dtype=float)
    head_radius = float(sphere.radius)
    # exclude > 0 drops a grid point at the sphere centre (NaN leadfield for MEG there)
    src = mne.setup_volume_source_space(
        sphere=sphere, pos=spacing_mm, mindist=5.0, exclude=spacing_mm / 2, verbose=False
    )
    source_pos = src[0]["rr"][src[0]["vertno"]]
    if n_parcels < 1 or n_parcels > len(source_pos) // 2:
        raise ValueError(
            f"n_parcels={n_parcels} is out of range for {len(source_pos)} volume sources: "
            f"choose 1..{len(source_pos) // 2}"
        )
    labels = _kmeans(source_pos, n_parcels, rng)
    # order parcels front-to-back then left-to-right so names are stable and readable
    cents = np.array([source_pos[labels == j].mean(0) for j in range(n_parcels)])
    order = np.lexsort((cents[:, 0], -cents[:, 1]))
    remap = np.empty(n_parcels, dtype=int)
    remap[order] = np.arange(n_parcels)
    labels = remap[labels]
    cents = cents[order]
    # sources in a parcel share a mean orientation (a patch of cortex) with local scatter
    parcel_ori = rng.standard_normal((n_parcels, 3))
    parcel_ori /= np.linalg.norm(parcel_ori, axis=1, keepdims=True)
    ori = parcel_ori[labels] + 0.35 * rng.standard_normal((len(source_pos), 3))
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    gains = rng.lognormal(0.0, 0.3, len(source_pos))
    for j in range(n_parcels):
        gains[labels == j] /= gains[labels == j].mean()
    fids = {k: np.asarray(pos[k], dtype=float) for k in ("nasion", "lpa", "rpa")}
    if any(v is None for v in (pos["nasion"], pos["lpa"], pos["rpa"])):
        fids = {
            "nasion": r0 + np.array([0.0, head_radius, -0.02]),
            "lpa": r0 + np.array([-head_radius, 0.0, -0.04]),
            "rpa": r0 + np.array([head_radius, 0.0, -0.04]),
        }
    return TemplateHead(
        montage_name=montage,
        ch_names=ch_names,
        ch_pos=ch_pos,
        fiducials=fids,
        r0=r0,
        head_radius=head_radius,
        src=src,
        source_pos=source_pos,
        parcel_of_source=labels,
        orientations=ori,
        gains=gains,
        centroids=cents,
        parcel_names=[f"P{j + 1:03d}" for j in range(n_parcels)],
    )


def with_electrodes(template: TemplateHead, montage: str) -> TemplateHead:
    """The same brain (sources, parcels, orientations, sphere) under another montage.

    Electrodes of ``montage`` are moved along the radius from the sphere's centre onto
    its scalp, so recordings of one population of brains with different caps can be
    simulated (real corpora share human anatomy whatever cap recorded them).

    Parameters
    ----------
    template : TemplateHead
        The brain, e.g. :func:`brainxl.simulator.dataset.dataset_template`.
    montage : str
        MNE built-in montage name.

    Returns
    -------
    TemplateHead
        ``template`` with ``montage``'s channels and positions.
    """
    pos = load_montage(montage).get_positions()
    ch_names = list(pos["ch_pos"])
    rel = np.array([pos["ch_pos"][c] for c in ch_names], dtype=float) - template.r0
    ch_pos = template.r0 + rel * (template.head_radius / np.linalg.norm(rel, axis=1))[:, None]
    return replace(template, montage_name=montage, ch_names=ch_names, ch_pos=ch_pos)


def jitter_positions(
    pos: np.ndarray, r0: np.ndarray, sd_m: float, rng: np.random.Generator
) -> np.ndarray:
    """Move electrodes tangentially by ~``sd_m`` metres, keeping their distance to ``r0``.

    Parameters
    ----------
    pos : ndarray, shape (n, 3)
    r0 : ndarray, shape (3,)
    sd_m : float
    rng : numpy.random.Generator

    Returns
    -------
    jittered : ndarray, shape (n, 3)
    """
    rel = pos - r0
    radius = np.linalg.norm(rel, axis=1, keepdims=True)
    moved = rel + sd_m * rng.standard_normal(pos.shape)
    moved *= radius / np.linalg.norm(moved, axis=1, keepdims=True)
    return moved + r0


@dataclass
class SubjectHead:
    """One subject's head model.

    Attributes
    ----------
    info : mne.Info
        Measurement info with the subject's (jittered) electrode positions; also MEG
        sensors when simulated.
    fwd : mne.Forward
        Free-orientation forward solution over the template's volume sources.
    parcel_gain : ndarray, shape (n_sensors, n_parcels)
        Sensor response (V or T per A*m) to unit activity of each parcel: the sum over the
        parcel's sources of ``gain * leadfield @ orientation``.
    sigmas : tuple of float
        Brain, CSF, skull, scalp conductivities used (S/m).
    """

    info: Any
    fwd: Any
    parcel_gain: np.ndarray
    sigmas: tuple[float, ...]


def subject_head(
    template: TemplateHead,
    sfreq: float,
    rng: np.random.Generator,
    *,
    jitter_mm: float = 3.0,
    meg: bool = False,
) -> SubjectHead:
    """Build one subject's forward model: jittered electrodes, scaled conductivities.

    Parameters
    ----------
    template : TemplateHead
    sfreq : float
        Sampling rate stored in the returned info.
    rng : numpy.random.Generator
    jitter_mm : float
        Standard deviation of the electrode displacement.
    meg : bool
        Also model a 306-channel MEG helmet (see :mod:`brainxl.simulator.meg`).

    Returns
    -------
    head : SubjectHead
    """
    import mne

    ch_pos = jitter_positions(template.ch_pos, template.r0, jitter_mm / 1000.0, rng)
    mont = mne.channels.make_dig_montage(
        ch_pos=dict(zip(template.ch_names, ch_pos)),
        coord_frame="head",
        **template.fiducials,
    )
    names, types = list(template.ch_names), ["eeg"] * len(template.ch_names)
    if meg:
        from brainxl.simulator.meg import meg_channels

        meg_names, meg_types, _ = meg_channels()
        names += meg_names
        types += meg_types
    info = mne.create_info(names, sfreq, types)
    info.set_montage(mont)  # positions of the EEG channels only
    if meg:
        from brainxl.simulator.meg import set_helmet_locations

        set_helmet_locations(info, template.r0)
        with info._unlock():
            info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    # per-subject tissue conductivities: skull varies most across people
    scale = np.exp(rng.normal(0.0, [0.1, 0.1, 0.3, 0.1]))
    sigmas = tuple(float(s) for s in np.asarray(SIGMAS) * scale)
    sphere = mne.make_sphere_model(
        template.r0, template.head_radius, None, RELATIVE_RADII, sigmas, verbose=False
    )
    fwd = mne.make_forward_solution(
        info, trans=None, src=template.src, bem=sphere, eeg=True, meg=meg, verbose=False
    )
    L = fwd["sol"]["data"]  # (n_sensors, 3 * n_sources), free orientation
    if not np.isfinite(L).all():
        raise RuntimeError("forward solution has non-finite entries (source at sphere centre?)")
    n_src = len(template.source_pos)
    L3 = L.reshape(L.shape[0], n_src, 3)
    per_source = np.einsum("csk,sk->cs", L3, template.orientations) * template.gains
    G = np.zeros((L.shape[0], template.n_parcels))
    np.add.at(G.T, template.parcel_of_source, per_source.T)
    # the forward lists MEG before EEG: reorder rows to the channel order of ``info``
    rows = {name: i for i, name in enumerate(fwd["sol"]["row_names"])}
    G = G[[rows[name] for name in info["ch_names"]]]
    return SubjectHead(info=info, fwd=fwd, parcel_gain=G, sigmas=sigmas)
