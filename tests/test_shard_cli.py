"""``brainxl shard BIDS OUT`` end to end on simulated BIDS datasets (BrainVision and EDF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from brainxl.launch.cli import main
from brainxl.launch.cmd_shard import load_config
from brainxl.shards.config import ReaderConfig
from brainxl.shards.manifest import read_manifest
from brainxl.shards.reader import WindowDataset, make_loader
from brainxl.shards.stats import fold_statistics


def _simulate(out: Path, **kw) -> Path:
    from brainxl.simulator.dataset import simulate_dataset

    simulate_dataset(out, n_subjects=2, minutes=1.0, seed=0, montage="biosemi32", sfreq=200.0, **kw)
    return out


def test_config_unknown_key_fails_naming_it(tmp_path: Path) -> None:
    good = tmp_path / "data.yaml"
    good.write_text(
        "data:\n  sharding:\n    segment_trs: 8\n  ingest:\n    preprocess:\n      sfreq: 100\n"
    )
    conf = load_config(good)
    assert conf.sharding.segment_trs == 8 and conf.ingest.preprocess.sfreq == 100.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("sharding:\n  segment_tr: 8\n")
    with pytest.raises(ValueError, match=r"bad.yaml: invalid key 'sharding.segment_tr'"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("shardin:\n  segment_trs: 8\n")
    with pytest.raises(ValueError, match=r"typo.yaml: unknown key 'shardin'"):
        load_config(typo)
    assert main(["shard", str(tmp_path), str(tmp_path / "o"), "--config", str(bad)]) == 2


@pytest.mark.integration
@pytest.mark.parametrize(
    "kw",
    [{}, {"fmt": "EDF", "channel_style": "legacy"}],
    ids=["brainvision", "edf-legacy-names"],
)
def test_shard_simulated_bids_end_to_end(tmp_path: Path, kw: dict, capsys) -> None:
    bids = _simulate(tmp_path / "bids", **kw)
    out = tmp_path / "shards"
    args = [
        "shard",
        str(bids),
        str(out),
        "--workers",
        "2",
        "--segment-trs",
        "8",
        "--verify",
        "--quiet",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "sub-01" in text and "total" in text and "all shards match" in text
    m = read_manifest(out)
    assert sorted(m["subjects"]) == ["01", "02"]
    assert m["sfreq"] == 200.0 and m["tr"] == 2.0 and len(m["ch_names"]) == 32
    assert "T7" in m["ch_names"]  # legacy "EEG T3-REF" arrives canonical
    assert m["totals"]["n_trs"] == 60 and m["totals"]["n_samples"] == 8
    norm = fold_statistics(out, ["01"])
    ds = WindowDataset(
        out, ReaderConfig(window_s=16.0, batch_size=4, exclude_subjects=["02"]), norm=norm
    )
    assert ds.n_windows == 30 and ds.skipped_trs == 0
    batches = list(make_loader(ds, 4, num_workers=0))
    assert len(batches) == 7
    x = batches[0]["ephys"]
    assert x.shape == (4, 32, 3200) and np.isfinite(x.numpy()).all()
    assert batches[0]["bold"].shape == (4, len(m["roi_names"]))
    # re-running skips both subjects (nothing rewritten)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")} == before


@pytest.mark.slow
def test_shard_with_source_reconstruction(tmp_path: Path) -> None:
    bids = _simulate(tmp_path / "bids", fmt="EDF", channel_style="legacy")
    out = tmp_path / "shards"
    assert main(["shard", str(bids), str(out), "--source-recon", "--quiet"]) == 0
    m = read_manifest(out)
    assert len(m["parcel_names"]) == 64
    ds = WindowDataset(out, ReaderConfig(modality="parcels", batch_size=2))
    item = next(iter(ds))
    assert item["parcels"].shape == (64, 3200) and item["ephys"].shape == (32, 3200)
