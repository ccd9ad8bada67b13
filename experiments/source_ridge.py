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


def fold_rows(
    bids_root: Path,
    shards: Path,
    folds: list[str],
    config: str = "quickstart",
    overrides: list[str] | None = None,
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

    Returns
    -------
    list of dict
        Per fold: ``fold``, ``train`` (subjects), ``eeg_r``, ``source_r``, ``ceiling`` (means
        over ROIs), the same per ROI (``eeg_roi_r``, ``source_roi_r``, ``ceiling_roi``)
        and ``roi_names``.
    """
    from brainxl.distrib.config import load_config
    from brainxl.distrib.data import config_split
    from brainxl.shards.config import IngestConfig
    from brainxl.shards.ingest.bids import load_subject

    from brainxl import metrics as bm
    from brainxl.baselines import features_from_recordings, fit_and_score

    def cfg_of(fold: str) -> Any:
        return load_config(
            config, [f"data.shards={shards}", f"data.test_subject={fold}", *(overrides or [])]
        )

    window_s = float(cfg_of(folds[0]).data.reader.window_s)
    n_seg = max(1, int(window_s // 4))  # as brainxl evaluate: 4 s lag bins
    feats: dict[str, dict[str, Any]] = {"eeg": {}, "source": {}}
    rows, roi_names = [], None
    for fold in folds:
        split = config_split(cfg_of(fold))
        for s in [*split.train, fold]:
            if s in feats["eeg"]:
                continue
            recs = load_subject(bids_root, s, IngestConfig())
            roi_names = recs[0].roi_names
            feats["eeg"].update(features_from_recordings(recs, window_s, n_segments=n_seg))
            srcs = [source_recording(r, bids_root) for r in recs]
            feats["source"].update(features_from_recordings(srcs, window_s, n_segments=n_seg))
        ceiling = bm.load_noise_ceiling(bids_root, fold)
        row: dict[str, Any] = {"fold": fold, "train": list(split.train), "roi_names": roi_names}
        for kind in ("eeg", "source"):
            res = fit_and_score(
                {t: feats[kind][t] for t in split.train},
                {fold: feats[kind][fold]},
                roi_names,
                noise_ceilings={fold: ceiling},
            )
            row[f"{kind}_r"] = float(res.summary.r.mean)
            row[f"{kind}_roi_r"] = np.asarray(res.summary.per_subject[0].r, dtype=float)
        row["ceiling"] = float(np.mean(list(ceiling.values()))) if ceiling else float("nan")
        row["ceiling_roi"] = bm.ceiling_array(ceiling, roi_names) if ceiling else None
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`fold_rows`, with the mean and 95% t-interval over folds."""
    from finetune_table import fmt_interval

    out = [
        "| held-out subject | sensor ridge r | source ridge r | source - sensor | noise ceiling |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['fold']} | {r['eeg_r']:.3f} | {r['source_r']:.3f} | "
            f"{r['source_r'] - r['eeg_r']:+.3f} | {r['ceiling']:.3f} |"
        )
    cols = [
        [r["eeg_r"] for r in rows],
        [r["source_r"] for r in rows],
        [r["source_r"] - r["eeg_r"] for r in rows],
        [r["ceiling"] for r in rows],
    ]
    signs = ["", "", "+", ""]
    out.append("| mean [95% t] | " + " | ".join(map(fmt_interval, cols, signs)) + " |")
    return "\n".join(out)


def roi_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table per ROI: each read-out's r and the noise ceiling, mean over folds."""
    names = rows[0]["roi_names"]
    eeg = np.stack([r["eeg_roi_r"] for r in rows])
    src = np.stack([r["source_roi_r"] for r in rows])
    ceilings = [r["ceiling_roi"] for r in rows if r["ceiling_roi"] is not None]
    ceiling = np.mean(ceilings, axis=0) if ceilings else np.full(len(names), np.nan)
    out = [
        f"per ROI over {len(rows)} folds:",
        "| ROI | sensor ridge r | source ridge r | source - sensor | noise ceiling |",
        "|---|---|---|---|---|",
    ]
    for j, n in enumerate(names):
        e, s = eeg[:, j].mean(), src[:, j].mean()
        out.append(f"| {n} | {e:.3f} | {s:.3f} | {s - e:+.3f} | {ceiling[j]:.3f} |")
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
    args = ap.parse_args(argv)
    if args.folds.strip() == "all":
        from finetune_table import all_folds

        folds = all_folds(ap, args.shards)
    else:
        folds = [f.strip().removeprefix("sub-") for f in args.folds.split(",") if f.strip()]
    rows = fold_rows(args.bids, args.shards, folds, args.config, args.override)
    for r in rows:
        print(f"fold {r['fold']}: trained on {', '.join(r['train'])}")
    print(table(rows))
    if args.per_roi:
        print("\n" + roi_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
