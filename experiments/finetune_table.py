"""Pretrained versus from-scratch NeuroBOLT on LOSO folds (issue 10, section 3).

The chain, each stage a real ``brainxl`` command that resumes or is skipped when its
result already exists in ``--work``:

1. ``brainxl pretrain pretrain/tokenizer-small`` on the EEG-only shards (``--pretrain-shards``,
   e.g. ``brainxl simulate --eeg-only`` subjects, disjoint from the fine-tuning subjects);
2. ``brainxl pretrain pretrain/mem-small`` against that tokenizer;
3. for every test subject and variant (``full``: both NeuroBOLT branches; ``temporal``: the
   temporal-spatial encoder alone, ``model.overrides.spectral=off``), ``brainxl train
   quickstart-small`` from scratch and with ``model.pretrained=<mem run>``, the same recipe
   otherwise.

It prints, per fold, the held-out mean r of each run (the run's LOSO test score on its
best-validation weights), then the mean across folds with a 95% Student-t interval and the
paired difference (pretrained - scratch) with its interval.

Usage (the README's measured recipe: the three config files as they are)::

    python experiments/finetune_table.py --work /tmp/ft \\
        --pretrain-shards /tmp/ft/pre-shards --shards data/quickstart/shards \\
        --folds 01,02,03,04 --nproc 2
    python experiments/finetune_table.py --work /tmp/ft ... --table-only   # print only

``--folds all`` holds out every subject of ``--shards`` in turn (the full LOSO);
``--per-roi`` adds each arm's held-out r per ROI and the paired difference per ROI.

``--tokenizer-config``, ``--mem-config`` and ``--config`` choose other files (e.g. the
debug flavor's ``pretrain/tokenizer-debug``, ``pretrain/mem-debug``, ``quickstart``);
``--tokenizer-steps``, ``--mem-steps``, ``--steps``, ``--mask-ratio``, ``--window-s`` and
``--token-budget`` override their files' values only when given. Other options go to the
stages that build the model:

- ``--pretrain-override``: both pretraining stages;
- ``--tokenizer-override``: the tokenizer only;
- ``--mem-override``: masked modeling only, i.e. the encoder fine-tuning starts from (its
  flavor, e.g. ``model.flavor=small``, needs the same in ``--override``);
- ``--override``: the fine-tuning runs.

For example, the debug flavor with log-amplitude targets::

    python experiments/finetune_table.py --work /tmp/ftC ... --variants temporal \\
        --tokenizer-config pretrain/tokenizer-debug --mem-config pretrain/mem-debug \\
        --config quickstart --pretrain-override model.overrides.amplitude_embed=true \\
        --tokenizer-override model.overrides.amplitude_target=log \\
        --override model.overrides.amplitude_embed=true --override data.reader.ephys_norm=none

A ``--work`` folder holds one setting: a finished stage or run is reused when its
``config.yaml`` matches what this command would run, and one made with other settings
stops the script naming the keys (give that setting its own ``--work``).

Does an effect survive another pretraining seed? ``--seeds 0,1,2`` runs the scratch
column once in ``WORK`` and the whole pretraining chain once per seed in ``WORK/seed<S>``,
then prints every seed's column, their mean, each seed's paired difference and the
interval over seeds of the mean paired difference::

    python experiments/finetune_table.py --work /tmp/ft16 --seeds 0,1,2 ... --variants temporal

When pretraining seeds differ this much, a user tries several and keeps one. ``--scratch-seeds
1,2`` gives the scratch arm as many candidates (fine-tuning seeds, each validating on the
fold's own validation subjects) and adds two tables: every candidate run's held-out r and
best validation loss per fold with each arm's mean (no selection), and one where each arm
keeps, per fold, its run with the lowest validation loss (training subjects only) and is
scored on the held-out subject.

Against what scratch? The pretraining recipe changes the fine-tuning recipe too (microvolts
instead of z-scored channels, the amplitude embedding, the wider stem, 600 steps), and a
scratch arm of the same recipe can be weaker than the project's own scratch recipe. So every
table also runs ``--reference`` (default ``quickstart``, the quickstart's recipe as shipped;
``none``: skip) from scratch on the same folds in ``WORK/reference`` (``--reference-override``
for its own overrides, e.g. the same ``data.reader.include_subjects``) and prints each arm
against it: pretraining helps a user only if it beats that too.
"""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

#: ``brainxl train`` overrides of each NeuroBOLT variant.
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "temporal": ["model.overrides.spectral=off"],
}


def _brainxl() -> list[str]:
    return [sys.executable, "-m", "brainxl.launch"]


