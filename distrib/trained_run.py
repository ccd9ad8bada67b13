"""A trained run, loaded for prediction: model, weights, channel lists, training statistics.

Calls into the training side (few, so they can be retargeted): ``launch.cmd_evaluate``
``locate``/``load_weights`` (weights; ZeRO checkpoints consolidated), ``distrib.config``
``load_config``, ``distrib.data.build_fold`` (split and training statistics),
``distrib.trainer.data_info`` and ``distrib.tasks.build_model_and_adapter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


@dataclass
class TrainedRun:
    """A trained model with everything needed to feed it new recordings.

    Attributes
    ----------
    run_dir : Path
    cfg : RunConfig
        The run's resolved configuration.
    model : nn.Module
        In eval mode, weights loaded.
    adapter : distrib.tasks.TaskAdapter
    norm : shards.stats.NormStats
        Statistics of the run's training subjects (``norm.subjects``).
    weights : str
        ``"best"``, ``"final"`` or the checkpoint tag the weights came from.
    manifest : dict
        The run's shard manifest (channel, ROI, parcel lists; ingest settings).
    """

    run_dir: Path
    cfg: Any
    model: nn.Module
    adapter: Any
    norm: Any
    weights: str
    manifest: dict[str, Any]

    @property
    def task(self) -> str:
        """``"eeg2fmri"`` or ``"fmri2eeg"``."""
        return str(self.adapter.task)

    @property
    def run_id(self) -> str:
        """The run folder's name (its identity hash)."""
        return self.run_dir.name

    @property
    def ch_names(self) -> list[str]:
        """Channels the model was trained on, in the order it reads them."""
        return list(self.manifest.get("ch_names") or [])

    @property
    def ch_types(self) -> list[str]:
        """``"eeg"``/``"mag"``/``"grad"`` per channel of :attr:`ch_names`."""
        frags = list(self.manifest["subjects"].values())
        types = frags[0].get("ch_types") if frags else None
        return list(types) if types else ["eeg"] * len(self.ch_names)

    @property
    def roi_names(self) -> list[str]:
        return list(self.manifest.get("roi_names") or [])

    @property
    def parcel_names(self) -> list[str]:
        return list(self.manifest.get("parcel_names") or [])

    @property
    def sfreq(self) -> float:
        return float(self.manifest["sfreq"])

    @property
    def tr(self) -> float | None:
        tr = self.manifest.get("tr")
        return None if tr is None else float(tr)

    @property
    def modality(self) -> str:
        """``"sensors"`` or ``"parcels"``: what the electrophysiology side is."""
        return str(self.cfg.data.reader.modality)

    @property
    def window(self) -> int:
        """Electrophysiology window length in samples."""
        return int(round(float(self.cfg.data.reader.window_s) * self.sfreq))

    @property
    def n_targets(self) -> int:
        return int(self.cfg.data.reader.n_targets)

    @property
    def lag_s(self) -> float:
        return float(self.cfg.data.reader.lag_s)

    @property
    def ephys_names(self) -> list[str]:
        """Rows of the electrophysiology side (parcels or channels)."""
        return self.parcel_names if self.modality == "parcels" else self.ch_names


def load_trained_run(target: str | Path, weights: str = "best") -> TrainedRun:
    """Load the model of a run or checkpoint folder for prediction.

    Parameters
    ----------
    target : path
        Run folder or checkpoint folder (``<run>/checkpoints/stepXXXXXXXX``).
    weights : {"best", "final"}
        Of a finished run: the best-validation weights (default) or the final ones.

    Returns
    -------
    TrainedRun
    """
    from brainxl.distrib.config import load_config
    from brainxl.distrib.data import build_fold
    from brainxl.distrib.tasks import build_model_and_adapter
    from brainxl.distrib.trainer import data_info
    from brainxl.launch.cmd_evaluate import load_weights, locate
    from brainxl.shards.manifest import read_manifest

    run_dir, ckpt_dir, tag = locate(target, weights)
    cfg = load_config(run_dir / "config.yaml")
    shards = Path(cfg.data.shards)
    if not (shards / "manifest.json").is_file():
        raise ValueError(
            f"{run_dir / 'config.yaml'}: data.shards={shards} has no manifest.json; the run's "
            "shards hold its channel lists and training statistics: restore them there"
        )
    fold = build_fold(cfg, 0, 1)
    torch.manual_seed(cfg.seed)
    model, adapter = build_model_and_adapter(cfg.model, data_info(fold.train, cfg))
    model.load_state_dict(load_weights(run_dir, ckpt_dir, tag))
    model.eval()
    return TrainedRun(
        run_dir, cfg, model, adapter, fold.norm, tag or "final", read_manifest(shards)
    )
