"""The pretraining loop: steps over :class:`~brainxl.shards.pretrain_stream.PretrainStream`
epochs with a task spec (:mod:`brainxl.models.labram_tasks`), checkpoints, exact resume.

Runs in every rank process, on the same machinery as training: the DeepSpeed engine of
:func:`~brainxl.distrib.engine.create_engine`, checkpoints of :mod:`brainxl.distrib.checkpoint`
(loop state, this rank's RNG states and the task's state), stop signals of
:mod:`brainxl.distrib.signals` and the run's reporter. The stream position is the epoch
and the batches of it done on this rank, so a resumed run (same world size) continues
with exactly the batches, masks and random draws the uninterrupted run would have used.

Resuming on another world size (2 ranks -> 1, 1 -> 2, ...) continues the current epoch
where the global batch sequence stopped: the ``batch_in_epoch x old world size`` batches
the old ranks consumed are skipped (:attr:`PretrainState.epoch_offset`) and the rest of
the epoch is dealt out to the new ranks, so no window is seen twice or skipped (besides
the new remainder dropped for equal ranks). The weights and optimizer come back through
DeepSpeed (a universal checkpoint for ZeRO > 0); the tasks' epoch state of all old ranks is
merged onto the new rank 0 (codebook counts add up); the step count, LR schedule and
``train.steps`` carry on; with ``train.epochs`` the total is recounted from the new
shares. Masks and dropout draws then differ from a run on the old world size (they depend
on the rank), so such a resume is exact in data order, not bitwise.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from brainxl.distrib import checkpoint as ckpt
from brainxl.distrib.engine import (
    all_reduce_,
    build_partitioned,
    consolidated_state_dict,
    create_engine,
    engine_forward,
    stop_agreed,
)
from brainxl.distrib.env import DistEnv
from brainxl.distrib.pretrain_config import PretrainConfig, pretrain_run_id, to_yaml
from brainxl.distrib.reporting import Reporter
from brainxl.distrib.rundir import RunDir
from brainxl.shards.pretrain_stream import PretrainStream

from brainxl.files import atomic_torch_save, atomic_write_text


def _own_peak_rss(env: DistEnv) -> torch.Tensor:
    """This rank's peak resident memory (GiB) at its place in a world-size vector."""
    import resource

    peak = torch.zeros(env.world_size, dtype=torch.float64)
    peak[env.rank] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return peak