def _run(cmd: list[str], log: Path) -> None:
    """Run one stage, its output appended to ``log``; a failure names the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", shlex.join(cmd), flush=True)
    with log.open("a") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc:
        raise SystemExit(f"stage failed (exit {rc}); see {log}")


def stage_overrides(args: argparse.Namespace, stage: str) -> list[str]:
    """``brainxl pretrain`` overrides of ``stage`` (``tokenizer`` or ``mem``).

    Steps, window, token budget and mask ratio are passed only when given on the command
    line; otherwise the stage's config file decides.
    """
    given = {
        "data.window_s": args.window_s,
        "data.token_budget": args.token_budget,
        "train.steps": args.tokenizer_steps if stage == "tokenizer" else args.mem_steps,
    }
    if stage == "mem":
        given["pretrain.tokenizer"] = _stage_dir(args, "tokenizer")
        given["pretrain.mask_ratio"] = args.mask_ratio
        given["pretrain.mask_unit"] = args.mask_unit
    # --table-only needs no shards: the path only satisfies the schema when the folder is named
    sources = args.pretrain_shards if args.pretrain_shards is not None else args.work
    return [
        f"data.sources=[{{path: {sources}}}]",
        f"run.root={args.work / 'runs'}",
        f"run.name={stage}",
        *(f"{k}={v}" for k, v in given.items() if v is not None),
        *args.pretrain_override,
        *(args.tokenizer_override if stage == "tokenizer" else args.mem_override),
    ]


def stage_config(args: argparse.Namespace, stage: str) -> str:
    """The config file (name under ``configs/``) of pretraining stage ``stage``."""
    return args.tokenizer_config if stage == "tokenizer" else args.mem_config


def finished(run: Path, marker: str, cfg: Any) -> bool:
    """Whether ``run`` is finished (holds ``marker``) with the settings of ``cfg``.

    A run finished under other settings stops the script, naming the keys: reusing it
    would put another setting's result in this table.
    """
    from brainxl.distrib.resume_guard import config_conflicts, describe

    if not (run / marker).exists():
        return False
    conflicts = config_conflicts(run, cfg)
    if conflicts:
        raise SystemExit(
            f"{run} was made with other settings ({describe(conflicts)}); a --work folder "
            "holds one setting: give this one its own --work"
        )
    return True


def pretrain(args: argparse.Namespace) -> Path:
    """Tokenizer then masked modeling; returns the MEM run folder."""
    from brainxl.distrib.pretrain_config import pretrain_run_dir

    for stage, marker in (("tokenizer", "tokenizer.json"), ("mem", "final_model.pt")):
        cfg = _resolved(args, stage)  # mem's after the tokenizer stage has run
        folder = pretrain_run_dir(cfg)
        if not finished(folder, marker, cfg):
            _run(
                [*_brainxl(), "pretrain", stage_config(args, stage),
                 *stage_overrides(args, stage), "--nproc", str(args.nproc)],
                args.work / "logs" / f"{stage}.log",
            )  # fmt: skip
    return folder


def _resolved(args: argparse.Namespace, stage: str) -> Any:
    """The stage's :class:`~brainxl.distrib.pretrain_config.PretrainConfig` as it will run."""
    from brainxl.distrib.pretrain_config import load_pretrain_config

    return load_pretrain_config(stage_config(args, stage), stage_overrides(args, stage))


def _stage_dir(args: argparse.Namespace, stage: str) -> Path:
    """Run folder of a pretraining stage (``run.name`` = the stage, see :func:`pretrain`)."""
    from brainxl.distrib.pretrain_config import pretrain_run_dir

    return pretrain_run_dir(_resolved(args, stage))


