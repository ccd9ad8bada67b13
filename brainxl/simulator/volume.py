"""The BOLD voxel grid: the simulator's parcel atlas and 4D images built from parcel BOLD."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BoldGrid:
    """A small isotropic voxel grid around the head with a parcel label per voxel.

    Attributes
    ----------
    labels : ndarray, shape (nx, ny, nz), int16
        Parcel label 1..P of each voxel, 0 outside the brain.
    affine : ndarray, shape (4, 4)
        Voxel -> millimetre (head coordinates) transform.
    voxel_mm : float
    """

    labels: np.ndarray
    affine: np.ndarray
    voxel_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (nx, ny, nz)."""
        return tuple(self.labels.shape)  # type: ignore[return-value]


def make_grid(
    source_pos: np.ndarray,
    parcel_of_source: np.ndarray,
    r0: np.ndarray,
    brain_radius: float,
    voxel_mm: float = 7.0,
) -> BoldGrid:
    """Label every voxel inside the brain sphere with the parcel of its nearest source.

    Parameters
    ----------
    source_pos : ndarray, shape (n_sources, 3)
        Volume source positions (metres).
    parcel_of_source : ndarray, shape (n_sources,)
        0-based parcel index per source.
    r0 : ndarray, shape (3,)
        Sphere centre (metres).
    brain_radius : float
        Radius of the brain sphere (metres).
    voxel_mm : float
        Voxel edge length.

    Returns
    -------
    grid : BoldGrid
    """
    from scipy.spatial import cKDTree

    r0_mm = np.asarray(r0) * 1000.0
    half = int(np.ceil(brain_radius * 1000.0 / voxel_mm)) + 1
    n = 2 * half + 1
    origin = r0_mm - half * voxel_mm
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = origin
    ijk = np.stack(np.meshgrid(*(np.arange(n),) * 3, indexing="ij"), -1).reshape(-1, 3)
    xyz_m = (ijk * voxel_mm + origin) / 1000.0
    dist, nearest = cKDTree(source_pos).query(xyz_m)
    inside = np.linalg.norm(xyz_m - r0, axis=1) <= brain_radius
    inside &= dist <= max(voxel_mm / 1000.0, 0.012)
    labels = np.where(inside, parcel_of_source[nearest] + 1, 0).astype(np.int16)
    return BoldGrid(labels=labels.reshape(n, n, n), affine=affine, voxel_mm=voxel_mm)


def bold_image(
    rng: np.random.Generator,
    grid: BoldGrid,
    parcel_pct: np.ndarray,
    *,
    baseline: float = 1000.0,
    voxel_noise_pct: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """4D image: each brain voxel = baseline * (1 + parcel BOLD / 100) + voxel noise.

    Parameters
    ----------
    grid : BoldGrid
    parcel_pct : ndarray, shape (P, n_vols)
        Parcel BOLD in percent signal change.
    baseline : float
        Mean voxel intensity; each voxel gets its own baseline around it.
    voxel_noise_pct : float
        Thermal noise SD per voxel, percent of its baseline.

    Returns
    -------
    img : ndarray, shape (nx, ny, nz, n_vols), int16
        Rounded intensities (quantisation SD 0.3, far below the noise), 0 outside.
    base : ndarray, shape (nx, ny, nz)
        The noise-free baseline of each voxel (0 outside the brain).
    """
    flat = grid.labels.reshape(-1)
    brain = np.flatnonzero(flat)
    n_vols = parcel_pct.shape[1]
    data = np.zeros((flat.size, n_vols), dtype=np.int16)
    base = baseline * rng.lognormal(0.0, 0.1, brain.size)
    noise = rng.standard_normal((brain.size, n_vols)) * (voxel_noise_pct / 100.0)
    vals = base[:, None] * (1.0 + parcel_pct[flat[brain] - 1] / 100.0 + noise)
    data[brain] = np.clip(np.round(vals), 1, np.iinfo(np.int16).max)
    base_img = np.zeros(flat.size)
    base_img[brain] = base
    return data.reshape(*grid.shape, n_vols), base_img.reshape(grid.shape)


def roi_means(img: np.ndarray, labels: np.ndarray, n_parcels: int) -> np.ndarray:
    """Mean over the voxels of each label 1..P.

    Parameters
    ----------
    img : ndarray, shape (nx, ny, nz, n_vols)
    labels : ndarray, shape (nx, ny, nz)
    n_parcels : int

    Returns
    -------
    means : ndarray, shape (n_parcels, n_vols)
    """
    flat = labels.reshape(-1)
    X = img.reshape(flat.size, -1).astype(np.float64)
    sums = np.zeros((n_parcels + 1, X.shape[1]))
    np.add.at(sums, flat, X)
    counts = np.bincount(flat, minlength=n_parcels + 1)[:, None]
    if (counts[1:] == 0).any():
        missing = np.flatnonzero(counts[1:, 0] == 0) + 1
        raise ValueError(f"labels {missing.tolist()} have no voxel: use a finer voxel grid")
    return sums[1:] / counts[1:]
