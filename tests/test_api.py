"""The notebook API runs the same steps as the commands."""

from __future__ import annotations

import json
from pathlib import Path

import brainxl


def test_simulate_then_shard_through_the_api(tmp_path: Path) -> None:
    summary = brainxl.simulate(tmp_path / "bids", subjects=2, minutes=1.0, seed=3, n_parcels=8)
    assert (tmp_path / "bids" / "dataset_description.json").is_file()
    assert summary is not None
    manifest = brainxl.shard(tmp_path / "bids", tmp_path / "shards", progress=False)
    assert sorted(manifest["subjects"]) == ["01", "02"]
    on_disk = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert on_disk["subjects"].keys() == manifest["subjects"].keys()


def test_load_config_applies_overrides() -> None:
    cfg = brainxl.load_config("neurobolt-debug", ["train.lr=0.0005", "data.test_subject=03"])
    assert cfg.train.lr == 0.0005 and cfg.data.test_subject == "03"