def _last_record(run: Path, key: str) -> dict[str, Any] | None:
    """The last record of ``run``'s ``metrics.jsonl`` that holds ``key`` (None: none)."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return next((r for r in reversed(rows) if key in r), None)


def tokenizer_floor(
    shards: Path, every: int = 7, amplitude: str = "patch", channel_norm: str = "none"
) -> dict[str, float]:
    """MSE of the best constant prediction of the tokenizer's two targets.

    The targets are :class:`~brainxl.models.labram.VQNSPTokenizer`'s: each 1-s patch's
    rFFT amplitude (``amplitude``: see :func:`~brainxl.models.labram.spectrum_targets`)
    and phase standardised over the patch's bins. A tokenizer whose
    reconstruction losses are not below these carries no per-patch spectral information
    in its codes, so masked modeling of its codes has little to teach. Every ``every``-th
    stored segment is read, so all subjects and montages count, at the tokenizer's input
    scale (``channel_norm``, as its ``data.channel_norm``).
    """
    import torch
    from brainxl.shards.shardset import ShardSet

    from brainxl.models.labram import PATCH_SIZE, spectrum_targets

    shard_set = ShardSet.open(shards)
    scales = functools.cache(shard_set.recording_scales)  # one subject's, once
    amps, phases = [], []
    for i, (meta, x) in enumerate(shard_set.eeg_segments()):
        if i % every:
            continue
        if channel_norm == "recording":
            mean, std = scales(meta["subject"])[meta["recording"]]
            x = (x - mean[:, None]) / std[:, None]
        n = x.shape[1] // PATCH_SIZE
        amp, phase = spectrum_targets(
            torch.from_numpy(x[:, : n * PATCH_SIZE]).reshape(-1, PATCH_SIZE), amplitude
        )
        amps.append(amp)
        phases.append(phase)
    a, ph = torch.cat(amps), torch.cat(phases)
    return {
        "amp": float(((a - a.mean(0)) ** 2).mean()),
        "phase": float(((ph - ph.mean(0)) ** 2).mean()),
    }


def majority_code_accuracy(args: argparse.Namespace, n_batches: int = 30) -> float:
    """Accuracy of always predicting the tokenizer's most frequent code (MEM's floor)."""
    import torch
    from brainxl.distrib.pretrain_config import read_tokenizer_id
    from brainxl.shards.pretrain_stream import PretrainStream

    from brainxl.models.labram_tasks import load_tokenizer

    folder = _stage_dir(args, "tokenizer")
    ident = read_tokenizer_id(folder)
    tok = load_tokenizer(folder, ident["flavor"], ident["overrides"])
    data = _resolved(args, "mem").data
    stream = PretrainStream(
        [args.pretrain_shards],
        window_s=data.window_s,
        token_budget=data.token_budget,
        channel_norm=data.channel_norm,
    )
    counts = torch.zeros(tok.quantizer.n_codes)
    for i, batch in enumerate(stream.batches(0)):
        if i >= n_batches:
            break
        p = batch.padded
        codes = tok.tokenize(p.x, p.ch_idx, p.pad_mask)
        counts += torch.bincount(codes[codes >= 0], minlength=len(counts)).float()
    return float(counts.max() / counts.sum())


def tokenizer_report(args: argparse.Namespace) -> str:
    """The tokenizer's last logged reconstruction losses against the constant floor."""
    last = _last_record(_stage_dir(args, "tokenizer"), "loss_amp")
    if last is None or args.pretrain_shards is None:
        return ""
    from brainxl.distrib.pretrain_config import read_tokenizer_id

    overrides = read_tokenizer_id(_stage_dir(args, "tokenizer"))["overrides"]
    floor = tokenizer_floor(
        args.pretrain_shards,
        amplitude=overrides.get("amplitude_target", "patch"),
        channel_norm=_resolved(args, "tokenizer").data.channel_norm,
    )
    lines = [
        f"tokenizer step {last['step']}: amplitude MSE {last['loss_amp']:.3f} "
        f"(constant prediction {floor['amp']:.3f}), phase MSE {last['loss_phase']:.3f} "
        f"(constant {floor['phase']:.3f})"
    ]
    acc = _last_record(_stage_dir(args, "mem"), "accuracy")
    if acc is not None:
        lines.append(
            f"masked modeling step {acc['step']}: masked-token accuracy {acc['accuracy']:.3f} "
            f"(most frequent code: {majority_code_accuracy(args):.3f})"
        )
    return "\n".join(lines)


def run_name(variant: str, init: str, fold: str) -> str:
    return f"{variant}-{init}-{fold}"


def finetune_run(work: Path, variant: str, init: str, fold: str) -> Path:
    """The run folder of one fine-tuning run under work folder ``work``."""
    return work / "runs" / "finetune" / run_name(variant, init, fold)


