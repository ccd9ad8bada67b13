"""A tiny pretraining corpus: two EEG-only datasets and tokenizer / MEM configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from brainxl.shards.config import ShardingConfig
from brainxl.shards.eeg_writer import shard_eeg

from brainxl.simulator.eeg_corpus import simulate_eeg_corpus

REPO = Path(__file__).resolve().parent.parent


def write_corpus(root: Path, train: dict[str, Any]) -> Path:
    """Two EEG-only datasets (2 subjects x 0.5 min; 19- and 32-channel montages) sharded
    under ``root``, and ``root/tok.yaml`` / ``root/mem.yaml`` reading them with the
    ``train`` settings (montage bucketing off); runs go to ``root/runs``. Returns ``root``."""
    sources = []
    for i, montage in enumerate(("clinical19", "biosemi32")):
        bids = root / f"bids{i}"
        simulate_eeg_corpus(bids, 2, 0.5, seed=i, montages=montage, rates=[200])
        out = root / f"shards{i}"
        shard_eeg(bids, out, cfg=ShardingConfig(segment_s=10.0, workers=1), progress=False,
                  report=lambda line: None)  # fmt: skip
        sources.append({"path": str(out)})
    cfg = {
        "base": str(REPO / "configs" / "pretrain" / "tokenizer-debug.yaml"),
        # no montage bucketing: 19- and 32-channel windows share batches (padding, masks)
        "data": {
            "sources": sources,
            "window_s": 2,
            "token_budget": 4 * 32 * 2,
            "bucket_batches": 0,
        },
        "train": dict(train),
        "run": {"root": str(root / "runs")},
        "logging": {"wandb": "disabled"},
    }
    (root / "tok.yaml").write_text(yaml.safe_dump(cfg))
    mem = {**cfg, "base": str(REPO / "configs" / "pretrain" / "mem-debug.yaml")}
    (root / "mem.yaml").write_text(yaml.safe_dump(mem))
    return root
