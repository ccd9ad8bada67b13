"""``simulate_dataset``: the whole simulated EEG-fMRI BIDS dataset, deterministic per seed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainxl.simulator import bids_io
from brainxl.simulator.activity import ParcelActivity, pink_noise, simulate_activity
from brainxl.simulator.headmodel import SubjectHead, TemplateHead, build_template, subject_head
from brainxl.simulator.hemodynamics import (
    HRF_LENGTH_S,
    HRFSet,
    bold_drive,
    sample_coupling,
    sample_hrfs,
    simulate_bold,
)
from brainxl.simulator.volume import BoldGrid, bold_image, make_grid, roi_means

CHANNEL_STYLES = ("standard", "legacy")
#: 10-10 names -> the old 10-20 names of clinical systems (TUH and others).
LEGACY_NAMES = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
VOLUME_MARKER = "Volume"
HRF_KERNEL_DT = 0.1


@dataclass
class SimulationSummary:
    """What :func:`simulate_dataset` wrote.

    Attributes
    ----------
    out : Path
        BIDS root.
    subjects : list of str
        Subject labels without prefix (``"01"``, ...).
    timings : dict of str to float
        Seconds spent per stage (``"template"``, ``"sub-01"``, ..., ``"total"``).
    noise_ceiling_mean : dict of str to float
        Mean over parcels of r(observed, noise-free BOLD) per subject.
    n_parcels, n_volumes : int
    sfreq, tr, lead_in : float
    fmt, channel_style, montage : str
    meg : bool
    n_channels : int
        EEG channels per subject.
    """

    out: Path
    subjects: list[str]
    timings: dict[str, float] = field(default_factory=dict)
    noise_ceiling_mean: dict[str, float] = field(default_factory=dict)
    n_parcels: int = 0
    n_volumes: int = 0
    sfreq: float = 0.0
    tr: float = 0.0
    lead_in: float = 0.0
    fmt: str = ""
    channel_style: str = ""
    montage: str = ""
    meg: bool = False
    n_channels: int = 0

    def format(self) -> str:
        """A short human-readable report."""
        lines = [
            f"simulated BIDS dataset: {self.out}",
            f"  {len(self.subjects)} subjects x {self.n_volumes} volumes (TR {self.tr:g} s), "
            f"{self.n_channels}-ch EEG ({self.montage}, {self.fmt}, {self.channel_style} names) "
            f"at {self.sfreq:g} Hz{' + MEG' if self.meg else ''}, {self.n_parcels} parcels",
        ]
        for sub in self.subjects:
            lines.append(
                f"  sub-{sub}: noise ceiling mean r = {self.noise_ceiling_mean[sub]:.3f} "
                f"({self.timings.get(f'sub-{sub}', 0.0):.1f} s)"
            )
        lines.append(f"  elapsed {self.timings.get('total', 0.0):.1f} s")
        return "\n".join(lines)


def legacy_name(name: str) -> str:
    """Clinical-style label of a 10-10 channel: ``T7`` -> ``EEG T3-REF``."""
    return f"EEG {LEGACY_NAMES.get(name, name)}-REF"


def dataset_template(montage: str, n_parcels: int, seed: int) -> TemplateHead:
    """The template head all subjects of ``simulate_dataset(seed=seed)`` share."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    return build_template(montage, n_parcels, rng=rng)


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of subject ``index`` (0-based) of ``simulate_dataset(seed=seed)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, 1, index]))


