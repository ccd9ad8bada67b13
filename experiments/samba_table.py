"""Per-fold table for SAMBA runs: SAMBA r, multi-frame ridge r, NeuroBOLT r, noise ceiling,
HRF recovery.

SAMBA r is the LOSO test score each ``brainxl train`` run wrote (``final_metrics.json``,
the same routine ``brainxl evaluate`` uses). The ridge is
:func:`brainxl.baselines.run_multiframe_ridge`'s model (the baseline ``brainxl evaluate``
reports for SAMBA runs) fitted on the same training subjects and scored on the same
(window, frame) rows; here the per-subject features are computed once for all folds.
NeuroBOLT r is read from NeuroBOLT runs of the same folds when given.

HRF recovery (EEG/MEG -> fMRI): the simulator draws each subject's HRFs independently, so
a model trained across subjects can only learn each parcel's HRF averaged over its
training subjects; the learned kernels are compared with that average (peak time per
parcel, correlation of peak times across parcels, shape correlation per parcel).

Usage::

    python experiments/samba_table.py --bids s/bids RUN_DIR [RUN_DIR ...] \
        [--neurobolt NB_RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def _run_info(run: Path) -> dict[str, Any]:
    from brainxl.distrib.config import load_config

    cfg = load_config(run / "config.yaml")
    final = json.loads((run / "final_metrics.json").read_text())
    return {"cfg": cfg, "final": final}


def _model(run: Path, cfg: Any) -> Any:
    """``(model, adapter, split, norm)`` of a finished run (final weights)."""
    import torch
    from brainxl.distrib.evaluation import read_data_info
    from brainxl.distrib.rundir import RunDir
    from brainxl.distrib.tasks import build_model_and_adapter

    shapes, norm, split = read_data_info(RunDir(run), cfg)
    model, adapter = build_model_and_adapter(cfg.model, shapes)
    model.load_state_dict(torch.load(run / "final_model.pt", map_location="cpu"))
    return model.eval(), adapter, split, norm


def hrf_recovery(model: Any, bids: str, subjects: list[str], dt: float = 0.05) -> dict:
    """Learned vs true (training-subject average) HRFs, per parcel."""
    from brainxl.metrics import load_true_hrfs

    hrf = getattr(model, "hrf", None)
    if hrf is None:
        return {}
    trues = [load_true_hrfs(bids, s, dt) for s in subjects]
    if any(t is None for t in trues):
        return {}
    true = np.mean(trues, axis=0)
    learned = hrf.curves(dt).numpy()
    if true.shape[0] != learned.shape[0]:
        return {}
    n = min(true.shape[1], learned.shape[1])
    tp, lp = true.argmax(1) * dt, learned.argmax(1) * dt
    shape = [np.corrcoef(true[i, :n], learned[i, :n])[0, 1] for i in range(len(tp))]
    return {
        "true_peak_s": tp,
        "learned_peak_s": lp,
        "peak_corr": float(np.corrcoef(tp, lp)[0, 1]) if lp.std() > 0 else float("nan"),
        "shape_corr": float(np.mean(shape)),
        "peak_mae_s": float(np.abs(tp - lp).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--bids", required=True)
    ap.add_argument("--neurobolt", nargs="*", type=Path, default=[])
    ap.add_argument(
        "--max-frame-features",
        type=int,
        default=512,
        help="per-frame features above this are reduced by PCA before the ridge (0: never)",
    )
    a = ap.parse_args(argv)
    from brainxl.distrib.data import subject_source

    from brainxl import metrics as bm
    from brainxl.baselines import (
        EEG2FMRI_LAGS,
        FMRI2EEG_LAGS,
        MultiFrameRidge,
        multiframe_features,
    )

    nb = {}
    for run in a.neurobolt:
        info = _run_info(run)
        nb[str(info["cfg"].data.test_subject)] = info["final"]["test"]["mean_r"]
    feats: dict[tuple, dict] = {}
    rows = []
    for run in a.runs:
        info = _run_info(run)
        cfg, final = info["cfg"], info["final"]
        model, adapter, split, norm = _model(run, cfg)
        test = list(split.test)
        key = (cfg.data.shards, adapter.task, adapter.source_key, str(getattr(model, "target", "")))
        if key not in feats:  # every subject's features once (training-subject norm: r-invariant)
            from brainxl.shards.shardset import ShardSet

            everyone = ShardSet.open(cfg.data.shards).subjects
            src = subject_source(cfg, everyone, norm)
            feats[key] = multiframe_features(
                src, adapter.task, src.sfreq, int(cfg.data.reader.n_targets), adapter.source_key
            )
        F = feats[key]
        train = list(split.train)  # the run's training subjects (not its validation one)
        lags = EEG2FMRI_LAGS if adapter.task == "eeg2fmri" else FMRI2EEG_LAGS
        ridge = MultiFrameRidge(lags, max_frame_features=a.max_frame_features or None)
        ridge.fit([F[s][0] for s in train], [F[s][1] for s in train])
        if ridge.reducer is not None:
            print(
                f"# {run.name}: ridge on {ridge.reducer[-1].n_components_} principal components "
                f"of {F[train[0]][0].shape[-1]} features per frame "
                f"({ridge.explained_variance:.3f} of their variance)",
                flush=True,
            )
        X, Y = F[test[0]]
        P = ridge.predict(X).reshape(-1, Y.shape[-1])
        ridge_r = float(np.nanmean(bm.pearson_per_roi(P, Y.reshape(-1, Y.shape[-1]))))
        ceiling = None
        if adapter.task == "eeg2fmri":
            c = bm.load_noise_ceiling(a.bids, test[0])
            ceiling = float(np.mean(list(c.values()))) if isinstance(c, dict) else None
        rec = hrf_recovery(model, a.bids, list(split.train)) if adapter.task == "eeg2fmri" else {}
        rows.append(
            {
                "run": run.name,
                "task": adapter.task,
                "input": adapter.source_key,
                "test": test[0],
                "samba_r": final["test"]["mean_r"],
                "ridge_r": ridge_r,
                "neurobolt_r": nb.get(test[0]),
                "ceiling": ceiling,
                **{k: v for k, v in rec.items() if k in ("peak_corr", "shape_corr", "peak_mae_s")},
                "_rec": rec,
            }
        )

    def f(x: Any) -> str:
        return "   -  " if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:6.3f}"

    print("| task | input | test | SAMBA r | ridge r | NeuroBOLT r | ceiling | HRF peak corr | "
          "HRF shape corr | HRF peak MAE s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['input']} | {r['test']} | {f(r['samba_r'])} | {f(r['ridge_r'])} "
            f"| {f(r['neurobolt_r'])} | {f(r['ceiling'])} | {f(r.get('peak_corr'))} | "
            f"{f(r.get('shape_corr'))} | {f(r.get('peak_mae_s'))} |"
        )
    diffs: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        diffs.setdefault((r["task"], r["input"]), []).append(r["samba_r"] - r["ridge_r"])
    for (task, inp), d in diffs.items():
        line = f"# {task} {inp}: SAMBA beats the ridge on {sum(x > 0 for x in d)}/{len(d)} folds"
        m, lo, hi, n = bm.t_interval(d)
        if n > 1:
            line += f"; SAMBA - ridge {m:+.3f} [{lo:+.3f}, {hi:+.3f}] (95% t)"
        print(line)
    for r in rows:
        rec = r["_rec"]
        if rec:
            print(f"# {r['run']} true peaks (s): {np.round(rec['true_peak_s'], 2).tolist()}")
            print(f"# {r['run']} learned peaks (s): {np.round(rec['learned_peak_s'], 2).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