def finetune(
    args: argparse.Namespace,
    mem: Path | None,
    inits: tuple[str, ...] = ("scratch", "pretrained"),
    split_from: Path | None = None,
) -> None:
    """One ``brainxl train`` per (variant, init, fold) not finished yet.

    Variant-major order, so a chain stopped early leaves whole columns of the first variant.
    ``mem`` None: scratch runs only. ``split_from``: a work folder whose finished run of
    the same name gives each run its validation subjects (:func:`fold_split_overrides`).
    """
    from brainxl.distrib.config import load_config

    inits = tuple(i for i in inits if mem is not None or i == "scratch")
    for variant in args.variants:
        for init in inits:
            for fold in args.folds:
                name = run_name(variant, init, fold)
                overrides = [
                    f"data.shards={args.shards}", f"data.test_subject={fold}",
                    f"run.root={args.work / 'runs'}", "experiment=finetune", f"run.name={name}",
                    "logging.wandb=disabled",
                    *([f"train.steps={args.steps}"] if args.steps is not None else []),
                    *VARIANTS[variant], *args.override,
                ]  # fmt: skip
                if init == "pretrained":
                    overrides.append(f"model.pretrained={mem}")
                if split_from is not None:
                    overrides += fold_split_overrides(finetune_run(split_from, variant, init, fold))
                run = finetune_run(args.work, variant, init, fold)
                if finished(run, "final_metrics.json", load_config(args.config, overrides)):
                    continue
                _run(
                    [*_brainxl(), "train", args.config, *overrides, "--nproc", str(args.nproc)],
                    args.work / "logs" / f"{name}.log",
                )


def _final_metrics(run: Path) -> dict[str, Any] | None:
    path = run / "final_metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def _score(run: Path) -> float:
    metrics = _final_metrics(run)
    return float("nan") if metrics is None else float(metrics["test"]["mean_r"])


def fmt_interval(values: list[float] | np.ndarray, sign: str = "") -> str:
    """``mean [low, high] (n=N)``, the 95% Student-t interval; ``sign="+"`` signs them."""
    from brainxl.metrics import t_interval

    m, lo, hi, n = t_interval(np.asarray(values, dtype=float))
    m, lo, hi = (f"{x:{sign}.3f}".replace("+nan", "nan") for x in (m, lo, hi))
    return f"{m} [{lo}, {hi}] (n={n})"