def _check_args(
    out: Path,
    n_subjects: int,
    minutes: float,
    n_parcels: int,
    sfreq: float,
    tr: float,
    fmt: str,
    channel_style: str,
    lead_in: float,
    task: str,
    overwrite: bool,
) -> None:
    if not 1 <= n_subjects <= 99:
        raise ValueError(f"n_subjects={n_subjects}: choose 1..99 subjects")
    if minutes * 60.0 < 4 * tr:
        raise ValueError(f"minutes={minutes}: the run must hold at least 4 volumes of TR={tr} s")
    if n_parcels < 1:
        raise ValueError(f"n_parcels={n_parcels}: choose at least 1 parcel")
    if sfreq < 100.0:
        raise ValueError(f"sfreq={sfreq}: use at least 100 Hz (gamma is simulated at ~40 Hz)")
    if tr <= 0:
        raise ValueError(f"tr={tr}: the repetition time must be positive")
    if fmt not in bids_io.FORMATS:
        raise ValueError(f"fmt={fmt!r}: choose one of {', '.join(bids_io.FORMATS)}")
    if channel_style not in CHANNEL_STYLES:
        raise ValueError(
            f"channel_style={channel_style!r}: choose one of {', '.join(CHANNEL_STYLES)}"
        )
    if lead_in < 0:
        raise ValueError(f"lead_in={lead_in}: must be >= 0 seconds")
    bids_io.check_task(task)
    bids_io.check_output(out, overwrite)


