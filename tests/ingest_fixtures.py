"""Tiny simultaneous EEG-fMRI BIDS datasets for the ingest tests (real files, real MNE).

``make_bids`` writes a dataset with mne-bids (BrainVision or EDF), BOLD as a 4D NIfTI
with an atlas and as ROI TSVs in derivatives, and (optionally) a sphere-model forward
solution with a source -> parcel table and the true parcel signals, laid out where the
simulator keeps them. Bad-input tests mutate copies of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

STANDARD = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8"]
STANDARD += ["P7", "P3", "Pz", "P4", "P8", "O1", "Oz", "O2", "FC1", "FC2", "CP1", "CP2"]
_LEGACY = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
SIM = "derivatives/brainxl-sim"
PARCEL_CENTRES = np.array(
    [[-0.045, 0.03, 0.07], [0.045, 0.03, 0.07], [-0.045, -0.04, 0.07], [0.045, -0.04, 0.07]]
)


def legacy_name(name: str) -> str:
    """``T7`` -> ``EEG T3-REF`` (TUH-style names of the same electrode)."""
    return f"EEG {_LEGACY.get(name, name)}-REF"


@dataclass
class SimInfo:
    """What ``make_bids`` wrote (paths relative to the root, truths as arrays)."""

    root: Path
    tr: float
    n_vols: int
    t0: float
    sfreq: float
    ephys: dict[str, Path] = field(default_factory=dict)  # run -> data file
    bold: dict[str, np.ndarray] = field(default_factory=dict)  # run -> (n_rois, n_vols)
    parcels: dict[str, np.ndarray] = field(default_factory=dict)  # run -> (4, n_samples)


def _bandlimited(rng: np.random.Generator, n: int, sfreq: float, lo: float, hi: float):
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, [lo, hi], btype="band", fs=sfreq, output="sos")
    x = sosfiltfilt(sos, rng.standard_normal(n))
    env = 1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.02, 0.08) * np.arange(n) / sfreq)
    return x / x.std() * env


def _forward(info, rng: np.random.Generator):
    import mne

    rr = np.concatenate([c + rng.uniform(-0.006, 0.006, (5, 3)) for c in PARCEL_CENTRES])
    nn = rng.standard_normal(rr.shape)
    nn /= np.linalg.norm(nn, axis=1, keepdims=True)
    src = mne.setup_volume_source_space(pos={"rr": rr, "nn": nn}, verbose=False)
    sphere = mne.make_sphere_model(r0=(0.0, 0.0, 0.04), head_radius=0.09, verbose=False)
    fwd = mne.make_forward_solution(info, trans=None, src=src, bem=sphere, verbose=False)
    return fwd, nn


def make_bids(
    root: Path,
    *,
    fmt: str = "BrainVision",
    legacy: bool = False,
    runs: tuple[str, ...] = ("1",),
    tr: float = 2.0,
    n_vols: int = 20,
    sfreq: float = 250.0,
    t0: float = 3.0,
    tail: float = 1.0,
    markers: bool = True,
    source: bool = False,
    rename: dict[str, str] | None = None,
    session: str | None = None,
    seed: int = 0,
) -> SimInfo:
    """Write a one-subject simultaneous EEG + BOLD BIDS dataset.

    Parameters
    ----------
    root : Path
        Dataset root (created).
    fmt : str
        ``"BrainVision"`` or ``"EDF"``.
    legacy : bool
        Channel names as ``EEG T3-REF`` instead of ``T7``, plus an ECG channel.
    runs : tuple of str
        Run labels of task ``rest``.
    tr, n_vols : float, int
        BOLD repetition time (s) and number of volumes.
    sfreq : float
        EEG sampling rate (Hz).
    t0 : float
        Onset of volume 0 in the EEG (s); markers ``Volume`` every TR when ``markers``.
    tail : float
        Seconds of EEG after the end of the last volume.
    source : bool
        Generate EEG from 4 parcels through a sphere-model forward and write the
        forward, the parcel table and the true parcel signals (``SimInfo.parcels``).
    rename : dict or None
        Channel renames applied just before writing (e.g. to an unknown name).
    session : str or None
        Session label (``ses-`` folders and entities) or none.
    seed : int

    Returns
    -------
    info : SimInfo
    """
    import mne
    import nibabel as nib
    from mne_bids import BIDSPath, write_raw_bids

    rng = np.random.default_rng(seed)
    root = Path(root)
    out = SimInfo(root=root, tr=tr, n_vols=n_vols, t0=t0, sfreq=sfreq)
    n = int(round((t0 + n_vols * tr + tail) * sfreq))
    info = mne.create_info(STANDARD, sfreq, "eeg")
    info.set_montage("colin27_1020")
    fwd = None
    if source:
        fwd, nn = _forward(info, rng)
        gain = fwd["sol"]["data"]  # (n_ch, 3 * n_src), free orientation
        lead = np.stack([gain[:, 3 * k : 3 * k + 3] @ nn[k] for k in range(len(nn))], axis=1)
        sdir = root / SIM / "sub-01" / "eeg"
        sdir.mkdir(parents=True, exist_ok=True)
        mne.write_forward_solution(
            sdir / "sub-01_desc-headmodel_fwd.fif", fwd, overwrite=True, verbose=False
        )
        (root / SIM / "atlas").mkdir(parents=True, exist_ok=True)
        (root / SIM / "atlas" / "atlas-brainxlsim_desc-sourceparcels.tsv").write_text(
            "source\tparcel\n" + "".join(f"{k}\tparcel-{k // 5 + 1}\n" for k in range(20))
        )
    # ROI atlas for the NIfTI route: 3 labels on a 6x6x6 grid.
    atlas = np.zeros((6, 6, 6), np.int16)
    atlas[:3, :, :3], atlas[3:, :, :3], atlas[:, :, 3:] = 1, 2, 3
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    adir = root / "derivatives" / "atlas"
    adir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(atlas, affine), adir / "atlas.nii.gz")
    (adir / "atlas_labels.tsv").write_text("index\tname\n1\tleft\n2\tright\n3\ttop\n")

    for run in runs:
        if source:
            truth = np.stack([_bandlimited(rng, n, sfreq, 6 + 3 * p, 10 + 3 * p) for p in range(4)])
            src_sig = np.repeat(truth, 5, axis=0) * 20e-9  # 20 nA*m per source
            data = lead @ src_sig
            data += rng.standard_normal(data.shape) * 0.05 * data.std()
            out.parcels[run] = truth
        else:
            data = rng.standard_normal((len(STANDARD), n)) * 10e-6
        raw = mne.io.RawArray(data, info.copy(), verbose=False)
        names = STANDARD
        if legacy:
            names = [legacy_name(c) for c in STANDARD]
            raw.rename_channels(dict(zip(STANDARD, names)))
            ecg = mne.io.RawArray(
                rng.standard_normal((1, n)) * 1e-4,
                mne.create_info(["ECG"], sfreq, "ecg"),
                verbose=False,
            )
            raw.add_channels([ecg])
            raw.set_montage(None)
        if rename:
            raw.rename_channels(rename)
        if markers:
            raw.set_annotations(mne.Annotations(t0 + tr * np.arange(n_vols), 0.0, "Volume"))
        bp = BIDSPath(
            subject="01", session=session, task="rest", run=run, datatype="eeg", root=root
        )
        write_raw_bids(raw, bp, format=fmt, allow_preload=True, overwrite=True, verbose=False)
        ext = {"BrainVision": ".vhdr", "EDF": ".edf"}[fmt]
        out.ephys[run] = bp.copy().update(suffix="eeg", extension=ext).fpath

        # BOLD: raw 4D NIfTI + sidecar, and an ROI TSV (observed + a noise-free decoy).
        bold_vox = 100 + rng.standard_normal((6, 6, 6, n_vols)).astype(np.float32)
        ses_dir = f"ses-{session}" if session else ""
        fdir = root / "sub-01" / ses_dir / "func"
        fdir.mkdir(parents=True, exist_ok=True)
        stem = f"sub-01{f'_ses-{session}' if session else ''}_task-rest_run-{run}"
        nib.save(nib.Nifti1Image(bold_vox, affine), fdir / f"{stem}_bold.nii.gz")
        (fdir / f"{stem}_bold.json").write_text(
            json.dumps({"RepetitionTime": tr, "TaskName": "rest"})
        )
        rois = np.stack([bold_vox[atlas == k].mean(axis=0) for k in (1, 2, 3)])
        out.bold[run] = rois
        rdir = root / "derivatives" / "roi" / "sub-01" / ses_dir / "func"
        rdir.mkdir(parents=True, exist_ok=True)
        for desc, vals in (("", rois), ("_desc-noisefree", rois * 0)):
            tsv = rdir / f"{stem}{desc}_timeseries.tsv"
            lines = ["left\tright\ttop"] + ["\t".join(f"{v:.6f}" for v in row) for row in vals.T]
            tsv.write_text("\n".join(lines) + "\n")
            tsv.with_suffix(".json").write_text(json.dumps({"SamplingFrequency": 1.0 / tr}))
    return out


def set_brainvision_channel(vhdr: Path, channel: int, value: float) -> None:
    """Overwrite every sample of one channel in a float32 multiplexed BrainVision file."""
    text = vhdr.read_text(encoding="utf-8")
    assert "BinaryFormat=IEEE_FLOAT_32" in text and "DataOrientation=MULTIPLEXED" in text
    n_ch = int(text.split("NumberOfChannels=")[1].split()[0])
    data = np.memmap(vhdr.with_suffix(".eeg"), dtype="<f4", mode="r+").reshape(-1, n_ch)
    data[:, channel] = value
    data.flush()


def make_meg_bids(root: Path, *, tr: float = 2.0, n_vols: int = 10, sfreq: float = 500.0) -> Path:
    """Write a one-subject MEG (FIF, 3 Neuromag triplets) + ROI TSV BIDS dataset.

    Magnetometers carry 100 fT and gradiometers 100 fT/cm standard deviation.
    """
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    rng = np.random.default_rng(1)
    names, types = [], []
    for pos in ("011", "012", "013"):
        names += [f"MEG {pos}2", f"MEG {pos}3", f"MEG {pos}1"]
        types += ["grad", "grad", "mag"]
    n = int(round((1.0 + n_vols * tr + 1.0) * sfreq))
    scale = np.array([1e-11 if t == "grad" else 1e-13 for t in types])[:, None]
    raw = mne.io.RawArray(
        rng.standard_normal((len(names), n)) * scale,
        mne.create_info(names, sfreq, types),
        verbose=False,
    )
    raw.set_annotations(mne.Annotations(1.0 + tr * np.arange(n_vols), 0.0, "TR"))
    raw.info["line_freq"] = 50.0
    bp = BIDSPath(subject="01", task="rest", run="1", datatype="meg", root=root)
    write_raw_bids(raw, bp, format="FIF", allow_preload=True, overwrite=True, verbose=False)
    rdir = root / "derivatives" / "roi" / "sub-01" / "func"
    rdir.mkdir(parents=True, exist_ok=True)
    tsv = rdir / "sub-01_task-rest_run-1_timeseries.tsv"
    rows = ["a\tb"] + [f"{v:.4f}\t{-v:.4f}" for v in rng.standard_normal(n_vols)]
    tsv.write_text("\n".join(rows) + "\n")
    tsv.with_suffix(".json").write_text(json.dumps({"RepetitionTime": tr}))
    return root
