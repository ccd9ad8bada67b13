"""Metric sinks for launchers (console, ``metrics.jsonl``, W&B).

The implementation lives in :mod:`distrib.reporting` because every rank process builds its
reporter there (``launch -> distrib`` is the import direction). Launchers (Ray Tune,
SLURM) add their own sink by passing ``report=`` to :func:`brainxl.distrib.entry.train`.
"""

from __future__ import annotations

from brainxl.distrib.reporting import (
    ConsoleSink,
    JsonlSink,
    Report,
    Reporter,
    WandbSink,
    format_eta,
    make_reporter,
    wandb_mode,
)

__all__ = [
    "ConsoleSink",
    "JsonlSink",
    "Report",
    "Reporter",
    "WandbSink",
    "format_eta",
    "make_reporter",
    "wandb_mode",
]
