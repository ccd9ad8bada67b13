"""The one training loop: fit, validate, early-stop, checkpoint, resume, test.

Runs in every rank process. The data position is counted in micro-batches from the start
of the current epoch; together with the saved RNG states it makes a resumed run continue
exactly where an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from brainxl.distrib import checkpoint as ckpt
from brainxl.distrib.config import RunConfig, fold_name, run_id, to_yaml
from brainxl.distrib.data import BatchSource, Fold
from brainxl.distrib.engine import (
    all_reduce_,
    consolidated_state_dict,
    create_engine,
    engine_forward,
    stop_agreed,
)
from brainxl.distrib.env import DistEnv
from brainxl.distrib.evaluation import series as _as_series
from brainxl.distrib.evaluation import write_data_info
from brainxl.distrib.reporting import Reporter
from brainxl.distrib.rundir import RunDir
from brainxl.distrib.tasks import (
    build_model_and_adapter,
    data_shapes,
    enable_activation_checkpointing,
    on_main,
    prepare_fold,
    resolve_spec,
)

from brainxl.files import atomic_torch_save, atomic_write_text
from brainxl.objectives import correlation_moments, pearson_from_moments, uses_model_loss


@dataclass
class LoopState:
    """Everything about the loop's progress that a checkpoint must restore."""

    step: int = 0
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches consumed in the current epoch
    samples: int = 0  # samples seen (all ranks)
    best_val: float = math.inf
    best_step: int = -1
    bad_validations: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["best_val"] = None if math.isinf(self.best_val) else self.best_val
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LoopState:
        d = dict(d)
        d["best_val"] = math.inf if d.get("best_val") is None else d["best_val"]
        return cls(**d)


