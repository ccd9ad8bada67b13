"""Pretraining task specs: how a stream batch becomes a stage's loss and metrics.

The pretraining loop (:mod:`brainxl.distrib.pretrainer`) knows nothing about tokenizers or
masking; it asks its task for

- ``build_model()``: the model the engine trains;
- ``step(forward, batch, step, rank)``: the loss of one
  :class:`~brainxl.shards.pretrain_stream.StreamBatch` and a dict of *sums* (float64
  tensors, added over steps and ranks before :meth:`summarize` turns them into metrics);
- ``epoch_metrics()``: metrics of a whole stream epoch (collective), then reset;
- ``state_dict()`` / ``load_state_dict()``: what a checkpoint must keep for exact resume.

Two tasks: :class:`TokenizerTask` (VQ-NSP: reconstruction losses, re-seeded dead codes,
codebook usage and perplexity per epoch) and :class:`MEMTask` (masked EEG modeling against
a frozen tokenizer's codes, symmetric masking, masked-token accuracy per dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from brainxl.models.labram_pretrain import CodebookMonitor, channel_mask, symmetric_mask
from brainxl.models.registry import build_model

if TYPE_CHECKING:
    from brainxl.shards.pretrain_stream import StreamBatch

Forward = Callable[..., dict[str, Tensor]]
#: What masked modeling masks: LaBraM's random patches, or whole channels.
MASK_UNITS = ("patch", "channel")


def _inputs(batch: StreamBatch, device: torch.device | str) -> dict[str, Tensor]:
    p = batch.padded
    return {
        "x": p.x.to(device),
        "ch_idx": p.ch_idx.to(device),
        "pad_mask": p.pad_mask.to(device),
    }


def _one(t: Tensor | float) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64).detach().cpu().reshape(1)


class TokenizerTask:
    """VQ-NSP tokenizer training on the mixed stream.

    Parameters
    ----------
    flavor : str
    overrides : dict
        Keyword arguments of the ``labram-tokenizer`` model (e.g. ``dead_code_threshold``:
        codes whose EMA count falls below it are re-seeded from the batch).
    """

    name = "tokenizer"
    world_size: int = 1  # set by the loop (sums are over ranks)

    def __init__(self, flavor: str, overrides: dict[str, Any]) -> None:
        self.flavor, self.overrides = flavor, dict(overrides)
        self.monitor: CodebookMonitor | None = None

    def build_model(self) -> nn.Module:
        """The ``labram-tokenizer`` model at the configured flavor."""
        model = build_model("labram-tokenizer", self.flavor, **self.overrides)
        self.monitor = CodebookMonitor(model.quantizer.n_codes)
        return model

    def step(
        self, forward: Forward, batch: StreamBatch, step: int, rank: int, device: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one batch and its sums (losses, re-seeded codes, steps)."""
        out = forward(**_inputs(batch, device))
        assert self.monitor is not None
        self.monitor.update(out["codes"])
        sums = {k: _one(out[k]) for k in ("loss_quant", "loss_amp", "loss_phase")}
        sums["loss"] = _one(out["loss"])
        sums["dead_codes"] = _one(out["dead_codes"])
        sums["steps"] = _one(1.0)
        return out["loss"], sums

    def summarize(self, sums: dict[str, Tensor]) -> dict[str, float]:
        """Mean losses per step and re-seeded codes in the window (sums over ranks)."""
        n = float(sums["steps"][0])
        out = {k: float(sums[k][0]) / n for k in ("loss", "loss_quant", "loss_amp", "loss_phase")}
        # every rank re-seeds the same codes: the window's count is the sum over one rank
        out["dead_codes_reseeded"] = float(sums["dead_codes"][0]) / self.world_size
        return out

    def epoch_metrics(self) -> dict[str, float]:
        """Codebook usage (fraction of codes used) and perplexity over the epoch (all ranks)."""
        assert self.monitor is not None
        self.monitor.all_reduce()
        out = {"codebook_usage": self.monitor.usage(), "perplexity": self.monitor.perplexity()}
        self.monitor.reset()
        return out

    def state_dict(self) -> dict[str, Any]:
        """This rank's code counts of the current epoch."""
        assert self.monitor is not None
        return {"code_counts": self.monitor.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        assert self.monitor is not None
        self.monitor.counts = state["code_counts"].clone()

    def merge_states(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """One state holding the code counts of all ranks' ``states`` (a world-size change)."""
        return {"code_counts": torch.stack([s["code_counts"] for s in states]).sum(0)}


def load_tokenizer(folder: str | Path, flavor: str, overrides: dict[str, Any]) -> nn.Module:
    """The frozen tokenizer of a finished tokenizer run (``final_model.pt``, strict load).

    Raises
    ------
    ValueError
        One line naming the file when it is missing or does not match the flavor.
    """
    path = Path(folder) / "final_model.pt"
    if not path.is_file():
        raise ValueError(
            f"pretrain.tokenizer={folder}: no final_model.pt; finish the tokenizer run first"
        )
    model = build_model("labram-tokenizer", flavor, **overrides)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"{path} does not match tokenizer flavor {flavor!r}: {first}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class MEMTask:
    """Masked EEG modeling: predict the frozen tokenizer's codes of masked patches.

    Parameters
    ----------
    flavor : str
        Scale of the ``labram`` model (its codebook size follows the tokenizer).
    overrides : dict
    tokenizer : nn.Module
        Frozen :class:`~brainxl.models.labram.VQNSPTokenizer` (:func:`load_tokenizer`).
    datasets : sequence of str
        Dataset names by id (accuracy is reported per dataset).
    mask_ratio : float
        Masked share of each sample's real tokens (the symmetric pass predicts the rest).
    mask_unit : {"patch", "channel"}
        ``"patch"``: LaBraM's random patches (:func:`symmetric_mask`); ``"channel"``:
        whole channels (:func:`channel_mask`), ``mask_ratio`` of each sample's channels.
    seed : int
        Masks are drawn from ``(seed, step, rank)``: a resumed run draws the same ones.
    """

    name = "mem"
    world_size: int = 1  # set by the loop (sums are over ranks)

    def __init__(
        self,
        flavor: str,
        overrides: dict[str, Any],
        tokenizer: nn.Module,
        datasets: Sequence[str],
        mask_ratio: float = 0.5,
        seed: int = 0,
        mask_unit: str = "patch",
    ) -> None:
        if mask_unit not in MASK_UNITS:
            raise ValueError(f"mask_unit must be one of {MASK_UNITS}, got {mask_unit!r}")
        self.flavor, self.overrides = flavor, dict(overrides)
        self.tokenizer = tokenizer
        self.datasets = list(datasets)
        self.mask_ratio, self.seed, self.mask_unit = mask_ratio, seed, mask_unit

    def build_model(self) -> nn.Module:
        """The ``labram`` masked-modeling model with the tokenizer's codebook size."""
        n_codes = self.tokenizer.quantizer.n_codes
        return build_model("labram", self.flavor, **{**self.overrides, "codebook_size": n_codes})

    def step(
        self, forward: Forward, batch: StreamBatch, step: int, rank: int, device: Any
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss of one batch and its sums (loss, masked tokens right / seen per dataset)."""
        inputs = _inputs(batch, device)
        self.tokenizer.to(device)
        targets = self.tokenizer.tokenize(inputs["x"], inputs["ch_idx"], inputs["pad_mask"])
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 1009 + rank)
        if self.mask_unit == "channel":
            n_ch = batch.padded.x.shape[1]
            mask = channel_mask(batch.padded.pad_mask, n_ch, self.mask_ratio, generator=gen)
        else:
            mask = symmetric_mask(batch.padded.pad_mask, self.mask_ratio, generator=gen)
        out = forward(**inputs, mask=mask.to(device), targets=targets)
        ds = batch.dataset.to(out["sample_index"].device)[out["sample_index"]].cpu()
        n = len(self.datasets)
        correct = torch.bincount(ds, weights=out["correct"].double().cpu(), minlength=n)
        seen = torch.bincount(ds, minlength=n).double()
        sums = {
            "loss": _one(out["loss"]),
            "accuracy": _one(out["accuracy"]),
            "steps": _one(1.0),
            "correct": correct,
            "seen": seen,
        }
        return out["loss"], sums

    def summarize(self, sums: dict[str, Tensor]) -> dict[str, float]:
        """Mean loss, accuracy, and masked-token accuracy of each dataset."""
        n = float(sums["steps"][0])
        out = {"loss": float(sums["loss"][0]) / n, "accuracy": float(sums["accuracy"][0]) / n}
        for name, c, s in zip(self.datasets, sums["correct"], sums["seen"]):
            if s > 0:
                out[f"accuracy/{name}"] = float(c / s)
        return out

    def epoch_metrics(self) -> dict[str, float]:
        """Nothing beyond the step metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the masks are a function of (seed, step, rank)."""
        return {}

    def merge_states(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """Nothing to merge."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
