"""Headroom on the simulated dataset: the band-power ridge from sensors against the same
ridge from the simulator's true parcel activity, per LOSO fold, beside the noise ceiling.

The baseline's read-out (:func:`brainxl.baselines.run_ridge_baseline`: log band power in
four HRF lag bins, penalty chosen by leave-one-subject-out on the training subjects) is
fitted twice on each fold's training subjects: once on the EEG as ``brainxl shard``
preprocesses it by default (read again from the BIDS files, so that both inputs share one
time grid), and once on the true parcel activity the simulator saved
(``derivatives/brainxl-sim/sub-XX/eeg/*_desc-sources_timeseries.npy``), cut to that
grid. The second is what a perfect unmixing of the sensors would give the same read-out:
a reference for how much of the BOLD a model of the EEG could still reach
(``r(sources) - r(model)``), next to the noise ceiling (observed against noise-free BOLD),
which no model reaches.

Two references need no fitting: the BOLD predicted from the held-out subject's exact band
power with the population's average coupling and HRF (re-drawn by
:func:`brainxl.simulator.truth.subject_truth`; with the subject's own it is the noise
ceiling), the most a model can know of an unseen subject; and a learning-free read-out of
the sensors the models see (:func:`beamformer_r`), with filters built from the held-out
recording's covariance or, fixed before that subject is seen as a model's are, from the
training subjects' covariances pooled.

Usage::

    python experiments/source_ridge.py --bids data/quickstart/bids \\
        --shards data/quickstart/shards --folds 01,05,07,08,10

``--folds all`` holds out every subject of ``--shards`` in turn.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# the sibling experiment scripts (fmt_interval) import by name, also when loaded by path
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Parcel activity is saved in A*m; in nA*m its band power stays far above the 1e-20 floor
#: of the ridge features (log10 of the power).
SOURCE_SCALE = 1e9


def source_recording(rec: Any, bids_root: Path) -> Any:
    """``rec`` with its sensors replaced by the true parcel activity on the same grid.

    Parameters
    ----------
    rec : shards.ingest.recording.Recording
        A run of a brainxl-simulated dataset as :func:`load_subject` returns it.
    bids_root : Path
        The simulated dataset, holding ``derivatives/brainxl-sim``.

    Returns
    -------
    Recording
        ``ephys`` of shape (n_parcels, n_times) at ``rec.sfreq``, starting ``rec.lead_in``
        s before volume 0 like the sensors; ``ch_names`` are the parcel indices.

    Raises
    ------
    FileNotFoundError
        The dataset holds no true parcel activity for this run (not simulated by brainxl).
    ValueError
        The saved activity does not cover the run's window.
    """
    import mne

    d = bids_root / "derivatives" / "brainxl-sim" / f"sub-{rec.subject}" / "eeg"
    pattern = f"sub-{rec.subject}_task-{rec.task}_run-{rec.run}_desc-sources_timeseries.npy"
    found = sorted(d.glob(pattern))
    if not found:
        raise FileNotFoundError(
            f"{d / pattern}: no true parcel activity; this tool needs a dataset made by "
            "`brainxl simulate`"
        )
    sfreq = float(json.loads(found[0].with_suffix(".json").read_text())["SamplingFrequency"])
    act = np.load(found[0]).astype(np.float64)
    if sfreq != rec.sfreq:  # the EEG was resampled to rec.sfreq in the same way
        act = mne.filter.resample(act, up=rec.sfreq, down=sfreq, verbose=False)
    # the file's time axis is the EEG file's; the recording starts lead_in s before volume 0
    start = int(round((float(rec.extra["volume0_s"]) - rec.lead_in) * rec.sfreq))
    n = rec.ephys.shape[1]
    if start < 0 or start + n > act.shape[1]:
        raise ValueError(
            f"{found[0]}: {act.shape[1]} samples at {rec.sfreq:g} Hz do not cover samples "
            f"{start}..{start + n} of the run; re-simulate the dataset"
        )
    return replace(
        rec,
        ephys=(act[:, start : start + n] * SOURCE_SCALE).astype(np.float32),
        ch_names=[str(i) for i in range(act.shape[0])],
        ch_types=["eeg"] * act.shape[0],
    )


def unmixed(rec: Any, unmixing: np.ndarray) -> Any:
    """``rec`` with its channels, each z-scored over the run, replaced by ``unmixing @ x``."""
    x = rec.ephys.astype(np.float64)
    x = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    comps = unmixing @ x
    return replace(rec, ephys=comps.astype(np.float32),
                   ch_names=[f"IC{k}" for k in range(len(comps))],
                   ch_types=["eeg"] * len(comps))  # fmt: skip


def roi_order(parcel_names: list[str], roi_names: list[str]) -> list[int]:
    """Index of each ROI among the simulation's parcels (the ROIs are its parcels)."""
    missing = [n for n in roi_names if n not in parcel_names]
    if missing:
        raise ValueError(f"ROIs {missing[:3]} are not parcels of the simulation")
    return [parcel_names.index(n) for n in roi_names]


