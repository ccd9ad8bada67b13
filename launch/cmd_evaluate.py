"""``brainxl evaluate RUN_OR_CKPT``: score a trained model on held-out subjects, write a report.

RUN_OR_CKPT is a run folder (uses ``best_model.pt``, the weights of the best validation
step, or with ``--weights final`` ``final_model.pt``; the latest checkpoint while the run
is unfinished) or a checkpoint folder (``<run>/checkpoints/step00000500``). Runs in one
process without DeepSpeed through the trainer's own evaluation routine
(:func:`brainxl.distrib.evaluation.evaluate_subjects`); the data shapes, normalisation (the
run's training subjects only) and fold split come from the run folder, not from a
training stream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "Evaluate a run or checkpoint on its LOSO test subject (or others) and write a report."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="run folder or checkpoint folder")
    parser.add_argument(
        "--subjects",
        default="test",
        help="'test' (the fold's test subject), 'val', or a comma list (01,02)",
    )
    parser.add_argument("--no-report", action="store_true", help="skip plots and report files")
    parser.add_argument("--no-baseline", action="store_true", help="skip the ridge baseline")
    parser.add_argument(
        "--weights",
        choices=("best", "final"),
        default="best",
        help="of a finished run: the best-validation weights (default) or the final ones",
    )
    parser.add_argument(
        "--bids", default=None, help="simulated BIDS dataset: score against its noise ceiling"
    )


def _best_is_current(run_dir: Path) -> bool:
    """True when ``best_model.pt`` holds the best validation step the finished run recorded."""
    from brainxl.distrib.rundir import RunDir
    from brainxl.distrib.trainer import best_weights_step

    metrics = RunDir(run_dir).final_metrics
    step = best_weights_step(run_dir)
    if step is None or not metrics.is_file():
        return False
    return json.loads(metrics.read_text()).get("best_step") == step


def locate(target: str | Path, weights: str = "best") -> tuple[Path, Path | None, str | None]:
    """``(run_dir, checkpoint_dir, tag)`` of a run or checkpoint folder.

    ``tag`` is None for ``final_model.pt`` and ``"best"`` for ``best_model.pt`` (a finished
    run's folder with ``weights="best"`` and best weights that match its metrics).
    """
    from brainxl.distrib.checkpoint import META, read_latest
    from brainxl.distrib.rundir import RunDir

    if weights not in ("best", "final"):
        raise ValueError(f"weights must be 'best' or 'final', got {weights!r}")
    p = Path(target)
    if (p / META).is_file():
        return p.parent.parent, p.parent, p.name
    run = RunDir(p)
    if run.is_run():
        if run.final_model.is_file():
            return p, None, "best" if weights == "best" and _best_is_current(p) else None
        tag = read_latest(run.checkpoints)
        if tag is None:
            raise ValueError(
                f"{p}: no {RunDir.FINAL_MODEL} and no complete checkpoint; train it first"
            )
        return p, run.checkpoints, tag
    raise ValueError(f"{p}: neither a run folder ({RunDir.CONFIG}) nor a checkpoint ({META})")


def load_weights(run_dir: Path, ckpt_dir: Path | None, tag: str | None) -> dict[str, Any]:
    """fp32 weights of the final or best model or of checkpoint ``tag`` (any ZeRO stage)."""
    import torch
    from brainxl.distrib.rundir import RunDir

    if ckpt_dir is None:
        run = RunDir(run_dir)
        path = run.best_model if tag == "best" else run.final_model
        return torch.load(path, map_location="cpu", weights_only=True)
    from brainxl.distrib.checkpoint import read_meta

    if read_meta(ckpt_dir, tag)["zero_stage"] == 0:
        state = torch.load(
            ckpt_dir / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        return {k: v.float() for k, v in state["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)


def _ridge_baseline(cfg: Any, split: Any, chosen: list[str], ceilings: dict[str, Any]) -> Any:
    """The band-power ridge baseline fitted on the fold's training subjects (raw µV)."""
    from brainxl.distrib.data import subject_source

    from brainxl.baselines import run_ridge_baseline

    train = subject_source(cfg, list(split.train), None)
    test = subject_source(cfg, chosen, None)
    n_seg = max(1, int(cfg.data.reader.window_s // 4))
    return run_ridge_baseline(
        train, test, train.sfreq, train.roi_names, n_segments=n_seg, noise_ceilings=ceilings or None
    ).summary


def _multiframe_baseline(
    cfg: Any,
    split: Any,
    norm: Any,
    chosen: list[str],
    ceilings: dict[str, Any],
    model: Any,
    adapter: Any,
) -> Any:
    """The multi-frame ridge (brainxl.baselines.run_multiframe_ridge) for a SAMBA run, fitted
    on the fold's training subjects and scored on the same (window, frame) rows."""
    from brainxl.distrib.data import subject_source

    from brainxl.baselines import run_multiframe_ridge

    train = subject_source(cfg, list(split.train), norm)
    test = subject_source(cfg, chosen, norm)
    if adapter.task == "eeg2fmri":
        names = list(train.roi_names)
    else:
        rows = train.parcel_names if adapter.source_key == "parcels" else train.ch_names
        names = model.output_names(list(rows))
    return run_multiframe_ridge(
        train,
        test,
        adapter.task,
        train.sfreq,
        int(cfg.data.reader.n_targets),
        names,
        source_key=adapter.source_key,
        noise_ceilings=(ceilings or None) if adapter.task == "eeg2fmri" else None,
    ).summary


def _figures(
    cfg: Any,
    model: Any,
    adapter: Any,
    norm: Any,
    chosen: list[str],
    summary: Any,
    run_dir: Path,
    tag: str | None,
    bids_root: str | Path | None,
) -> dict[str, Any]:
    """The report's figures: per-ROI r vs ceiling, per subject, predicted vs true BOLD per
    subject, the model spec's diagnostics (e.g. learned vs true HRFs, attention), training
    curves; per-ROI r on the brain, channel-weight topographies and fMRI -> EEG power
    spectra where they apply (:func:`brainxl.distrib.brain_figures.evaluation_figures`)."""
    import numpy as np
    from brainxl.distrib.brain_figures import evaluation_figures
    from brainxl.distrib.data import open_shards, subject_source
    from brainxl.distrib.evaluation import diagnostics, series
    from brainxl.distrib.rundir import RunDir

    from brainxl import metrics as bm
    from brainxl import plots

    run = RunDir(run_dir)
    predictions = {}
    for s in chosen:
        npz = np.load(RunDir.predictions(run.evaluation_dir(tag or "final"), s))
        predictions[s] = (series(npz["pred"]), series(npz["true"]))
    source = subject_source(cfg, chosen[:1], norm)
    diag = diagnostics(cfg, model, adapter, source)
    learned, dt = diag.get("learned_hrfs"), float(diag.get("hrf_dt", 0.1))
    true = None
    if learned is not None and bids_root is not None:
        true = bm.load_true_hrfs(bids_root, chosen[0], dt)
        if true is not None and true.shape[0] == learned.shape[0]:
            n = min(true.shape[1], learned.shape[1])
            learned, true = learned[:, :n], true[:, :n]
        else:
            true = None  # sensors or other parcels: the kernels are not comparable
    records = None
    if run.metrics_path.is_file():
        lines = run.metrics_path.read_text().splitlines()
        recs = [json.loads(line) for line in lines if line.strip()]
        records = [r for r in recs if r.get("split") in ("train", "val")] or None
    figs = plots.standard_figures(
        summary,
        predictions if adapter.task == "eeg2fmri" else None,
        tr=getattr(source, "tr", None),
        learned_hrfs=learned,
        true_hrfs=true,
        hrf_dt=dt,
        attention=diag.get("attention"),
        records=records,
    )
    return evaluation_figures(
        figs,
        summary,
        manifest=open_shards(cfg).manifest,
        model=model,
        adapter=adapter,
        ch_names=list(source.ch_names),
        predictions=predictions if adapter.task == "fmri2eeg" else None,
        sfreq=source.sfreq,
        roots=[Path(bids_root)] if bids_root else None,
    )


def evaluate(
    target: str | Path,
    subjects: str = "test",
    report: bool = True,
    bids_root: str | Path | None = None,
    baseline: bool = True,
    weights: str = "best",
) -> dict[str, Any]:
    """Score the model of ``target`` on ``subjects`` and write a report.

    Parameters
    ----------
    target : path
        Run or checkpoint folder.
    subjects : str
        ``"test"``, ``"val"`` or a comma list.
    report : bool
        Write plots and ``<run>/report/``.
    bids_root : path, optional
        The simulated BIDS dataset: adds each subject's noise ceiling.
    baseline : bool
        Also fit the band-power ridge baseline (EEG -> fMRI on sensors only).
    weights : {"best", "final"}
        Of a finished run: the best-validation weights, or the final ones.

    Returns
    -------
    result : dict
        ``subjects``, ``mean_r``, ``per_subject``, ``baseline_mean_r``,
        ``fraction_of_ceiling`` (None when unknown), ``run_dir``, ``weights``.
    """
    import numpy as np
    from brainxl.distrib.config import load_config, to_dict
    from brainxl.distrib.evaluation import evaluate_subjects, read_data_info
    from brainxl.distrib.rundir import RunDir

    from brainxl import metrics as bm

    run_dir, ckpt_dir, tag = locate(target, weights)
    run = RunDir(run_dir)
    cfg = load_config(run.config_path)
    shapes, norm, split = read_data_info(run, cfg)
    if subjects == "test":
        chosen = list(split.test)
    elif subjects == "val":
        chosen = list(split.val)
    else:
        chosen = [s.strip() for s in subjects.split(",") if s.strip()]
    if not chosen:
        raise ValueError(f"{run_dir}: no subjects to evaluate (--subjects {subjects!r})")
    ceilings: dict[str, Any] = {}
    if bids_root is not None:
        for s in chosen:
            ceilings[s] = bm.load_noise_ceiling(bids_root, s)
    from brainxl.launch.progress import progress_bar

    with progress_bar(len(chosen), "evaluate", unit="subject") as bar:
        ev = evaluate_subjects(
            cfg,
            shapes,
            norm,
            load_weights(run_dir, ckpt_dir, tag),
            chosen,
            run.evaluation_dir(tag or "final"),
            ceilings,
            on_subject=lambda s: bar.update(1),
        )
    model, adapter, results = ev.model, ev.adapter, ev.results
    summary = bm.summarize(results)
    base = None
    multiframe = adapter.sequence_target and (
        adapter.task == "eeg2fmri" or getattr(model, "target", None) == "envelopes"
    )
    if baseline and multiframe:  # SAMBA: the ridge on the same (window, frame) rows
        base = _multiframe_baseline(cfg, split, norm, chosen, ceilings, model, adapter)
    elif baseline and adapter.task == "eeg2fmri" and cfg.data.reader.modality == "sensors":
        base = _ridge_baseline(cfg, split, chosen, ceilings)
    run.evaluation_root.mkdir(exist_ok=True)
    bm.to_json(summary, run.summary_path(tag or "final"))
    if report:
        from brainxl.report import write_report

        figs = _figures(cfg, model, adapter, norm, chosen, summary, run_dir, tag, bids_root)
        write_report(
            run_dir,
            summary,
            figs,
            to_dict(cfg),
            baseline=base,
            title=f"{cfg.experiment} ({', '.join(chosen)})",
        )
        from brainxl.distrib.reporting import log_figures

        log_figures(cfg, run_dir, {name: run.report_dir / f"{name}.png" for name in figs})
    return {
        "subjects": chosen,
        "mean_r": float(np.nanmean([r.mean_r for r in results])),
        "per_subject": {r.subject: r.mean_r for r in results},
        "baseline_mean_r": None if base is None else float(base.mean_r),
        "fraction_of_ceiling": None
        if summary.fraction_of_ceiling is None
        else float(summary.fraction_of_ceiling.mean),
        "run_dir": str(run_dir),
        "weights": tag or "final",
    }


def run(args: argparse.Namespace) -> int:
    result = evaluate(  # a user mistake (ValueError): one line from cli.main
        args.target,
        args.subjects,
        report=not args.no_report,
        bids_root=args.bids,
        baseline=not args.no_baseline,
        weights=args.weights,
    )
    print(json.dumps(result, indent=2))
    from brainxl.launch.wandb_sync import print_sync_hint

    print_sync_hint(result["run_dir"])
    return 0