def table(args: argparse.Namespace) -> str:
    """The per-fold table and the across-fold summary, as Markdown."""
    cols = [(v, i) for v in args.variants for i in ("scratch", "pretrained")]
    scores = {c: [_score(finetune_run(args.work, *c, f)) for f in args.folds] for c in cols}
    head = "| held-out subject | " + " | ".join(f"{v} {i}" for v, i in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for k, fold in enumerate(args.folds):
        lines.append(f"| {fold} | " + " | ".join(f"{scores[c][k]:.3f}" for c in cols) + " |")

    lines.append("| mean [95% t] | " + " | ".join(fmt_interval(scores[c]) for c in cols) + " |")
    lines.append("")
    for v in args.variants:
        diff = np.subtract(scores[(v, "pretrained")], scores[(v, "scratch")])
        lines.append(f"- {v}: pretrained - scratch = {fmt_interval(diff)}")
    return "\n".join(lines)


def _roi_scores(run: Path, fold: str) -> tuple[list[str], np.ndarray] | None:
    """ROI names and held-out r per ROI of a finished run (its LOSO test metrics)."""
    from brainxl.distrib.rundir import RunDir

    from brainxl.metrics import from_json

    path = RunDir.subject_metrics(RunDir(run).test_dir, fold)
    if not path.exists():
        return None
    result = from_json(path)
    return list(result.roi_names), np.asarray(result.r, dtype=float)


def roi_table(args: argparse.Namespace, pretrained_work: Path | None = None) -> str:
    """Held-out r per ROI of each arm, averaged over the folds both arms finished.

    The paired difference (pretrained - scratch) per ROI has its 95% Student-t interval
    over those folds: where in the brain pretraining helps. ``pretrained_work``: the work
    folder of the pretrained runs (``WORK/seed<S>`` with ``--seeds``), default ``--work``.
    """
    out = []
    for v in args.variants:
        pairs, names = [], None
        for fold in args.folds:
            scratch = _roi_scores(finetune_run(args.work, v, "scratch", fold), fold)
            pre = _roi_scores(
                finetune_run(pretrained_work or args.work, v, "pretrained", fold), fold
            )
            if scratch is None or pre is None:
                continue
            if pre[0] != scratch[0] or (names is not None and scratch[0] != names):
                raise SystemExit(
                    f"fold {fold}: its runs' ROIs differ from each other or the other folds'"
                )
            names = scratch[0]
            pairs.append((scratch[1], pre[1]))
        if not pairs:
            out.append(f"{v}: no fold with both runs finished")
            continue
        s, p = (np.stack(x) for x in zip(*pairs))
        out += [
            f"{v}, per ROI over {len(pairs)} folds:",
            "| ROI | scratch | pretrained | pretrained - scratch [95% t] |",
            "|---|---|---|---|",
            *(
                f"| {n} | {s[:, j].mean():.3f} | {p[:, j].mean():.3f} | "
                f"{fmt_interval(p[:, j] - s[:, j], '+')} |"
                for j, n in enumerate(names)
            ),
            "",
        ]
    return "\n".join(out).rstrip()


def seed_args(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """The arguments of pretraining seed ``seed``: its own work folder ``WORK/seed<S>``.

    The seed reaches everything random in both pretraining stages (initialisation, masks,
    the stream's order: ``seed`` and ``data.seed``); fine-tuning is unchanged.
    """
    sub = argparse.Namespace(**vars(args))
    sub.work = args.work / f"seed{seed}"
    sub.pretrain_override = [*args.pretrain_override, f"seed={seed}", f"data.seed={seed}"]
    return sub


def scratch_seed_args(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """The arguments of the scratch arm's fine-tuning seed ``seed``: ``WORK/scratch-seed<S>``.

    ``seed=S`` changes the model's initialisation and the order of the training windows;
    the fold's split stays that of the config seed's runs in ``WORK`` (see :func:`main`).
    """
    sub = argparse.Namespace(**vars(args))
    sub.work = args.work / f"scratch-seed{seed}"
    sub.override = [*args.override, f"seed={seed}"]
    return sub


def fold_split_overrides(run: Path) -> list[str]:
    """``data.val_subjects`` of finished run ``run``, so another seed validates on the same.

    The validation subjects are drawn with the run's seed; a fine-tuning seed meant to
    change only the initialisation and the data order must not change them, or selection
    by validation loss would compare losses on different subjects.
    """
    info = run / "data_info.json"
    if not info.exists():
        raise FileNotFoundError(f"{info}: run the config seed's fold first")
    val = json.loads(info.read_text())["split"]["val"]
    return [f"data.val_subjects=[{','.join(val)}]"]


def _best_val(run: Path) -> float:
    value = (_final_metrics(run) or {}).get("best_val_loss")
    return float("nan") if value is None else float(value)


def select_by_validation(runs: list[Path]) -> int | None:
    """Index of the finished run with the lowest validation loss; None if none finished.

    The validation subjects are training subjects of the fold, so the choice never sees
    the held-out subject.
    """
    losses = np.array([_best_val(r) for r in runs])
    if np.isnan(losses).all():
        return None
    return int(np.nanargmin(losses))


def _candidates(args: argparse.Namespace) -> dict[str, list[tuple[str, Path]]]:
    """Each arm's candidate runs: (label, work folder), the scratch config seed first."""
    scratch = [("config seed", args.work)]
    scratch += [(f"seed {s}", args.work / f"scratch-seed{s}") for s in args.scratch_seeds]
    return {"scratch": scratch, "pretrained": [(f"seed {s}", args.work / f"seed{s}")
                                               for s in args.seeds]}  # fmt: skip


def candidates_table(args: argparse.Namespace) -> str:
    """Every candidate run: held-out r and best validation loss per fold, and each arm's mean.

    The arm means average each fold's finished candidates (what one seed of that arm gives
    on average); their paired difference compares the arms without any selection.
    """
    out = []
    for v in args.variants:
        out += ["| run | " + " | ".join(args.folds) + " | mean r [95% t] |",
                "|" + "---|" * (len(args.folds) + 2)]  # fmt: skip
        arm_means: dict[str, list[float]] = {}
        for init, cands in _candidates(args).items():
            rs = np.full((len(cands), len(args.folds)), np.nan)
            for i, (label, work) in enumerate(cands):
                cells = []
                for j, fold in enumerate(args.folds):
                    run = finetune_run(work, v, init, fold)
                    rs[i, j] = _score(run)
                    cells.append(
                        "-" if np.isnan(rs[i, j]) else f"{rs[i, j]:.3f} ({_best_val(run):.3f})"
                    )
                out.append(
                    f"| {init} {label} | " + " | ".join(cells) + f" | {fmt_interval(rs[i])} |"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a fold with no finished run
                arm_means[init] = list(np.nanmean(rs, axis=0))
            cells = [f"{x:.3f}" for x in arm_means[init]]
            out.append(f"| {init}, mean of {len(cands)} | " + " | ".join(cells)
                       + f" | {fmt_interval(arm_means[init])} |")  # fmt: skip
        diff = np.subtract(arm_means["pretrained"], arm_means["scratch"])
        out += ["", f"- {v}, mean of the pretrained runs against mean of the scratch runs per "
                f"fold: pretrained - scratch = {fmt_interval(diff, '+')}", ""]  # fmt: skip
    return "cells: held-out r (best validation loss)\n\n" + "\n".join(out).rstrip()


def selection_table(args: argparse.Namespace) -> str:
    """Each arm's best of its candidates by validation loss, per fold, against each other.

    Scratch candidates: the config seed's run in ``WORK`` and one per ``--scratch-seeds``
    (``WORK/scratch-seed<S>``); pretrained candidates: one per pretraining seed
    (``WORK/seed<S>``). Per fold each arm keeps the run with the lowest validation loss
    (training subjects only) and is scored on the held-out subject, as a user who tries
    several seeds would pick one. Both arms get their own candidates, so picking the best
    of several runs is not credited to pretraining.
    """
    cands = _candidates(args)
    labels = {init: [label for label, _ in c] for init, c in cands.items()}
    works = {init: [work for _, work in c] for init, c in cands.items()}
    out = []
    for v in args.variants:
        head = ["held-out subject", "scratch: chosen", "scratch r", "pretrained: chosen",
                "pretrained r"]  # fmt: skip
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        scores: dict[str, list[float]] = {"scratch": [], "pretrained": []}
        for fold in args.folds:
            cells = [fold]
            for init in ("scratch", "pretrained"):
                runs = [finetune_run(w, v, init, fold) for w in works[init]]
                k = select_by_validation(runs)
                r = float("nan") if k is None else _score(runs[k])
                scores[init].append(r)
                cells += ["none" if k is None else labels[init][k], f"{r:.3f}"]
            out.append("| " + " | ".join(cells) + " |")
        means = [fmt_interval(scores["scratch"]), fmt_interval(scores["pretrained"])]
        out.append(f"| mean [95% t] | | {means[0]} | | {means[1]} |")
        out.append("")
        n = {k: len(x) for k, x in labels.items()}
        diff = np.subtract(scores["pretrained"], scores["scratch"])
        out.append(
            f"- {v}, best of {n['pretrained']} pretrained against best of {n['scratch']} "
            f"scratch by validation loss: pretrained - scratch = {fmt_interval(diff, '+')}"
        )
        out.append("")
    return "\n".join(out).rstrip()


def reference_args(args: argparse.Namespace) -> argparse.Namespace | None:
    """The arguments of the ``--reference`` scratch arm: ``WORK/reference``, its own config.

    Only ``--reference-override`` reaches it (the study's ``--override`` and ``--steps``
    belong to the recipe under study). None when ``--reference none``.
    """
    if args.reference is None:
        return None
    sub = argparse.Namespace(**vars(args))
    sub.work = args.work / "reference"
    sub.config, sub.override, sub.steps = args.reference, list(args.reference_override), None
    return sub


def reference_table(args: argparse.Namespace) -> str:
    """Every arm against the ``--reference`` recipe from scratch, per fold.

    Arms: the study's scratch runs (``WORK``) and its pretrained runs (``WORK``, or each
    ``WORK/seed<S>`` and their per-fold mean with ``--seeds``). Each arm's paired
    difference from the reference has its 95% Student-t interval over the folds both
    finished.
    """
    ref = reference_args(args)
    if ref is None:
        return ""
    pre_works = [(f"pretrained seed {s}", args.work / f"seed{s}") for s in args.seeds]
    if not args.seeds and not args.no_pretrain:
        pre_works = [("pretrained", args.work)]
    out = []
    for v in args.variants:

        def scores(work: Path, init: str, v: str = v) -> np.ndarray:
            return np.array([_score(finetune_run(work, v, init, f)) for f in args.folds])

        recipe = args.config + (" + --override" if args.override or args.steps else "")
        arms = [(f"{v} scratch ({recipe})", scores(args.work, "scratch"))]
        arms += [(label, scores(work, "pretrained")) for label, work in pre_works]
        if len(pre_works) > 1:
            with warnings.catch_warnings():  # a fold no seed finished stays nan
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(np.stack([a for _, a in arms[1:]]), axis=0)
            arms.append(("pretrained, mean of seeds", mean))
        reference = scores(ref.work, "scratch")
        head = ["held-out subject", f"reference: {v} scratch ({args.reference})"]
        head += [label for label, _ in arms]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k, fold in enumerate(args.folds):
            cells = [fold, f"{reference[k]:.3f}", *(f"{a[k]:.3f}" for _, a in arms)]
            out.append("| " + " | ".join(cells) + " |")
        cols = [reference, *(a for _, a in arms)]
        out.append("| mean [95% t] | " + " | ".join(fmt_interval(c) for c in cols) + " |")
        out.append("")
        for label, a in arms:
            out.append(f"- {label} - reference = {fmt_interval(a - reference, '+')}")
        out.append("")
    return "\n".join(out).rstrip()


def seed_table(args: argparse.Namespace) -> str:
    """Scratch against each pretraining seed, per fold, and the effect's spread over seeds.

    Scratch runs live in ``WORK``, each seed's pretraining and pretrained runs in
    ``WORK/seed<S>``. Per variant: the per-fold table, the paired difference of each seed
    with its interval over folds, and the interval over seeds of the mean paired
    difference, which says whether the effect survives another pretraining seed.
    """

    def score(work: Path, variant: str, init: str, fold: str) -> float:
        return _score(finetune_run(work, variant, init, fold))

    out = []
    for v in args.variants:
        scratch = np.array([score(args.work, v, "scratch", f) for f in args.folds])
        pre = np.array(
            [[score(args.work / f"seed{s}", v, "pretrained", f) for f in args.folds]
             for s in args.seeds]
        )  # fmt: skip
        with warnings.catch_warnings():  # a fold no seed finished stays nan
            warnings.simplefilter("ignore", RuntimeWarning)
            seed_mean = np.nanmean(pre, axis=0) if pre.size else np.full(len(args.folds), np.nan)
        head = ["held-out subject", f"{v} scratch"]
        head += [f"pretrained seed {s}" for s in args.seeds] + ["pretrained, mean of seeds"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k, fold in enumerate(args.folds):
            cells = [fold, f"{scratch[k]:.3f}", *(f"{r[k]:.3f}" for r in pre)]
            out.append("| " + " | ".join([*cells, f"{seed_mean[k]:.3f}"]) + " |")
        cols = [scratch, *pre, seed_mean]
        out.append("| mean [95% t] | " + " | ".join(fmt_interval(c) for c in cols) + " |")
        out.append("")
        for s, row in zip(args.seeds, pre):
            out.append(
                f"- {v}, seed {s}: pretrained - scratch = {fmt_interval(row - scratch, '+')}"
            )
        out.append(
            f"- {v}, mean of seeds: pretrained - scratch = {fmt_interval(seed_mean - scratch, '+')}"
        )
        per_seed = [float(np.nanmean(row - scratch)) for row in pre]
        out.append(f"- {v}: mean paired difference over seeds = {fmt_interval(per_seed, '+')}")
        out.append("")
    return "\n".join(out).rstrip()


def all_folds(ap: argparse.ArgumentParser, shards: Path) -> list[str]:
    """``--folds all``: every subject of ``shards``; a folder without shards stops ``ap``."""
    from brainxl.shards.shardset import ShardSet

    try:
        return ShardSet.open(shards).subjects
    except (FileNotFoundError, ValueError) as err:
        ap.error(f"--folds all: {err}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="runs and logs go here")
    ap.add_argument("--pretrain-shards", type=Path, help="EEG-only shards (shard --eeg-only)")
    ap.add_argument("--shards", type=Path, help="EEG-fMRI shards of the fine-tuning subjects")
    ap.add_argument(
        "--folds",
        default="01,02,03,04",
        help="held-out subjects, comma-separated, or 'all': every subject of --shards (full LOSO)",
    )
    ap.add_argument("--variants", default="full,temporal", help=f"of {sorted(VARIANTS)}")
    ap.add_argument("--config", default="quickstart-small", help="fine-tuning config")
    ap.add_argument("--tokenizer-config", default="pretrain/tokenizer-small")
    ap.add_argument("--mem-config", default="pretrain/mem-small")
    the_configs = "default: the config's"
    ap.add_argument("--steps", type=int, help=f"fine-tuning steps per run ({the_configs})")
    ap.add_argument("--tokenizer-steps", type=int, help=the_configs)
    ap.add_argument("--mem-steps", type=int, help=the_configs)
    ap.add_argument("--mask-ratio", type=float, help=the_configs)
    ap.add_argument("--mask-unit", choices=["patch", "channel"], help=the_configs)
    ap.add_argument("--window-s", type=int, help=f"pretraining window, s ({the_configs})")
    ap.add_argument("--token-budget", type=int, help=the_configs)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--override", action="append", default=[], help="extra train override")
    ap.add_argument(
        "--pretrain-override", action="append", default=[], help="extra override of both stages"
    )
    ap.add_argument(
        "--tokenizer-override", action="append", default=[], help="extra tokenizer override"
    )
    ap.add_argument(
        "--mem-override", action="append", default=[], help="extra masked-modeling override"
    )
    ap.add_argument(
        "--seeds",
        help="pretraining seeds, comma-separated: one chain per seed in WORK/seed<S>, "
        "scratch runs once in WORK, a table of the effect over seeds",
    )
    ap.add_argument(
        "--scratch-seeds",
        help="with --seeds: more fine-tuning seeds of the scratch arm (WORK/scratch-seed<S>, "
        "same validation subjects), and a table of each arm's best run by validation loss",
    )
    ap.add_argument(
        "--reference",
        default="quickstart",
        help="config run from scratch on the same folds (WORK/reference) that every arm is "
        "also compared with: the project's own scratch recipe; 'none' to skip",
    )
    ap.add_argument(
        "--reference-override", action="append", default=[], help="override of the reference"
    )
    ap.add_argument("--no-pretrain", action="store_true", help="scratch runs only")
    ap.add_argument("--table-only", action="store_true", help="print the table of finished runs")
    ap.add_argument(
        "--per-roi",
        action="store_true",
        help="also print each arm's held-out r per ROI and their paired difference "
        "(with --seeds: the first seed's pretrained runs)",
    )
    args = ap.parse_args(argv)
    if args.folds.strip() == "all":
        if args.shards is None:
            ap.error("--folds all takes the subjects of --shards; add --shards")
        args.folds = all_folds(ap, args.shards)
    else:
        args.folds = [f.strip() for f in args.folds.split(",") if f.strip()]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.reference.strip().lower() in ("", "none"):
        args.reference = None
    elif args.reference == args.config and not args.override and args.steps is None:
        args.reference = None  # the scratch arm already is the reference recipe
    try:
        args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds else []
    except ValueError:
        ap.error(f"--seeds takes integers separated by commas, got {args.seeds!r}")
    try:
        args.scratch_seeds = (
            [int(x) for x in args.scratch_seeds.split(",") if x.strip()]
            if args.scratch_seeds
            else []
        )
    except ValueError:
        ap.error(f"--scratch-seeds takes integers separated by commas, got {args.scratch_seeds!r}")
    if args.scratch_seeds and not args.seeds:
        ap.error("--scratch-seeds give the scratch arm candidates against --seeds; add --seeds")
    if args.seeds and args.no_pretrain:
        ap.error("--seeds are pretraining seeds; they make no sense with --no-pretrain")
    bad = sorted(set(args.variants) - set(VARIANTS))
    if bad:
        ap.error(f"unknown variants {bad}; choose from {sorted(VARIANTS)}")
    missing = args.shards is None or (args.pretrain_shards is None and not args.no_pretrain)
    if missing and not args.table_only:
        ap.error("--shards and --pretrain-shards are required (or --table-only)")
    args.work = args.work.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.seeds:
        if not args.table_only:
            finetune(args, None)
            for s in args.seeds:
                sub = seed_args(args, s)
                finetune(sub, pretrain(sub), inits=("pretrained",))
            for s in args.scratch_seeds:
                finetune(scratch_seed_args(args, s), None, split_from=args.work)
            run_reference(args)
        print(seed_table(args))
        if args.per_roi:
            print("\n" + roi_table(args, seed_args(args, args.seeds[0]).work))
        if args.scratch_seeds:
            print("\n" + candidates_table(args))
            print("\n" + selection_table(args))
        for s in args.seeds:
            report = tokenizer_report(seed_args(args, s))
            if report:
                print(f"seed {s}: " + report.replace("\n", f"\nseed {s}: "))
        print_reference(args)
        return 0
    if not args.table_only:
        mem = None if args.no_pretrain else pretrain(args)
        finetune(args, mem)
        run_reference(args)
    print(table(args))
    if args.per_roi:
        print("\n" + roi_table(args))
    report = tokenizer_report(args)
    if report:
        print(report)
    print_reference(args)
    return 0


def run_reference(args: argparse.Namespace) -> None:
    """The ``--reference`` recipe's scratch runs, after the study's (which come first)."""
    ref = reference_args(args)
    if ref is not None:
        finetune(ref, None)


def print_reference(args: argparse.Namespace) -> None:
    ref = reference_args(args)
    if ref is None:
        return
    print(f"\nagainst the reference recipe from scratch (--reference {args.reference}):")
    runs = [finetune_run(ref.work, v, "scratch", f) for v in args.variants for f in args.folds]
    if not any((run / "final_metrics.json").exists() for run in runs):
        print(f"no reference run has finished in {ref.work}: run without --table-only, "
              "or pass --reference none")  # fmt: skip
        return
    print(reference_table(args))


if __name__ == "__main__":
    raise SystemExit(main())