def drive_oracle_r(truth: Any, feats: Any, roi_names: list[str], population: bool) -> np.ndarray:
    """r per ROI of BOLD predicted from the subject's exact band power, on the scored TRs.

    Parameters
    ----------
    truth : brainxl.simulator.truth.SubjectTruth
        The held-out subject's re-drawn drive (:func:`~brainxl.simulator.truth.subject_truth`).
    feats : brainxl.baselines.SubjectFeatures
        The subject's scored TRs (``tr_index``) and targets (``Y``, as the models see them).
    roi_names : list of str
    population : bool
        Population-mean coupling and HRF (what a model can know of an unseen subject)
        rather than the subject's own (the noise-free BOLD).

    Returns
    -------
    ndarray, shape (n_rois,)
    """
    from brainxl import metrics as bm

    order = roi_order(truth.parcel_names, roi_names)
    pred = truth.bold(population=population)[order][:, feats.tr_index]
    return bm.pearson_per_roi(pred.T, feats.Y)


#: Bands the simulator's oscillations fall in (``brainxl.simulator.activity.BANDS`` with the
#: spread of their centres; alpha over the clipped range of the parcels' alpha peaks).
READOUT_BANDS = {"alpha": (7.5, 13.0), "beta": (15.0, 25.0), "gamma": (30.0, 50.0)}
#: Diagonal loading of the band covariance, as a fraction of its mean eigenvalue.
LCMV_REG = 0.05


def band_signals(rec: Any) -> dict[str, np.ndarray]:
    """The recording's channels band-passed to each band of :data:`READOUT_BANDS`."""
    from scipy.signal import butter, sosfiltfilt

    x = rec.ephys.astype(np.float64)
    return {
        band: sosfiltfilt(butter(4, [lo, hi], btype="band", fs=rec.sfreq, output="sos"), x, axis=1)
        for band, (lo, hi) in READOUT_BANDS.items()
    }