class Trainer:
    """Fit one configured model on one fold, on every rank of the job.

    Parameters
    ----------
    cfg : RunConfig
    env : DistEnv
    fold : Fold
        The rank's train / validation / test streams.
    run_dir : path or RunDir
    report : Reporter
    """

    def __init__(
        self, cfg: RunConfig, env: DistEnv, fold: Fold, run_dir: Path | RunDir, report: Reporter
    ) -> None:
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.cfg, self.env, self.fold, self.report = cfg, env, fold, report
        self.run_dir = self.run.path
        self.ckpt_dir = self.run.checkpoints
        t = cfg.train
        bpe = fold.train.batches_per_epoch()
        if bpe < 1:
            raise ValueError(
                "the training stream yields no batch per epoch; add data or lower train.batch_size"
            )
        self.batches_per_epoch = bpe
        self.total_steps = t.steps if t.epochs <= 0 else max(t.epochs * bpe // t.grad_accum, 1)
        self.state = LoopState()

        torch.manual_seed(cfg.seed)
        self.spec = resolve_spec(cfg.model)
        self.shapes = data_shapes(fold.train, cfg)
        model, self.adapter = build_model_and_adapter(cfg.model, self.shapes)
        # the spec's fold hook (e.g. graphs of the training subjects), before DeepSpeed
        # broadcasts the buffers
        self.graphs = prepare_fold(self.spec, model, cfg, fold, self.shapes)
        own = self.spec.loss is not None and uses_model_loss(t.loss.name, self.spec)
        self.own_loss = self.spec.loss if own else None
        self.objective = None if own else _objective(cfg)
        if env.is_main:  # what evaluation needs instead of a training stream
            write_data_info(self.run, self.shapes, fold.norm, fold.split)
        if t.activation_checkpointing:
            enable_activation_checkpointing(model)
        resume_tag = ckpt.read_latest(self.ckpt_dir) if cfg.run.resume else None
        if cfg.model.pretrained and resume_tag is None:  # a resume restores its own weights
            from brainxl.models.pretrained import (
                apply_pretrained,
                input_scale_warning,
                pretraining_channel_norm,
            )

            report = apply_pretrained(model, cfg.model.pretrained)
            if env.rank == 0:
                print(f"model.pretrained: {report}", flush=True)
                scale = pretraining_channel_norm(cfg.model.pretrained)
                warning = input_scale_warning(scale, cfg.data.reader.ephys_norm)
                if warning:
                    print(f"model.pretrained: warning: {warning}", flush=True)
        if cfg.model.spatial_init and resume_tag is None:
            self._init_spatial_filters(model, cfg)
        universal = False
        if resume_tag is not None:
            meta = ckpt.read_meta(self.ckpt_dir, resume_tag)
            resume_tag, universal = ckpt.loadable_tag(
                self.ckpt_dir, resume_tag, meta, world_size=env.world_size, rank=env.rank
            )
        self.engine = create_engine(
            model,
            t,
            env.world_size,
            self.total_steps,
            load_universal=universal,
            keep_heap=cfg.data.reader.heap_reuse,
            encoder_frozen_steps=t.encoder_frozen_steps,
        )
        # Low precision: weights in bf16/fp16 (DeepSpeed), inputs stay fp32 and autocast
        # casts per op, so model code that builds fp32 tensors (STFT windows...) still works.
        self.dtype = torch.float32
        if resume_tag is not None:
            self._resume(resume_tag)
        else:
            if env.is_main:  # a fresh start: no best weights of an abandoned attempt
                for path in (self.run.best_model, self.run.best_meta):
                    path.unlink(missing_ok=True)
            if self.graphs is not None:
                self.report({"split": "graph", "step": 0, **self.graphs})

    def _init_spatial_filters(self, model: torch.nn.Module, cfg: Any) -> None:
        """``model.spatial_init``: ICA of the EEG-only shards starts the spatial filters.

        Rank 0 fits the ICA and shares the unmixing with every rank (:func:`on_main`).
        """
        from brainxl.models.unmixing import apply_unmixing, fit_unmixing, spatial_filters_of

        n_filters = spatial_filters_of(model).weight.shape[1]
        if self.adapter.ch_idx is None:  # NeuroBOLT reads channel rows; this is a bug
            raise RuntimeError("model.spatial_init: the model's batches carry no channel rows")
        unmixing, report = on_main(
            lambda: fit_unmixing(
                cfg.model.spatial_init,
                self.shapes.ch_names,
                n_filters,
                window_s=max(1, int(cfg.data.reader.window_s)),
                seed=cfg.seed,
            )
        )
        n = apply_unmixing(model, unmixing, self.adapter.ch_idx.tolist())
        if self.env.rank == 0:
            print(f"model.spatial_init: {report}; {n} filters initialised", flush=True)
            if cfg.data.reader.ephys_norm != "subject":
                print(
                    "model.spatial_init: warning: the filters were fitted on channels "
                    "scaled per recording; fine-tune with data.reader.ephys_norm=subject",
                    flush=True,
                )

    # ----------------------------------------------------------------- checkpoints
    def _resume(self, tag: str) -> None:
        base_tag = tag.removesuffix("_universal")
        ckpt.load_engine(self.engine, self.ckpt_dir, tag)
        meta = ckpt.read_meta(self.ckpt_dir, base_tag)
        self.state = LoopState.from_json(meta["trainer"])
        rank_state = None
        if meta["world_size"] == self.env.world_size:
            rank_state = ckpt.load_rank_state(self.ckpt_dir, base_tag, self.env.rank)
        if rank_state is not None:
            ckpt.set_rng_state(rank_state["rng"])
        else:  # another world size: the data position is re-derived, RNGs re-seeded
            self.state.micro_in_epoch = self._rescale_position(meta)
            torch.manual_seed(self.cfg.seed * 1000 + self.state.step * 7 + self.env.rank)
            np.random.seed((self.cfg.seed, self.state.step, self.env.rank))
        ckpt.report_resume(
            self.report,
            self.state.step,
            from_world_size=meta["world_size"],
            world_size=self.env.world_size,
        )

    def _rescale_position(self, meta: dict[str, Any]) -> int:
        old = meta["trainer"]["micro_in_epoch"] * meta["world_size"]
        pos = old // self.env.world_size
        return min(pos, self.batches_per_epoch)

    def save(self) -> str:
        """Checkpoint the current step on every rank (collective)."""
        return ckpt.save_run_step(
            self.engine,
            self.ckpt_dir,
            self.state.step,
            self.env,
            trainer_state=self.state.to_json(),
            keep_last=self.cfg.train.keep_last,
            config_yaml=to_yaml(self.cfg),
            run_id=run_id(self.cfg),
        )

    # ----------------------------------------------------------------- the loop
    def _forward(self, **inputs: Any) -> Any:
        """The engine's forward on keyword inputs (under autocast in low precision)."""
        return engine_forward(self.engine, **inputs)

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(pred, target, loss)`` of a batch: the spec's own loss or the configured one."""
        target = self.adapter.target(batch, self.engine.device)
        inputs = self.adapter.inputs(batch, self.dtype, self.engine.device)
        if self.own_loss is not None:
            pred, loss, _ = self.own_loss(self.engine.module, self._forward, inputs, target)
        else:
            pred = self._forward(**inputs)
            assert self.objective is not None
            loss, _ = self.objective(pred.float(), target)
        return pred.float(), target, loss

    def _stream(self):
        """Micro-batches from the saved position on, epoch after epoch, forever."""
        while True:
            self.fold.train.set_epoch(self.state.epoch)
            if self.state.micro_in_epoch < self.batches_per_epoch:
                self.fold.train.skip(self.state.micro_in_epoch)
                yield from self.fold.train
            self.state.epoch += 1
            self.state.micro_in_epoch = 0

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (or early stop), then test; returns the final metrics."""
        t = self.cfg.train
        accum, world = t.grad_accum, self.env.world_size
        self.engine.train()
        stream = self._stream()
        busy = window = 0.0  # seconds in training steps: in total, since the last log line
        done = window_steps = 0
        while self.state.step < self.total_steps and not self.state.stopped_early:
            t_step = time.perf_counter()
            losses = []
            for _ in range(accum):
                batch = next(stream)
                _, _, loss = self._loss(batch)
                self.engine.backward(loss)
                self.engine.step()
                self.state.micro_in_epoch += 1
                losses.append(loss.detach().float())
            self.state.step += 1
            self.state.samples += t.batch_size * accum * world
            step = self.state.step
            dt = time.perf_counter() - t_step
            busy, window, done, window_steps = busy + dt, window + dt, done + 1, window_steps + 1
            if step % t.log_every == 0 or step == self.total_steps:
                mean_loss = all_reduce_(torch.stack(losses).mean().reshape(1))[0] / world
                rate = window_steps * t.batch_size * accum * world / max(window, 1e-9)
                eta = (self.total_steps - step) * busy / done  # validation time not included
                window = window_steps = 0
                self.report(
                    {
                        "split": "train",
                        "step": step,
                        "total_steps": self.total_steps,
                        "epoch": self.state.epoch,
                        "loss": float(mean_loss),
                        "lr": float(max(self.engine.get_lr())),
                        "samples_per_s": rate,
                        "eta_s": eta,
                    }
                )
            if t.val_every and step % t.val_every == 0 and self.fold.val is not None:
                self._validate_and_maybe_stop()
            if t.ckpt_every and step % t.ckpt_every == 0:
                self.save()
            if stop_agreed():
                if ckpt.read_latest(self.ckpt_dir) != ckpt.tag_for(step):
                    self.save()
                if self.env.is_main:
                    print(f"stop requested: saved step {step}; the run resumes from here")
                return {"stopped": True, "step": step, "run_dir": str(self.run_dir)}
        if ckpt.read_latest(self.ckpt_dir) != ckpt.tag_for(self.state.step):
            self.save()
        return self.finish()

    def _validate_and_maybe_stop(self) -> None:
        t = self.cfg.train
        m = self.evaluate_source(self.fold.val)
        self.state.history.append({"step": self.state.step, **m})
        if m["loss"] < self.state.best_val:
            self.state.best_val, self.state.best_step, self.state.bad_validations = (
                m["loss"],
                self.state.step,
                0,
            )
            if t.keep_best:
                self._save_best(m)
        else:
            self.state.bad_validations += 1
            if t.patience and self.state.bad_validations >= t.patience:
                self.state.stopped_early = True
        self.report(
            {
                "split": "val",
                "step": self.state.step,
                **m,
                "best_loss": self.state.best_val,
                "stopped_early": int(self.state.stopped_early),
            }
        )

    def _plain_weights(self) -> dict[str, torch.Tensor] | None:
        """Consolidated fp32 weights on rank 0 (collective; None on the other ranks)."""
        weights = consolidated_state_dict(self.engine)
        if weights is not None:  # integer buffers (e.g. graph edges) keep their dtype
            dtypes = {k: v.dtype for k, v in self.engine.module.state_dict().items()}
            weights = {
                k: v if dtypes[k].is_floating_point else v.to(dtypes[k]) for k, v in weights.items()
            }
        return weights

    def _save_best(self, metrics: dict[str, Any]) -> None:
        """Write the current weights as ``best_model.pt`` (collective; rank 0 writes)."""
        weights = self._plain_weights()
        if self.env.rank != 0:
            return
        atomic_torch_save(weights, self.run.best_model)
        meta = {"step": self.state.step, "val_loss": metrics["loss"]}
        meta["val_pearson_r"] = metrics.get("pearson_r")
        atomic_write_text(self.run.best_meta, json.dumps(meta, indent=2))

    def _test_weights(
        self, final: dict[str, torch.Tensor] | None
    ) -> tuple[dict[str, torch.Tensor] | None, str]:
        """The weights the test subject is scored with (rank 0) and which ones they are."""
        if self.env.rank != 0 or not self.cfg.train.keep_best or self.state.best_step < 0:
            return final, "final"
        step = best_weights_step(self.run_dir)
        if step != self.state.best_step:
            print(
                f"warning: {self.run.best_model} is from step {step}, not the best "
                f"validation step {self.state.best_step}; testing the final weights"
            )
            return final, "final"
        best = torch.load(self.run.best_model, map_location="cpu", weights_only=True)
        return best, f"best (step {step})"

    @torch.no_grad()
    def evaluate_source(self, source: BatchSource) -> dict[str, Any]:
        """Loss and mean per-series Pearson r over a stream (all ranks together)."""
        self.engine.eval()
        source.set_epoch(0)
        sums: torch.Tensor | None = None
        loss_sum = torch.zeros(2, dtype=torch.float64)
        for batch in source:
            pred, true, loss = self._loss(batch)
            loss_sum += torch.tensor([float(loss) * len(pred), len(pred)], dtype=torch.float64)
            p, y = _as_series(pred).double().cpu(), _as_series(true).double().cpu()
            part = correlation_moments(p, y)
            sums = part if sums is None else sums + part
        self.engine.train()
        if sums is None:
            raise ValueError("an evaluation stream yielded no batch; check the subjects' shards")
        all_reduce_(sums)
        all_reduce_(loss_sum)
        r = pearson_from_moments(sums)
        out: dict[str, Any] = {
            "loss": float(loss_sum[0] / loss_sum[1]),
            "pearson_r": float(r.mean()),
            "n_windows": int(loss_sum[1]),
        }
        return out

    def test(self, weights: dict[str, torch.Tensor] | None) -> dict[str, Any]:
        """Score the LOSO test subject on rank 0 with a plain copy of ``weights``.

        Every test window is predicted once (as ``brainxl evaluate`` does); writes
        ``predictions-<subject>.npz`` and ``metrics-<subject>.json`` into ``RunDir.test_dir``.
        """
        if self.env.rank != 0:
            return {}
        from brainxl.distrib.evaluation import evaluate_subjects

        assert weights is not None
        (res,) = evaluate_subjects(
            self.cfg,
            self.shapes,
            self.fold.norm,
            weights,
            list(self.fold.split.test),
            self.run.test_dir,
        ).results
        return {
            "subject": res.subject,
            "mean_r": res.mean_r,
            "mean_rho": res.mean_rho,
            "mean_cos": res.mean_cos,
            "n_times": res.n_times,
        }

    def finish(self) -> dict[str, Any]:
        """Test (if there is a test subject), save final weights and metrics."""
        final: dict[str, Any] = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "stopped_early": self.state.stopped_early,
            "best_val_loss": None if math.isinf(self.state.best_val) else self.state.best_val,
            "best_step": self.state.best_step,
            "run_dir": str(self.run_dir),
            "run_id": run_id(self.cfg),
            "fold": fold_name(self.cfg),
            "graphs": self.graphs,
            "split": {
                "train": list(self.fold.split.train),
                "val": list(self.fold.split.val),
                "test": list(self.fold.split.test),
            },
        }
        weights = self._plain_weights()
        if self.fold.test is not None:
            test_weights, which = self._test_weights(weights)
            test = self.test(test_weights)
            if test:
                test["weights"] = which
            final["test"] = test
            self.report(
                {
                    "split": "test",
                    "step": self.state.step,
                    **{k: v for k, v in test.items() if isinstance(v, int | float)},
                }
            )
        if self.env.rank == 0:
            atomic_torch_save(weights, self.run.final_model)
            text = json.dumps(final, indent=2, default=float)
            atomic_write_text(self.run.final_metrics, text)
        return final


def best_weights_step(run_dir: str | Path | RunDir) -> int | None:
    """Step of the run's ``best_model.pt`` (None when there is none)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.best_model.is_file() or not run.best_meta.is_file():
        return None
    return int(json.loads(run.best_meta.read_text())["step"])


def _objective(cfg: RunConfig):
    from brainxl.objectives import build_objective

    lc = cfg.train.loss
    return build_objective(
        lc.name,
        mse_weight=lc.mse_weight,
        pearson_weight=lc.pearson_weight,
        wavelet_weight=lc.wavelet_weight,
        wavelet=lc.wavelet,
        wavelet_levels=lc.wavelet_levels,
    )