def simulate_dataset(
    out: str | Path,
    n_subjects: int = 4,
    minutes: float = 10.0,
    seed: int = 0,
    *,
    montage: str = "biosemi64",
    n_parcels: int = 64,
    sfreq: float = 250.0,
    tr: float = 2.0,
    fmt: str = "BrainVision",
    channel_style: str = "standard",
    meg: bool = False,
    lead_in: float = 20.0,
    task: str = "rest",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Simulate a simultaneous EEG-fMRI dataset and write it as BIDS.

    Parameters
    ----------
    out : str or Path
        BIDS root to create (must be empty or missing unless ``overwrite``).
    n_subjects : int
        Subjects ``"01"``..``"NN"``.
    minutes : float
        Duration of the BOLD run; the EEG starts ``lead_in`` s before the first volume
        and ends one TR after the last.
    seed : int
        Everything is a deterministic function of the arguments.
    montage : str
        Any MNE built-in montage (its channels are all simulated).
    n_parcels : int
        Parcels P (clusters of volume sources, shared by all subjects).
    sfreq : float
        EEG sampling rate (Hz).
    tr : float
        Repetition time (s).
    fmt : {"BrainVision", "EDF"}
        EEG file format.
    channel_style : {"standard", "legacy"}
        "legacy" writes clinical labels (``EEG T3-REF``).
    meg : bool
        Also write a 306-channel MEG recording (FIF) of the same sources.
    lead_in : float
        Seconds of EEG before the first volume.
    task : str
        BIDS task label.
    overwrite : bool
        Allow writing into a non-empty ``out`` (files of the same names are replaced).
    progress : callable, optional
        Called with one line per stage.

    Returns
    -------
    summary : SimulationSummary
    """
    out = Path(out)
    _check_args(
        out,
        n_subjects,
        minutes,
        n_parcels,
        sfreq,
        tr,
        fmt,
        channel_style,
        lead_in,
        task,
        overwrite,
    )
    say = progress or (lambda _msg: None)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    template = dataset_template(montage, n_parcels, seed)
    grid = make_grid(
        template.source_pos, template.parcel_of_source, template.r0, template.brain_radius
    )
    out.mkdir(parents=True, exist_ok=True)
    deriv = bids_io.write_derivative_description(out, seed)
    _write_atlas(deriv, template, grid)
    timings["template"] = time.perf_counter() - t_start
    say(
        f"template head model: {len(template.ch_names)} electrodes ({montage}), "
        f"{len(template.source_pos)} volume sources in {n_parcels} parcels, "
        f"BOLD grid {grid.shape} ({timings['template']:.1f} s)"
    )
    n_vols = int(round(minutes * 60.0 / tr))
    summary = SimulationSummary(
        out=out,
        subjects=[f"{i + 1:02d}" for i in range(n_subjects)],
        n_parcels=n_parcels,
        n_volumes=n_vols,
        sfreq=float(sfreq),
        tr=float(tr),
        lead_in=float(lead_in),
        fmt=fmt,
        channel_style=channel_style,
        montage=montage,
        meg=meg,
        n_channels=len(template.ch_names),
    )
    for i, sub in enumerate(summary.subjects):
        t0 = time.perf_counter()
        ceiling = _simulate_subject(
            subject_rng(seed, i),
            out,
            deriv,
            sub,
            template,
            grid,
            n_vols,
            sfreq,
            tr,
            lead_in,
            fmt,
            channel_style,
            meg,
            task,
            seed,
        )
        summary.noise_ceiling_mean[sub] = float(np.mean(ceiling))
        timings[f"sub-{sub}"] = time.perf_counter() - t0
        say(
            f"sub-{sub}: written, noise ceiling mean r = {np.mean(ceiling):.3f} "
            f"({timings[f'sub-{sub}']:.1f} s)"
        )
    bids_io.write_dataset_description(out, n_subjects, seed)
    timings["total"] = time.perf_counter() - t_start
    summary.timings = timings
    return summary


def _write_atlas(deriv: Path, template: TemplateHead, grid: BoldGrid) -> None:
    import nibabel as nib

    atlas = deriv / "atlas"
    atlas.mkdir(parents=True, exist_ok=True)
    stem = f"atlas-{bids_io.ATLAS}"
    nii = nib.Nifti1Image(grid.labels.astype(np.int16), grid.affine)
    nii.header.set_xyzt_units("mm")
    nii.header.set_qform(grid.affine, code=1)
    nii.header.set_sform(grid.affine, code=1)
    bids_io.save_nifti(nii, atlas / f"{stem}_dseg.nii.gz")
    names = template.parcel_names
    bids_io.write_tsv(
        atlas / f"{stem}_dseg.tsv", {"index": np.arange(1, len(names) + 1), "name": names}
    )
    c = template.centroids
    bids_io.write_tsv(
        atlas / f"{stem}_desc-centroids.tsv",
        {"name": names, "x": c[:, 0], "y": c[:, 1], "z": c[:, 2]},
    )
    bids_io.write_tsv(
        atlas / f"{stem}_desc-sourceparcels.tsv",
        {
            "source_index": np.arange(len(template.source_pos)),
            "parcel_index": template.parcel_of_source,
        },
    )
    o, p = template.orientations, template.source_pos
    bids_io.write_tsv(
        atlas / f"{stem}_desc-sources.tsv",
        {
            "source_index": np.arange(len(p)),
            "parcel_index": template.parcel_of_source,
            "x": p[:, 0],
            "y": p[:, 1],
            "z": p[:, 2],
            "ori_x": o[:, 0],
            "ori_y": o[:, 1],
            "ori_z": o[:, 2],
            "gain": template.gains,
        },
    )
    bids_io.write_json(
        atlas / f"{stem}_dseg.json",
        {
            "Description": "Parcels of the simulator: k-means clusters of the volume source "
            "space, labels 1..P on the BOLD grid (0 outside the brain). " + bids_io.SIMULATED_NOTE,
            "SpaceUnits": "mm (NIfTI); centroids and sources in metres, MNE head coordinates",
            "SourceActivity": "every source of a parcel carries the parcel time course times "
            "its gain, along its fixed orientation (desc-sources.tsv)",
        },
    )


def _brain_noise(
    rng: np.random.Generator, fwd_data: np.ndarray, n_times: int, sfreq: float, n_dipoles: int
) -> np.ndarray:
    """Spatially correlated background: the sensor covariance of random 1/f dipoles.

    Parameters
    ----------
    fwd_data : ndarray, shape (n_sensors, 3 * n_sources)
        Free-orientation leadfield.

    Returns
    -------
    noise : ndarray, shape (n_sensors, n_times), unit mean variance
    """
    n_src = fwd_data.shape[1] // 3
    idx = rng.choice(n_src, size=min(n_dipoles, n_src), replace=False)
    ori = rng.standard_normal((len(idx), 3))
    ori /= np.linalg.norm(ori, axis=1, keepdims=True)
    L = fwd_data.reshape(fwd_data.shape[0], n_src, 3)[:, idx, :]
    Lb = np.einsum("csk,sk->cs", L, ori)
    w, V = np.linalg.eigh(Lb @ Lb.T)
    mix = V * np.sqrt(np.clip(w, 0.0, None))
    z = pink_noise(rng, fwd_data.shape[0], n_times, sfreq, np.full(fwd_data.shape[0], 1.0))
    noise = mix @ z
    return noise / np.sqrt((noise**2).mean())


@dataclass
class SubjectDraw:
    """A subject's head, neural activity, coupling and HRFs: the first draws of its seed.

    Attributes
    ----------
    head : SubjectHead
    activity : ParcelActivity
        Parcel activity from ``n_burn`` samples before the EEG's first sample.
    coupling : dict of str to ndarray, shape (P,)
        Band-to-BOLD coupling per parcel.
    hrfs : HRFSet
    alpha_peak : float
        The subject's alpha peak frequency (Hz).
    n_burn, n_eeg : int
        Samples simulated before the EEG (HRF burn-in) and samples of the EEG.
    drive_sfreq : float
        Rate of the band power (and the BOLD drive), Hz.
    vol_index_times : ndarray, shape (n_vols,)
        Volume times on the drive's time axis (s).
    """

    head: SubjectHead
    activity: ParcelActivity
    coupling: dict[str, np.ndarray]
    hrfs: HRFSet
    alpha_peak: float
    n_burn: int
    n_eeg: int
    drive_sfreq: float
    vol_index_times: np.ndarray


def draw_subject(
    rng: np.random.Generator,
    template: TemplateHead,
    n_vols: int,
    sfreq: float,
    tr: float,
    lead_in: float,
    meg: bool,
) -> SubjectDraw:
    """Draw what drives a subject's EEG and BOLD, in the order :func:`simulate_dataset` does.

    Parameters
    ----------
    rng : numpy.random.Generator
        The subject's generator, fresh (:func:`subject_rng`).
    template : TemplateHead
    n_vols : int
    sfreq, tr, lead_in : float
    meg : bool
        Whether the dataset has MEG (the head then models the helmet too).

    Returns
    -------
    SubjectDraw
    """
    head = subject_head(template, sfreq, rng, meg=meg)
    alpha_peak = float(rng.uniform(8.5, 11.5))
    n_eeg = int(round((lead_in + n_vols * tr) * sfreq))
    n_burn = int(round(HRF_LENGTH_S * sfreq))
    decim = max(1, int(round(sfreq / 10.0)))
    act = simulate_activity(
        rng, template.centroids, template.r0, n_burn + n_eeg, sfreq, alpha_peak, decim=decim
    )
    coupling = sample_coupling(rng, template.n_parcels)
    hrfs = sample_hrfs(rng, template.n_parcels)
    return SubjectDraw(
        head=head,
        activity=act,
        coupling=coupling,
        hrfs=hrfs,
        alpha_peak=alpha_peak,
        n_burn=n_burn,
        n_eeg=n_eeg,
        drive_sfreq=sfreq / decim,
        vol_index_times=n_burn / sfreq + lead_in + np.arange(n_vols) * tr,
    )


def _simulate_subject(
    rng: np.random.Generator,
    out: Path,
    deriv: Path,
    sub: str,
    template: TemplateHead,
    grid: BoldGrid,
    n_vols: int,
    sfreq: float,
    tr: float,
    lead_in: float,
    fmt: str,
    channel_style: str,
    meg: bool,
    task: str,
    seed: int,
) -> np.ndarray:
    """Simulate and write one subject; return the per-parcel noise ceiling, shape (P,)."""
    import mne

    run = "1"
    P = template.n_parcels
    draw = draw_subject(rng, template, n_vols, sfreq, tr, lead_in, meg)
    head, act, coupling, hrfs = draw.head, draw.activity, draw.coupling, draw.hrfs
    n_burn, n_eeg = draw.n_burn, draw.n_eeg
    vol_times = np.arange(n_vols) * tr
    bold = simulate_bold(
        rng,
        bold_drive(act.band_power, coupling),
        draw.drive_sfreq,
        hrfs,
        draw.vol_index_times,
        vol_times,
    )
    img, base = bold_image(rng, grid, bold.observed)
    roi = roi_means(img, grid.labels, P)
    base_roi = roi_means(base[..., None], grid.labels, P)
    clean = base_roi * (1.0 + bold.clean / 100.0)
    ceiling = np.array([np.corrcoef(roi[p], clean[p])[0, 1] for p in range(P)])

    # electrophysiology: parcel activity (A*m) through the subject's leadfield
    src = act.activity[:, n_burn:]
    del act
    is_eeg = np.array([t == "eeg" for t in head.info.get_channel_types()])
    G = head.parcel_gain
    target_rms = 17e-6 * float(rng.lognormal(0.0, 0.15))
    sig = G[is_eeg] @ src
    sig -= sig.mean(axis=0, keepdims=True)
    q = target_rms / np.sqrt((sig**2).mean())  # dipole moment (A*m) per unit activity
    sig *= q
    fwd_data = head.fwd["sol"]["data"]
    rows = {name: k for k, name in enumerate(head.fwd["sol"]["row_names"])}
    eeg_names = [n for n, e in zip(head.info["ch_names"], is_eeg) if e]
    eeg_rows = [rows[n] for n in eeg_names]
    bnoise = _brain_noise(rng, fwd_data[eeg_rows], n_eeg, sfreq, 300)
    eeg = sig + 0.35 * target_rms * bnoise + 1.0e-6 * rng.standard_normal(sig.shape)
    del sig, bnoise
    eeg -= eeg.mean(axis=0, keepdims=True)  # average reference
    eeg_rms = float(np.sqrt((eeg**2).mean()))

    onsets = lead_in + vol_times
    annotations = mne.Annotations(onsets, np.zeros(n_vols), [VOLUME_MARKER] * n_vols)
    info_eeg = mne.pick_info(head.info, np.flatnonzero(is_eeg))
    raw = mne.io.RawArray(eeg, info_eeg, verbose=False)
    raw.set_annotations(annotations)
    raw.info["line_freq"] = 50.0
    if channel_style == "legacy":
        raw.rename_channels({n: legacy_name(n) for n in raw.ch_names})
    bids_io.write_raw(raw, out, sub, task, run, fmt, "eeg")
    del raw, eeg
    if meg:
        from brainxl.simulator.meg import sensor_noise

        meg_idx = np.flatnonzero(~is_eeg)
        info_meg = mne.pick_info(head.info, meg_idx)
        megdat = q * (G[~is_eeg] @ src)
        types = info_meg.get_channel_types()
        meg_rows = [rows[head.info["ch_names"][k]] for k in meg_idx]
        bn = _brain_noise(rng, fwd_data[meg_rows], n_eeg, sfreq, 300)
        for kind in ("mag", "grad"):
            sel = np.array([t == kind for t in types])
            scale = np.sqrt((megdat[sel] ** 2).mean() / (bn[sel] ** 2).mean())
            megdat[sel] += 0.35 * scale * bn[sel]
        megdat += sensor_noise(rng, megdat, types)
        raw_meg = mne.io.RawArray(megdat, info_meg, verbose=False)
        raw_meg.set_annotations(annotations)
        raw_meg.info["line_freq"] = 50.0
        bids_io.write_raw(raw_meg, out, sub, task, run, "FIF", "meg")
        del raw_meg, megdat, bn

    bids_io.write_bold(out, sub, task, run, img, grid.affine, tr)
    del img
    _write_subject_derivatives(
        deriv,
        sub,
        task,
        run,
        template,
        head,
        src * q,
        roi,
        clean,
        ceiling,
        hrfs,
        coupling,
        {
            "Description": bids_io.SIMULATED_NOTE,
            "seed": seed,
            "alpha_peak_hz": draw.alpha_peak,
            "eeg_rms_uV": eeg_rms * 1e6,
            "eeg_reference": "average",
            "dipole_moment_scale_Am": float(q),
            "conductivities_S_per_m": list(head.sigmas),
            "sfreq": sfreq,
            "tr": tr,
            "lead_in": lead_in,
            "n_volumes": n_vols,
            "first_volume_sample": int(round(lead_in * sfreq)),
            "montage": template.montage_name,
            "channel_style": channel_style,
        },
        tr,
        sfreq,
    )
    return ceiling


def _write_subject_derivatives(
    deriv: Path,
    sub: str,
    task: str,
    run: str,
    template: TemplateHead,
    head: SubjectHead,
    sources: np.ndarray,
    roi: np.ndarray,
    clean: np.ndarray,
    ceiling: np.ndarray,
    hrfs: HRFSet,
    coupling: dict[str, np.ndarray],
    params: dict,
    tr: float,
    sfreq: float,
) -> None:
    import mne

    names = template.parcel_names
    sdir = deriv / f"sub-{sub}"
    func = sdir / "func"
    eegdir = sdir / "eeg"
    func.mkdir(parents=True, exist_ok=True)
    eegdir.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_task-{task}_run-{run}"
    atlas = f"atlas-{bids_io.ATLAS}"
    for desc, data, what in (
        ("", roi, "observed ROI BOLD: mean of the atlas voxels of the BOLD NIfTI"),
        ("_desc-noisefree", clean, "noise-free ROI BOLD (same units as the observed)"),
    ):
        bids_io.write_matrix_tsv(func / f"{stem}_{atlas}{desc}_timeseries.tsv", names, data.T)
        bids_io.write_json(
            func / f"{stem}_{atlas}{desc}_timeseries.json",
            {
                "SamplingFrequency": 1.0 / tr,
                "StartTime": 0.0,
                "Units": "arbitrary (scanner intensity, voxel baseline ~1000)",
                "Description": f"{what}. " + bids_io.SIMULATED_NOTE,
            },
        )
    bids_io.write_tsv(func / f"{stem}_desc-noiseceiling_stats.tsv", {"name": names, "r": ceiling})
    bids_io.write_json(
        func / f"{stem}_desc-noiseceiling_stats.json",
        {"r": "Pearson r between observed and noise-free ROI BOLD of each parcel"},
    )
    bids_io.write_tsv(
        sdir / f"sub-{sub}_desc-hrf_params.tsv",
        {
            "name": names,
            "peak_s": hrfs.peak_times(),
            "undershoot_s": hrfs.undershoot_times(),
            "gamma_peak_mode_s": hrfs.peak,
            "gamma_undershoot_mode_s": hrfs.undershoot,
            "dispersion_s": hrfs.dispersion,
            "undershoot_dispersion_s": hrfs.undershoot_dispersion,
            "undershoot_ratio": hrfs.ratio,
        },
    )
    t, k = hrfs.kernels(HRF_KERNEL_DT)
    bids_io.write_matrix_tsv(
        sdir / f"sub-{sub}_desc-hrf_kernels.tsv",
        ["time_s", *names],
        np.column_stack([t, k.T]),
    )
    bids_io.write_tsv(
        sdir / f"sub-{sub}_desc-coupling_params.tsv",
        {"name": names, **{band: coupling[band] for band in ("alpha", "beta", "gamma")}},
    )
    bids_io.write_json(sdir / f"sub-{sub}_desc-simulation_params.json", params)
    np.save(eegdir / f"{stem}_desc-sources_timeseries.npy", sources.astype(np.float32))
    bids_io.write_json(
        eegdir / f"{stem}_desc-sources_timeseries.json",
        {
            "SamplingFrequency": sfreq,
            "Units": "A*m (parcel dipole moment per unit gain)",
            "Shape": "(n_parcels, n_times), same time axis as the EEG file",
            "Description": "true parcel neural activity. " + bids_io.SIMULATED_NOTE,
        },
    )
    mne.write_forward_solution(
        eegdir / f"sub-{sub}_desc-headmodel_fwd.fif", head.fwd, overwrite=True, verbose=False
    )
    bids_io.write_json(
        eegdir / f"sub-{sub}_desc-headmodel_fwd.json",
        {
            "Description": "the subject's forward solution used to simulate the sensors. "
            + bids_io.SIMULATED_NOTE,
            "SourceOrientation": "free (3 columns per volume source, x/y/z in head "
            "coordinates); the simulated dipoles use the fixed orientations and gains of "
            f"atlas/atlas-{bids_io.ATLAS}_desc-sources.tsv",
            "ConductorModel": "sphere (brain, CSF, skull, scalp) with these conductivities",
            "Conductivities_S_per_m": list(head.sigmas),
            "EEGReference": "reference-free leadfield; the written EEG is average-referenced, "
            "so apply an average-reference projector before inverse modelling",
            "Channels": list(head.info["ch_names"]),
        },
    )