def band_covariances(signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per band, the channel covariance of :func:`band_signals` divided by its trace.

    Divided by the trace so that subjects recorded at other scales weigh alike when
    covariances are pooled over subjects (an LCMV filter is invariant to the scale).
    """
    out = {}
    for band, xb in signals.items():
        cov = xb @ xb.T
        out[band] = cov / np.trace(cov)
    return out


def beamformer_r(
    rec: Any,
    feats: Any,
    gain: np.ndarray,
    parcel_names: list[str],
    roi_names: list[str],
    covs: dict[str, np.ndarray] | None = None,
    signals: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """r per ROI of a learning-free read-out of the sensors, on the scored TRs.

    Each band of :data:`READOUT_BANDS` is band-passed, every parcel's activity in it is
    estimated by a unit-gain LCMV beamformer (written here: MNE's ``make_lcmv`` needs a
    source-space forward model, these are one gain vector per parcel) on that band's
    covariance over the whole recording (no BOLD is read), and its power in 0.1-s blocks
    becomes the BOLD drive with the population's mean coupling, convolved with the mean
    HRF: no parameter is fitted to any subject's BOLD.

    Parameters
    ----------
    rec : shards.ingest.recording.Recording
        The held-out subject's run as the models read it (one run).
    feats : brainxl.baselines.SubjectFeatures
        Its scored TRs (``tr_index``) and targets (``Y``).
    gain : ndarray, shape (n_channels, n_parcels)
        Parcel gains on ``rec.ch_names`` (:func:`brainxl.simulator.truth.template_gain`).
    parcel_names : list of str
        The parcels of ``gain``'s columns.
    roi_names : list of str
        ROI order of ``feats.Y``.
    covs : dict of str to ndarray, optional
        Per band, the covariance to build the filters from instead of the recording's own
        (e.g. the training subjects' :func:`band_covariances`, averaged): then the filters
        are fixed before the held-out subject is seen, as a model's learned filters are.
    signals : dict of str to ndarray, optional
        ``rec``'s :func:`band_signals`, when the caller has them already.

    Returns
    -------
    ndarray, shape (n_rois,)
    """
    from brainxl import metrics as bm
    from brainxl.simulator.hemodynamics import (
        bold_drive,
        hrf_response,
        mean_coupling,
        mean_hrf_kernel,
    )

    decim = max(1, int(round(rec.sfreq / 10.0)))
    drive_sfreq = rec.sfreq / decim
    power = {}
    for band, xb in (band_signals(rec) if signals is None else signals).items():
        cov = xb @ xb.T / xb.shape[1] if covs is None else covs[band]
        cov = cov + LCMV_REG * np.trace(cov) / len(cov) * np.eye(len(cov))
        cg = np.linalg.solve(cov, gain)
        y = (cg / np.einsum("cp,cp->p", gain, cg)).T @ xb
        n = y.shape[1] // decim * decim
        power[band] = (y[:, :n] ** 2).reshape(len(y), -1, decim).mean(axis=2)
    P = gain.shape[1]
    vol_times = rec.lead_in + np.arange(rec.bold.shape[1]) * rec.tr
    pred = hrf_response(
        bold_drive(power, mean_coupling(P)),
        drive_sfreq,
        mean_hrf_kernel(1.0 / drive_sfreq),
        vol_times,
    )
    order = roi_order(parcel_names, roi_names)
    return bm.pearson_per_roi(pred[order][:, feats.tr_index].T, feats.Y)


def fold_rows(
    bids_root: Path,
    shards: Path,
    folds: list[str],
    config: str = "quickstart",
    overrides: list[str] | None = None,
    unmixing: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Sensor ridge, source ridge and noise ceiling of each fold's held-out subject.

    Parameters
    ----------
    bids_root, shards : Path
        The simulated dataset and its shards (the shards give the fold split).
    folds : list of str
        Held-out subjects.
    config : str
        Training config whose fold split (training subjects) and reader window are used.
    overrides : list of str, optional
        Dotted overrides of that config.
    unmixing : ndarray, shape (k, n_channels), optional
        Also the same ridge on these components of the z-scored channels (``ica_r``;
        e.g. :func:`brainxl.models.unmixing.fit_unmixing` of a pretraining corpus).

    Returns
    -------
    list of dict
        Per fold: ``fold``, ``train`` (subjects), ``eeg_r``, ``source_r``,
        ``beamformer_r`` (:func:`beamformer_r`), ``beamformer_fixed_r`` (its filters from
        the training subjects' covariances, pooled), ``oracle_pop_r`` and ``oracle_own_r``
        (:func:`drive_oracle_r`), ``ceiling`` (means over ROIs), the same per ROI
        (``<kind>_roi_r``, ``ceiling_roi``) and ``roi_names``.
    """
    from brainxl.distrib.config import load_config
    from brainxl.distrib.data import config_split
    from brainxl.shards.config import IngestConfig
    from brainxl.shards.ingest.bids import load_subject

    from brainxl import metrics as bm
    from brainxl.baselines import features_from_recordings, fit_and_score
    from brainxl.simulator.truth import subject_truth, template_gain

    def cfg_of(fold: str) -> Any:
        return load_config(
            config, [f"data.shards={shards}", f"data.test_subject={fold}", *(overrides or [])]
        )

    window_s = float(cfg_of(folds[0]).data.reader.window_s)
    n_seg = max(1, int(window_s // 4))  # as brainxl evaluate: 4 s lag bins
    kinds = ("eeg", "source") if unmixing is None else ("eeg", "source", "ica")
    feats: dict[str, dict[str, Any]] = {k: {} for k in kinds}
    rows, roi_names = [], None
    gains: dict[tuple[str, ...], np.ndarray] = {}  # template gains per channel list
    held_out: dict[str, list[Any]] = {}  # runs of the folds' subjects, until their fold
    covs: dict[str, tuple[tuple[str, ...], dict[str, np.ndarray]]] = {}  # per subject
    for fold in folds:
        split = config_split(cfg_of(fold))
        for s in [*split.train, fold]:
            if s in feats["eeg"]:
                continue
            recs = load_subject(bids_root, s, IngestConfig())
            if s in folds:
                held_out[s] = recs
            roi_names = recs[0].roi_names
            run_covs = [band_covariances(band_signals(r)) for r in recs]
            covs[s] = (tuple(recs[0].ch_names), {b: np.mean([c[b] for c in run_covs], axis=0)
                                                  for b in READOUT_BANDS})  # fmt: skip
            feats["eeg"].update(features_from_recordings(recs, window_s, n_segments=n_seg))
            srcs = [source_recording(r, bids_root) for r in recs]
            feats["source"].update(features_from_recordings(srcs, window_s, n_segments=n_seg))
            if unmixing is not None:
                comps = [unmixed(r, unmixing) for r in recs]
                feats["ica"].update(features_from_recordings(comps, window_s, n_segments=n_seg))
        ceiling = bm.load_noise_ceiling(bids_root, fold)
        row: dict[str, Any] = {"fold": fold, "train": list(split.train), "roi_names": roi_names}
        for kind in kinds:
            res = fit_and_score(
                {t: feats[kind][t] for t in split.train},
                {fold: feats[kind][fold]},
                roi_names,
                noise_ceilings={fold: ceiling},
            )
            row[f"{kind}_r"] = float(res.summary.r.mean)
            row[f"{kind}_roi_r"] = np.asarray(res.summary.per_subject[0].r, dtype=float)
        truth = subject_truth(bids_root, fold)
        for kind, population in (("oracle_pop", True), ("oracle_own", False)):
            roi_r = drive_oracle_r(truth, feats["eeg"][fold], roi_names, population)
            row[f"{kind}_r"] = float(np.mean(roi_r))
            row[f"{kind}_roi_r"] = roi_r
        runs = held_out.pop(fold)
        if len(runs) != 1:
            raise ValueError(f"sub-{fold}: {len(runs)} runs; the read-outs take one run")
        names = tuple(runs[0].ch_names)
        if names not in gains:
            gains[names] = template_gain(bids_root, list(names))
        signals = band_signals(runs[0])  # once for both read-outs
        row["beamformer_roi_r"] = beamformer_r(
            runs[0], feats["eeg"][fold], gains[names], truth.parcel_names, roi_names,
            signals=signals,
        )  # fmt: skip
        row["beamformer_r"] = float(np.mean(row["beamformer_roi_r"]))
        other = [t for t in split.train if covs[t][0] != names]
        if other:
            raise ValueError(
                f"sub-{other[0]} has other channels than sub-{fold}; the fixed beamformer "
                "pools the training subjects' covariances over one montage"
            )
        pooled = {b: np.mean([covs[t][1][b] for t in split.train], axis=0) for b in READOUT_BANDS}
        row["beamformer_fixed_roi_r"] = beamformer_r(
            runs[0], feats["eeg"][fold], gains[names], truth.parcel_names, roi_names, pooled,
            signals,
        )  # fmt: skip
        row["beamformer_fixed_r"] = float(np.mean(row["beamformer_fixed_roi_r"]))
        row["ceiling"] = float(np.mean(list(ceiling.values()))) if ceiling else float("nan")
        row["ceiling_roi"] = bm.ceiling_array(ceiling, roi_names) if ceiling else None
        rows.append(row)
    return rows


#: Table columns: key of :func:`fold_rows` and header.
COLUMNS = (
    ("eeg", "sensor ridge r"),
    ("source", "source ridge r"),
    ("ica", "ICA components ridge r"),  # with --unmixing only
    ("beamformer", "beamformer read-out r"),
    ("beamformer_fixed", "beamformer, training subjects' covariance r"),
    ("oracle_pop", "exact drive, average subject r"),
    ("oracle_own", "exact drive, own subject r"),
)


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The :data:`COLUMNS` the rows hold."""
    have = set(rows[0]) if rows else set()
    return [(k, h) for k, h in COLUMNS if not rows or {f"{k}_r", f"{k}_roi_r"} & have]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`fold_rows`, with the mean and 95% t-interval over folds."""
    from finetune_table import fmt_interval

    shown = columns(rows)
    heads = [h for _, h in shown]
    out = [
        f"| held-out subject | {' | '.join(heads)} | source - sensor | noise ceiling |",
        "|---" * (len(heads) + 3) + "|",
    ]
    for r in rows:
        vals = " | ".join(f"{r[f'{k}_r']:.3f}" for k, _ in shown)
        out.append(
            f"| {r['fold']} | {vals} | {r['source_r'] - r['eeg_r']:+.3f} | {r['ceiling']:.3f} |"
        )
    cols = [[r[f"{k}_r"] for r in rows] for k, _ in shown]
    cols += [[r["source_r"] - r["eeg_r"] for r in rows], [r["ceiling"] for r in rows]]
    signs = [""] * len(shown) + ["+", ""]
    out.append("| mean [95% t] | " + " | ".join(map(fmt_interval, cols, signs)) + " |")
    return "\n".join(out)


def roi_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table per ROI: each read-out's r and the noise ceiling, mean over folds."""
    names = rows[0]["roi_names"]
    shown = columns(rows)
    per = {k: np.stack([r[f"{k}_roi_r"] for r in rows]).mean(axis=0) for k, _ in shown}
    ceilings = [r["ceiling_roi"] for r in rows if r["ceiling_roi"] is not None]
    ceiling = np.mean(ceilings, axis=0) if ceilings else np.full(len(names), np.nan)
    heads = [h for _, h in shown]
    out = [
        f"per ROI over {len(rows)} folds:",
        f"| ROI | {' | '.join(heads)} | source - sensor | noise ceiling |",
        "|---" * (len(heads) + 3) + "|",
    ]
    for j, n in enumerate(names):
        vals = " | ".join(f"{per[k][j]:.3f}" for k, _ in shown)
        diff = per["source"][j] - per["eeg"][j]
        out.append(f"| {n} | {vals} | {diff:+.3f} | {ceiling[j]:.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the per-fold table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bids", type=Path, required=True, help="simulated BIDS dataset")
    ap.add_argument("--shards", type=Path, required=True, help="its shards (fold split)")
    ap.add_argument(
        "--folds",
        required=True,
        help="held-out subjects, comma-separated, or 'all': every subject of --shards",
    )
    ap.add_argument("--config", default="quickstart", help="config giving split and window")
    ap.add_argument("--override", action="append", default=[], help="config override")
    ap.add_argument("--per-roi", action="store_true", help="also the table per ROI")
    ap.add_argument(
        "--unmixing",
        metavar="SHARDS",
        default="",
        help="EEG-only shard folder(s): also the ridge on the ICA components of the "
        "dataset's channels fitted there (brainxl.models.unmixing.fit_unmixing)",
    )
    args = ap.parse_args(argv)
    if args.folds.strip() == "all":
        from finetune_table import all_folds

        folds = all_folds(ap, args.shards)
    else:
        folds = [f.strip().removeprefix("sub-") for f in args.folds.split(",") if f.strip()]
    unmixing = None
    if args.unmixing:
        from brainxl.shards.manifest import read_manifest

        from brainxl.models.unmixing import fit_unmixing

        names = read_manifest(args.shards)["ch_names"]
        unmixing, report = fit_unmixing(args.unmixing, names, len(names))
        print(f"--unmixing: {report}")
    rows = fold_rows(args.bids, args.shards, folds, args.config, args.override, unmixing)
    for r in rows:
        print(f"fold {r['fold']}: trained on {', '.join(r['train'])}")
    print(table(rows))
    if args.per_roi:
        print("\n" + roi_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
