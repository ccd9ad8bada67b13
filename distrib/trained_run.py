"""A trained run, loaded for prediction: model, weights, channel lists, training statistics.

Loaded through the evaluation routine's own steps (so ``brainxl predict`` and
``brainxl evaluate`` see the same model): ``launch.cmd_evaluate`` ``locate``/``load_weights``
(weights; ZeRO checkpoints consolidated), ``distrib.evaluation`` ``read_data_info`` (the
shapes, training statistics and split recorded in the run folder) and ``load_model`` (the
model built once from those shapes), and the run's :class:`~brainxl.shards.shardset.ShardSet`
(``distrib.data.open_shards``) for its ingest settings and channel types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from brainxl.models.spec import DataShapes


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
    adapter : brainxl.models.spec.BatchIO
    norm : shards.stats.NormStats
        Statistics of the run's training subjects (``norm.subjects``).
    weights : str
        ``"best"``, ``"final"`` or the checkpoint tag the weights came from.
    shapes : DataShapes
        The data shapes the model was built for (rows, rates, window, frames).
    manifest : dict
        The run's shard manifest (ingest settings, channel types, source dataset).
    """

    run_dir: Path
    cfg: Any
    model: nn.Module
    adapter: Any
    norm: Any
    weights: str
    shapes: DataShapes
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
    def modality(self) -> str:
        """``"sensors"`` or ``"parcels"``: what the electrophysiology side is."""
        return str(self.shapes.modality)

    @property
    def ephys_names(self) -> list[str]:
        """Rows of the electrophysiology side the model reads (parcels or channels)."""
        return list(self.shapes.ch_names)

    @property
    def ch_names(self) -> list[str]:
        """Sensor channels the model was trained on, in the order it reads them."""
        if self.modality == "sensors":
            return list(self.shapes.ch_names)
        return list(self.manifest.get("ch_names") or [])

    @property
    def parcel_names(self) -> list[str]:
        """Source parcels (the model's rows when :attr:`modality` is ``"parcels"``)."""
        if self.modality == "parcels":
            return list(self.shapes.ch_names)
        return list(self.manifest.get("parcel_names") or [])

    @property
    def ch_types(self) -> list[str]:
        """``"eeg"``/``"mag"``/``"grad"`` per channel of :attr:`ch_names`."""
        frags = list(self.manifest.get("subjects", {}).values())
        types = frags[0].get("ch_types") if frags else None
        return list(types) if types else ["eeg"] * len(self.ch_names)

    @property
    def roi_names(self) -> list[str]:
        return list(self.shapes.roi_names)

    @property
    def sfreq(self) -> float:
        return float(self.shapes.sfreq)

    @property
    def tr(self) -> float | None:
        return None if self.shapes.tr is None else float(self.shapes.tr)

    @property
    def window(self) -> int:
        """Electrophysiology window length in samples."""
        return self.shapes.n_times

    @property
    def n_targets(self) -> int:
        """BOLD frames per window."""
        return int(self.shapes.n_frames)

    @property
    def lag_s(self) -> float:
        return float(self.cfg.data.reader.lag_s)


def load_trained_run(target: str | Path, weights: str = "best") -> TrainedRun:
    """Load the model of a run or checkpoint folder for prediction.

    The model is rebuilt by the evaluation routine (:func:`brainxl.distrib.evaluation.load_model`)
    from the shapes and statistics the run recorded (``read_data_info``).

    Parameters
    ----------
    target : path
        Run folder or checkpoint folder (``<run>/checkpoints/stepXXXXXXXX``).
    weights : {"best", "final"}
        Of a finished run: the best-validation weights (default) or the final ones.

    Returns
    -------
    TrainedRun

    Raises
    ------
    ValueError
        If the run's shards (its ingest settings) are gone, naming the config key.
    """
    from brainxl.distrib.config import load_config
    from brainxl.distrib.data import open_shards
    from brainxl.distrib.evaluation import load_model, read_data_info
    from brainxl.distrib.rundir import RunDir
    from brainxl.launch.cmd_evaluate import load_weights, locate

    run_dir, ckpt_dir, tag = locate(target, weights)
    run = RunDir(run_dir)
    cfg = load_config(run.config_path)
    try:
        shards = open_shards(cfg)
    except FileNotFoundError:
        raise ValueError(
            f"{run.config_path}: data.shards={cfg.data.shards} has no shard manifest; the "
            "run's shards hold its ingest settings (preprocessing, channel mapping): restore "
            "them there"
        ) from None
    shapes, norm, _ = read_data_info(run, cfg)
    model, adapter = load_model(cfg, shapes, load_weights(run_dir, ckpt_dir, tag))
    return TrainedRun(run_dir, cfg, model, adapter, norm, tag or "final", shapes, shards.manifest)
