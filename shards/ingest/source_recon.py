"""Source reconstruction of preprocessed sensor data onto atlas parcels (MNE inverse).

Steps: pick the channels shared by the recording and the forward model, add an average
reference projection (EEG), build an ad-hoc (or empirical) noise covariance, make the
inverse operator (``loose="auto"``: fixed orientation when the forward is fixed, free
otherwise) and take its linear kernel ``K`` (sources x channels) by applying the inverse
to an identity "evoked". Each parcel is then one linear combination of the channels:

* ``mean_flip`` (fixed orientation only): mean of the parcel's sources after flipping
  signs so their normals agree (as :func:`mne.label_sign_flip`).
* ``pca`` (any orientation): the first principal component of the parcel's source
  components (3 per source when free) under the data covariance, scaled by
  ``1/sqrt(n_sources)`` so it is comparable to a mean; its sign is arbitrary but fixed
  (largest weight positive).

``auto`` picks ``mean_flip`` for a fixed-orientation forward and ``pca`` otherwise.
Parcel signals are in nA*m for ``MNE``/``eLORETA`` and unitless for ``dSPM``/``sLORETA``.
Everything is linear, so a 10-minute run never materialises the full source estimate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from brainxl.shards.config import SourceConfig
from brainxl.shards.errors import MissingFileError, SourceModelError

from brainxl.channels import canonical_name

if TYPE_CHECKING:
    import mne

_INDEX_COLUMNS = ("source", "source_index", "index", "vertex", "source_idx")
_PARCEL_COLUMNS = ("parcel", "parcel_name", "label", "name", "region")


def read_parcellation(
    path: Path, n_sources: int, names_table: Path | None = None
) -> tuple[list[str], np.ndarray]:
    """Read a source -> parcel table.

    Parameters
    ----------
    path : Path
        TSV with a source index column (``source``/``source_index``/``index``/``vertex``:
        0-based row of the forward's source list) and either a parcel name column
        (``parcel``/``label``/``name``) or ``parcel_index`` (0-based row of
        ``names_table``). Sources that are not listed belong to no parcel.
    n_sources : int
        Number of sources in the forward model.
    names_table : Path or None
        TSV with columns ``index`` and ``name`` (an atlas ``*_dseg.tsv``); its rows,
        sorted by ``index``, name the parcels of a ``parcel_index`` column.

    Returns
    -------
    names : list of str
        Parcel names (``parcel_index`` order, else numeric or first-appearance order).
    assignment : ndarray, shape (n_sources,), int
        Parcel row per source, -1 for none.
    """
    import pandas as pd

    if not path.is_file():
        raise MissingFileError(
            f"{path}: parcellation table not found; set source.parcellation in the data "
            "config to a TSV with columns 'source' and 'parcel'"
        )
    table = pd.read_csv(path, sep="\t")
    cols = {c.lower(): c for c in table.columns}
    idx_col = next((cols[c] for c in _INDEX_COLUMNS if c in cols), None)
    par_col = next((cols[c] for c in ("parcel_index", *_PARCEL_COLUMNS) if c in cols), None)
    if idx_col is None or par_col is None:
        raise SourceModelError(
            f"{path}: needs a source index column (one of {_INDEX_COLUMNS}) and a parcel "
            f"column (parcel_index or one of {_PARCEL_COLUMNS}); found {list(table.columns)}"
        )
    idx = table[idx_col].to_numpy()
    if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n_sources:
        raise SourceModelError(
            f"{path}: source indices must be integers in 0..{n_sources - 1} (the forward "
            f"model has {n_sources} sources); found range {idx.min()}..{idx.max()}. Use the "
            "parcellation made for this forward model"
        )
    assignment = np.full(n_sources, -1, dtype=int)
    if par_col.lower() == "parcel_index":
        rows = table[par_col].to_numpy().astype(int)
        n_parcels = int(rows.max()) + 1
        names = [f"parcel-{k}" for k in range(n_parcels)]
        if names_table is not None and names_table.is_file():
            lut = pd.read_csv(names_table, sep="\t")
            if not {"index", "name"} <= set(lut.columns) or len(lut) < n_parcels:
                raise SourceModelError(
                    f"{names_table}: needs columns 'index' and 'name' with a row for each "
                    f"of the {n_parcels} parcels of {path}"
                )
            names = lut.sort_values("index")["name"].astype(str).tolist()[:n_parcels]
        assignment[idx] = rows
        return names, assignment
    labels = table[par_col].astype(str).tolist()
    names = list(dict.fromkeys(labels))
    if all(n.lstrip("-").isdigit() for n in names):
        names = sorted(names, key=int)
    row = {n: i for i, n in enumerate(names)}
    assignment[idx] = [row[lab] for lab in labels]
    return names, assignment


def _kernel(
    raw: mne.io.BaseRaw, fwd: mne.Forward, cfg: SourceConfig
) -> tuple[np.ndarray, bool, np.ndarray]:
    """Return the inverse kernel (n_sources, n_ori, n_channels), fixed flag and normals."""
    import mne
    from mne.minimum_norm import apply_inverse, make_inverse_operator

    if cfg.noise_cov == "adhoc":
        cov = mne.make_ad_hoc_cov(raw.info, verbose=False)
    elif cfg.noise_cov == "empirical":
        cov = mne.compute_raw_covariance(raw, verbose=False)
    else:
        raise ValueError(f"source.noise_cov={cfg.noise_cov!r}; use 'adhoc' or 'empirical'")
    fixed: bool | str = "auto"
    if cfg.parcel_mode == "mean_flip" and fwd["src"].kind != "surface" and fwd["source_ori"] != 1:
        raise SourceModelError(
            "source.parcel_mode=mean_flip needs a fixed-orientation (surface) forward model; "
            "use parcel_mode=pca for volume or free-orientation models"
        )
    if cfg.parcel_mode == "mean_flip":
        fixed = True
    inv = make_inverse_operator(raw.info, fwd, cov, loose="auto", fixed=fixed, verbose=False)
    is_fixed = inv["source_ori"] == 1  # FIFFV_MNE_FIXED_ORI
    n_ch = len(inv["info"]["ch_names"])
    info = raw.copy().pick(inv["info"]["ch_names"]).info
    evoked = mne.EvokedArray(np.eye(n_ch), info, tmin=0.0, nave=1, verbose=False)
    stc = apply_inverse(
        evoked,
        inv,
        lambda2=1.0 / cfg.snr**2,
        method=cfg.method,
        pick_ori=None if is_fixed else "vector",
        verbose=False,
    )
    kern = stc.data[:, None, :] if is_fixed else stc.data
    return kern, bool(is_fixed), inv["source_nn"]


def _parcel_weights(
    kern: np.ndarray,
    normals: np.ndarray,
    assignment: np.ndarray,
    mode: str,
    weights: np.ndarray,
    sqrt_cov: np.ndarray | None,
) -> None:
    """Fill ``weights`` (n_parcels, n_channels): one linear combination per parcel."""
    for p in range(weights.shape[0]):
        members = np.flatnonzero(assignment == p)
        rows = kern[members].reshape(-1, kern.shape[2])  # (n_members * n_ori, n_channels)
        if mode == "mean_flip":
            nn = normals[members]
            _, _, vt = np.linalg.svd(nn, full_matrices=False)
            flip = np.sign(nn @ vt[0])
            flip[flip == 0] = 1.0
            weights[p] = flip @ rows / members.size
        else:
            assert sqrt_cov is not None
            u = np.linalg.svd(rows @ sqrt_cov, full_matrices=False)[0][:, 0]
            u = u * np.sign(u[np.argmax(np.abs(u))])
            weights[p] = u @ rows / np.sqrt(members.size)


def reconstruct_parcels(
    raw: mne.io.BaseRaw,
    forward: Path,
    parcellation: Path,
    cfg: SourceConfig,
    source: str,
    names_table: Path | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Reconstruct parcel time series from preprocessed sensor data.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Preprocessed data in SI units with canonical channel names (not modified).
    forward : Path
        ``*-fwd.fif`` forward solution; its channel names are matched canonically.
    parcellation : Path
        Source -> parcel table, see :func:`read_parcellation`.
    names_table : Path or None
        Parcel names for a ``parcel_index`` table, see :func:`read_parcellation`.
    cfg : SourceConfig
        Method, SNR, noise covariance and parcel mode.
    source : str
        The data file, named in error messages.

    Returns
    -------
    parcels : ndarray, shape (n_parcels, n_times), float64
        Same time grid as ``raw``.
    names : list of str
        Parcel names.
    assumptions : list of str
    """
    import mne

    if cfg.parcel_mode not in ("auto", "mean_flip", "pca"):
        raise ValueError(f"source.parcel_mode={cfg.parcel_mode!r}; use auto, mean_flip or pca")
    if not forward.is_file():
        raise MissingFileError(
            f"{forward}: forward model not found (needed for {source}); set source.forward "
            "in the data config or disable source.enabled"
        )
    fwd = mne.read_forward_solution(forward, verbose=False)
    notes: list[str] = []
    # Map the forward's channel names onto the recording's canonical names.
    fwd_by_canon: dict[str, str] = {}
    for name in fwd["info"]["ch_names"]:
        canon = canonical_name(name)
        if canon is not None:
            fwd_by_canon.setdefault(canon, name)
    common = [ch for ch in raw.ch_names if ch in fwd_by_canon]
    if len(common) < 3:
        raise SourceModelError(
            f"{forward}: only {len(common)} of the {len(raw.ch_names)} channels of {source} "
            "are in this forward model; use the forward model made for this montage"
        )
    missing = sorted(set(raw.ch_names) - set(common))
    if missing:
        notes.append(f"source reconstruction without {missing}: not in {forward.name}")
    fwd = mne.pick_channels_forward(
        fwd, include=[fwd_by_canon[ch] for ch in common], ordered=True, verbose=False
    )
    work = raw.copy().pick(common)
    work.rename_channels({ch: fwd_by_canon[ch] for ch in common if fwd_by_canon[ch] != ch})
    if "eeg" in work.get_channel_types():
        work.set_eeg_reference("average", projection=True, verbose=False)
    names, assignment = read_parcellation(parcellation, fwd["nsource"], names_table)
    kern, is_fixed, normals = _kernel(work, fwd, cfg)
    mode = cfg.parcel_mode
    if mode == "auto":
        mode = "mean_flip" if is_fixed else "pca"
    data = work.get_data()
    weights = np.zeros((len(names), kern.shape[2]))
    sqrt_cov = None
    if mode == "pca":
        # R C R^T = (R S)(R S)^T with C = S S^T: its top eigenvector is the first left
        # singular vector of R S, at (3 * n_members) x n_channels cost.
        evals, evecs = np.linalg.eigh(data @ data.T / data.shape[1])
        sqrt_cov = evecs * np.sqrt(np.clip(evals, 0.0, None))
    for p in range(len(names)):
        members = np.flatnonzero(assignment == p)
        if members.size == 0:
            raise SourceModelError(f"{parcellation}: parcel {names[p]!r} has no sources")
    _parcel_weights(kern, normals, assignment, mode, weights, sqrt_cov)
    scale = 1e9 if cfg.method in ("MNE", "eLORETA") else 1.0
    notes.append(
        f"parcels: {cfg.method} inverse (snr={cfg.snr}, {cfg.noise_cov} noise covariance, "
        f"{'fixed' if is_fixed else 'free'} orientation, {mode}) from {forward.name}"
    )
    return weights @ data * scale, names, notes