@dataclass
class PretrainState:
    """The loop's progress that a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch done on this rank
    tokens: int = 0  # tokens seen, padding included (all ranks)
    real_tokens: int = 0  # tokens seen that are not padding (all ranks)
    epoch_offset: int = 0  # batches of the epoch consumed on an earlier world size

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Pretrainer:
    """Pretrain one stage on every rank of the job.

    Parameters
    ----------
    cfg : PretrainConfig
    env : DistEnv
    stream : PretrainStream
        This rank's share of the mixed stream.
    task : TokenizerTask or MEMTask
        How a batch becomes the loss and metrics (:mod:`brainxl.models.labram_tasks`).
    run : RunDir
    report : Reporter
    """

    def __init__(
        self,
        cfg: PretrainConfig,
        env: DistEnv,
        stream: PretrainStream,
        task: Any,
        run: RunDir,
        report: Reporter,
    ) -> None:
        self.cfg, self.env, self.stream, self.task = cfg, env, stream, task
        self.run, self.report = run, report
        self.ckpt_dir = run.checkpoints
        t = cfg.train
        if stream.batches_per_epoch(0) < 1:
            raise ValueError(
                "the pretraining stream yields no batch per rank per epoch; add data, raise "
                "data.token_budget or use fewer ranks"
            )
        self.state = PretrainState()
        tag = ckpt.read_latest(self.ckpt_dir) if cfg.run.resume else None
        universal, meta = False, None
        if tag is not None:
            meta = ckpt.read_meta(self.ckpt_dir, tag)
            self.state = PretrainState(**meta["trainer"])
            if meta["world_size"] != env.world_size:
                self.state.epoch_offset += self.state.batch_in_epoch * meta["world_size"]
                self.state.batch_in_epoch = 0
            tag, universal = ckpt.loadable_tag(
                self.ckpt_dir, tag, meta, world_size=env.world_size, rank=env.rank
            )
        self.total_steps = t.steps if t.epochs <= 0 else self._epoch_steps(t.epochs)
        task.world_size = env.world_size
        model, n_params = build_partitioned(task.build_model, t, env.world_size, cfg.seed)
        if t.zero_stage == 3 and env.rank == 0:
            print(f"[zero.Init] {n_params} parameters partitioned over {env.world_size} ranks "
                  "as the model was built", flush=True)  # fmt: skip
        if t.activation_checkpointing:
            model.set_grad_checkpointing(True)
        self.engine = create_engine(
            model, t, env.world_size, self.total_steps, load_universal=universal, n_params=n_params
        )
        if tag is not None:
            assert meta is not None
            self._resume(tag, meta)

    def _epoch_steps(self, epochs: int) -> int:
        """Steps to the end of epoch ``epochs - 1`` from the current position."""
        st, stream = self.state, self.stream
        if st.epoch >= epochs:
            return st.step
        rest = stream.batches_per_epoch(st.epoch, st.epoch_offset) - st.batch_in_epoch
        later = sum(stream.batches_per_epoch(e) for e in range(st.epoch + 1, epochs))
        return st.step + rest + later

    # ----------------------------------------------------------------- checkpoints
    def _resume(self, tag: str, meta: dict[str, Any]) -> None:
        ckpt.load_engine(self.engine, self.ckpt_dir, tag)
        base = tag.removesuffix("_universal")
        if meta["world_size"] == self.env.world_size:
            rank_state = ckpt.load_rank_state(self.ckpt_dir, base, self.env.rank)
            if rank_state is None:
                raise RuntimeError(
                    f"{self.ckpt_dir / base}: no saved state of rank {self.env.rank}"
                )
            ckpt.set_rng_state(rank_state["rng"])
            self.task.load_state_dict(rank_state["task"])
        else:  # another world size: rank 0 takes the old ranks' merged epoch state
            old = [ckpt.load_rank_state(self.ckpt_dir, base, r) for r in range(meta["world_size"])]
            if any(o is None for o in old):
                raise RuntimeError(f"{self.ckpt_dir / base}: a rank's saved state is missing")
            merged = self.task.merge_states([o["task"] for o in old])  # type: ignore[index]
            if self.env.rank == 0:
                self.task.load_state_dict(merged)
            torch.manual_seed(self.cfg.seed * 1000 + self.state.step * 7 + self.env.rank)
        ckpt.report_resume(
            self.report,
            self.state.step,
            from_world_size=meta["world_size"],
            world_size=self.env.world_size,
            epoch=self.state.epoch,
            epoch_offset=self.state.epoch_offset,
        )

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
            run_id=pretrain_run_id(self.cfg),
            rank_extra={"task": self.task.state_dict()},
        )

    # ----------------------------------------------------------------- the loop
    def _forward(self, **inputs: Any) -> Any:
        return engine_forward(self.engine, **inputs)

    def _report_window(
        self, sums: dict[str, torch.Tensor], seconds: float, counts: torch.Tensor
    ) -> tuple[float, float]:
        """Report the log window's metrics (collective); returns its tokens, real tokens."""
        names = sorted(sums)
        flat = torch.cat([sums[k] for k in names] + [counts, _own_peak_rss(self.env)])
        all_reduce_(flat)
        out, at = {}, 0
        for k in names:
            out[k] = flat[at : at + len(sums[k])]
            at += len(sums[k])
        tokens, real = float(flat[at]), float(flat[at + 1])
        peak = [round(float(v), 3) for v in flat[at + 2 :]]
        metrics = self.task.summarize(out)
        self.report(
            {
                "split": "train",
                "step": self.state.step,
                "total_steps": self.total_steps,
                "epoch": self.state.epoch,
                **metrics,
                "lr": float(max(self.engine.get_lr())),
                "tokens_per_s": tokens / max(seconds, 1e-9),
                "tokens_per_s_per_rank": tokens / max(seconds, 1e-9) / self.env.world_size,
                "padding_fraction": 1.0 - real / max(tokens, 1.0),
                "peak_rss_gib": peak,
                "eta_s": (self.total_steps - self.state.step) * seconds / max(self._window, 1),
            }
        )
        return tokens, real

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps``; returns the final metrics (``stopped`` on a stop signal)."""
        t = self.cfg.train
        self.engine.train()
        sums: dict[str, torch.Tensor] = {}
        counts = torch.zeros(2, dtype=torch.float64)
        window_s, self._window = 0.0, 0
        st = self.state
        batches = self.stream.batches(st.epoch, start=st.batch_in_epoch, offset=st.epoch_offset)
        while self.state.step < self.total_steps:
            t0 = time.perf_counter()
            batch = next(batches, None)
            if batch is None:  # the epoch is over
                self._end_epoch()
                batches = self.stream.batches(self.state.epoch, start=0)
                continue
            loss, part = self.task.step(
                self._forward, batch, self.state.step, self.env.rank, self.engine.device
            )
            self.engine.backward(loss)
            self.engine.step()
            self.state.step += 1
            self.state.batch_in_epoch += 1
            for k, v in part.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            counts += torch.tensor([batch.tokens, batch.real_tokens], dtype=torch.float64)
            window_s += time.perf_counter() - t0
            self._window += 1
            step = self.state.step
            if step % t.log_every == 0 or step == self.total_steps:
                tokens, real = self._report_window(sums, window_s, counts)
                self.state.tokens += int(tokens)
                self.state.real_tokens += int(real)
                sums, counts, window_s, self._window = {}, counts.zero_(), 0.0, 0
            if st.batch_in_epoch == self.stream.batches_per_epoch(st.epoch, st.epoch_offset):
                self._end_epoch()
                batches = self.stream.batches(self.state.epoch, start=0)
            if t.ckpt_every and step % t.ckpt_every == 0:
                self.save()
            if stop_agreed():
                if ckpt.read_latest(self.ckpt_dir) != ckpt.tag_for(step):
                    self.save()
                if self.env.is_main:
                    print(f"stop requested: saved step {step}; the run resumes from here")
                return {"stopped": True, "step": step, "run_dir": str(self.run.path)}
        if ckpt.read_latest(self.ckpt_dir) != ckpt.tag_for(self.state.step):
            self.save()
        return self.finish()

    def _end_epoch(self) -> None:
        metrics = self.task.epoch_metrics()
        plan = self.stream.plan(self.state.epoch, self.state.epoch_offset)
        self.report(
            {
                "split": "epoch",
                "step": self.state.step,
                "epoch": self.state.epoch,
                **metrics,
                "dropped_batches": plan.dropped_batches,
            }
        )
        self.state.epoch += 1
        self.state.batch_in_epoch = self.state.epoch_offset = 0

    def finish(self) -> dict[str, Any]:
        """Write ``final_model.pt`` (consolidated fp32 weights) and ``final_metrics.json``.

        ``peak_rss_gib`` lists each rank's peak resident memory before the weights are
        gathered for saving (the training footprint: model, optimizer, activations).
        """
        peak = [round(float(v), 3) for v in all_reduce_(_own_peak_rss(self.env))]
        weights = consolidated_state_dict(self.engine)
        final: dict[str, Any] = {
            "step": self.state.step,
            "epoch": self.state.epoch,
            "stage": self.cfg.pretrain.stage,
            "tokens": self.state.tokens,
            "padding_fraction": 1.0 - self.state.real_tokens / max(self.state.tokens, 1),
            "run_dir": str(self.run.path),
            "run_id": pretrain_run_id(self.cfg),
            "datasets": list(self.stream.datasets),
            "peak_rss_gib": peak,
        }
        if self.state.batch_in_epoch > 0:  # the epoch metrics (codebook usage) of the rest
            final["partial_epoch"] = {
                "epoch": self.state.epoch,
                "batches": self.state.batch_in_epoch,
                **self.task.epoch_metrics(),
            }
        if self.env.rank == 0:
            assert weights is not None
            atomic_torch_save(weights, self.run.final_model)
            atomic_write_text(self.run.final_metrics, json.dumps(final, indent=2, default=float))
        return final
