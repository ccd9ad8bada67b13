"""A simulated subject's neural drive, re-drawn from its seed, and BOLD predicted from it.

:func:`simulate_dataset` writes the true parcel activity and the noise-free BOLD, but not
the band power that drives the BOLD. :func:`subject_truth` draws it again: every subject's
generator is a function of the dataset's seed and the subject's index, and the drive is
its first draws (:func:`~brainxl.simulator.dataset.draw_subject`). The re-drawn drive is
checked against the noise-free BOLD on disk, so a dataset from another simulator version
is refused rather than misread.

:meth:`SubjectTruth.bold` then gives the BOLD a predictor would output if it knew the
parcels' band power exactly: with the subject's own coupling and HRFs (this is the
noise-free BOLD), or with the population's average ones, which is all a model of the EEG
can know about a subject it never saw (coupling and HRFs are drawn independently of the
EEG).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainxl.metrics import SIM_DERIVATIVES
from brainxl.simulator.dataset import dataset_template, draw_subject, subject_rng
from brainxl.simulator.headmodel import TemplateHead
from brainxl.simulator.hemodynamics import (
    HRFSet,
    bold_drive,
    hrf_response,
    mean_coupling,
    mean_hrf_kernel,
)

#: Re-drawn noise-free BOLD must match the written one this closely (Pearson r per parcel);
#: float32 files round the written series at ~1e-7.
MATCH_R = 0.99999


@dataclass
class SubjectTruth:
    """The drive behind one simulated subject's BOLD.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    parcel_names : list of str
    band_power : dict of str to ndarray, shape (P, n_slow)
        Realised power of each band's oscillation per parcel.
    drive_sfreq : float
        Rate of ``band_power`` (Hz); sample i at ``(i + 0.5) / drive_sfreq`` s.
    coupling : dict of str to ndarray, shape (P,)
    hrfs : HRFSet
    vol_index_times : ndarray, shape (n_vols,)
        Volume times on the drive's time axis (s).
    """

    subject: str
    parcel_names: list[str]
    band_power: dict[str, np.ndarray]
    drive_sfreq: float
    coupling: dict[str, np.ndarray]
    hrfs: HRFSet
    vol_index_times: np.ndarray

    def bold(self, *, population: bool = False) -> np.ndarray:
        """BOLD at the volumes from the exact band power (scale arbitrary).

        Parameters
        ----------
        population : bool
            Use the population's mean coupling and mean HRF kernel instead of the subject's.

        Returns
        -------
        bold : ndarray, shape (P, n_vols)
        """
        P = len(self.parcel_names)
        dt = 1.0 / self.drive_sfreq
        if population:
            coupling, kernels = mean_coupling(P), mean_hrf_kernel(dt)
        else:
            coupling, kernels = self.coupling, self.hrfs.kernels(dt)[1]
        drive = bold_drive(self.band_power, coupling)
        return hrf_response(drive, self.drive_sfreq, kernels, self.vol_index_times)


def _params(deriv: Path, sub: str) -> dict:
    path = deriv / f"sub-{sub}" / f"sub-{sub}_desc-simulation_params.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; subject_truth needs a dataset written by `brainxl simulate`"
        )
    params = json.loads(path.read_text())
    missing = [
        k for k in ("seed", "montage", "sfreq", "tr", "lead_in", "n_volumes") if k not in params
    ]
    if missing:
        raise ValueError(
            f"{path}: lacks {', '.join(missing)} (written by an older brainxl); re-simulate "
            "the dataset"
        )
    return params


def _noise_free_path(deriv: Path, sub: str) -> Path:
    files = sorted(
        (deriv / f"sub-{sub}" / "func").glob(f"sub-{sub}_*_desc-noisefree_timeseries.tsv")
    )
    if len(files) != 1:
        raise ValueError(
            f"{deriv / f'sub-{sub}' / 'func'}: expected one *_desc-noisefree_timeseries.tsv, "
            f"found {len(files)}; subject_truth reads single-run datasets of `brainxl simulate`"
        )
    return files[0]


def _parcel_names(path: Path) -> list[str]:
    """The column names (parcels) of a simulator time-series TSV (its header only)."""
    with path.open() as fh:
        return fh.readline().rstrip("\n").split("\t")


def subject_truth(
    bids_root: str | Path, subject: str, template: TemplateHead | None = None
) -> SubjectTruth:
    """Re-draw one subject of a simulated dataset and check it against the files.

    Parameters
    ----------
    bids_root : str or Path
        A dataset written by :func:`~brainxl.simulator.simulate_dataset`.
    subject : str
        ``"01"`` or ``"sub-01"``.
    template : TemplateHead, optional
        The dataset's template head (built from the seed when omitted; pass it to re-draw
        several subjects without rebuilding it).

    Returns
    -------
    SubjectTruth

    Raises
    ------
    FileNotFoundError, ValueError
        Not a simulated dataset, or the re-drawn drive does not reproduce the noise-free
        BOLD on disk (written by another simulator version: re-simulate it).
    """
    root = Path(bids_root)
    deriv = root / "derivatives" / SIM_DERIVATIVES
    sub = subject.removeprefix("sub-")
    if not sub.isdigit():
        raise ValueError(f"sub-{sub}: `brainxl simulate` numbers its subjects (01, 02, ...)")
    params = _params(deriv, sub)
    path = _noise_free_path(deriv, sub)
    names = _parcel_names(path)
    written = np.loadtxt(path, delimiter="\t", skiprows=1, ndmin=2).T
    seed = int(params["seed"])
    if template is None:
        template = dataset_template(params["montage"], len(names), seed)
    if template.parcel_names != names:
        raise ValueError(f"{path}: parcels {names[:3]}... differ from the template's")
    meg = (root / f"sub-{sub}" / "meg").is_dir()
    draw = draw_subject(
        subject_rng(seed, int(sub) - 1),
        template,
        int(params["n_volumes"]),
        float(params["sfreq"]),
        float(params["tr"]),
        float(params["lead_in"]),
        meg,
    )
    truth = SubjectTruth(
        subject=sub,
        parcel_names=list(names),
        band_power=draw.activity.band_power,
        drive_sfreq=draw.drive_sfreq,
        coupling=draw.coupling,
        hrfs=draw.hrfs,
        vol_index_times=draw.vol_index_times,
    )
    own = truth.bold()
    r = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(own, written)])
    if own.shape != written.shape or not np.all(r >= MATCH_R):
        raise ValueError(
            f"{path}: re-drawing sub-{sub} from seed {seed} does not reproduce this noise-free "
            f"BOLD (lowest r {np.nanmin(r) if r.size else float('nan'):.6f}); the dataset was "
            "written by another brainxl version: re-simulate it with `brainxl simulate`"
        )
    return truth


def _first_subject(bids_root: str | Path) -> tuple[Path, str]:
    deriv = Path(bids_root) / "derivatives" / SIM_DERIVATIVES
    subjects = sorted(p.name for p in deriv.glob("sub-*") if p.is_dir())
    if not subjects:
        raise FileNotFoundError(f"{deriv}: no simulated subject; not a `brainxl simulate` dataset")
    return deriv, subjects[0].removeprefix("sub-")


def dataset_brain(bids_root: str | Path) -> TemplateHead:
    """The template head (brain, parcels, montage) a simulated dataset's subjects share.

    Rebuilt from the seed, montage and parcel count its ground truth records, e.g. to
    simulate a pretraining corpus of the same population
    (``simulate_eeg_corpus(..., brain=)``).

    Raises
    ------
    FileNotFoundError, ValueError
        ``bids_root`` is not a dataset written by ``brainxl simulate`` (named).
    """
    deriv, sub = _first_subject(bids_root)
    params = _params(deriv, sub)
    n_parcels = len(_parcel_names(_noise_free_path(deriv, sub)))
    return dataset_template(params["montage"], n_parcels, int(params["seed"]))


def template_gain(
    bids_root: str | Path, ch_names: list[str], template: TemplateHead | None = None
) -> np.ndarray:
    """Parcel gains of a head from the dataset's population, but not any subject's.

    The dataset's template head with unjittered electrodes and conductivities drawn from
    a generator no subject uses (``SeedSequence([seed, 2])``): the head model a user who
    knows the montage, but not the subject's head, would use.

    Parameters
    ----------
    bids_root : str or Path
        A dataset written by :func:`~brainxl.simulator.simulate_dataset`.
    ch_names : list of str
        EEG channels, in the order of the data the gains will be applied to.
    template : TemplateHead, optional
        The dataset's template head (built from the seed when omitted).

    Returns
    -------
    gain : ndarray, shape (len(ch_names), n_parcels)
        Sensor response to unit activity of each parcel, average-referenced over
        ``ch_names`` as the written EEG is.
    """
    from brainxl.simulator.headmodel import subject_head

    deriv, sub = _first_subject(bids_root)
    params = _params(deriv, sub)
    seed = int(params["seed"])
    if template is None:
        template = dataset_brain(bids_root)
    head = subject_head(
        template,
        float(params["sfreq"]),
        np.random.default_rng(np.random.SeedSequence([seed, 2])),
        jitter_mm=0.0,
    )
    names = list(head.info["ch_names"])
    missing = [c for c in ch_names if c not in names]
    if missing:
        raise ValueError(
            f"channels {missing[:3]} are not electrodes of the dataset's montage "
            f"{params['montage']} ({len(missing)} of {len(ch_names)})"
        )
    gain = head.parcel_gain[[names.index(c) for c in ch_names]]
    return gain - gain.mean(axis=0, keepdims=True)
