"""Equal batch counts on every rank, with unequal shards and DataLoader workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from brainxl.shards.config import ReaderConfig
from brainxl.shards.manifest import read_manifest
from brainxl.shards.reader import WindowDataset, make_loader
from shard_fixtures import write_synthetic


def _count(root: Path, rank: int, world: int, workers: int, **kw) -> tuple[int, int, set]:
    ds = WindowDataset(
        root, ReaderConfig(window_s=4.0, shuffle_buffer=8), rank=rank, world_size=world, **kw
    )
    loader = make_loader(ds, batch_size=3, num_workers=workers)
    n, keys = 0, set()
    for batch in loader:
        assert batch["ephys"].shape[0] == 3  # whole batches only
        keys.update(batch["key"])
        n += 1
    return n, ds.batches_per_epoch(), keys


@pytest.mark.parametrize("max_shard_bytes", [60_000, 10**8], ids=["shard-split", "sample-split"])
def test_equal_batches_on_two_ranks_with_unequal_shards(
    tmp_path: Path, max_shard_bytes: int
) -> None:
    write_synthetic(tmp_path, max_shard_bytes=max_shard_bytes)
    m = read_manifest(tmp_path)
    per_subject = [len(f["shards"]) for f in m["subjects"].values()]
    windows = [
        sum(d["n_trs"] for s in f["shards"] for d in s["samples"]) for f in m["subjects"].values()
    ]
    assert len(set(windows)) > 1  # subjects hold unequal amounts of data
    if max_shard_bytes == 60_000:
        assert sum(per_subject) >= 4 and len(set(per_subject)) > 1
    else:
        assert sum(per_subject) < 4  # fewer shards than rank x worker: per-sample split
    results = [_count(tmp_path, r, 2, workers=2) for r in (0, 1)]
    (n0, b0, k0), (n1, b1, k1) = results
    assert n0 == n1 == b0 == b1 == sum(windows) // 2 // 3
    assert k0 != k1  # the ranks read different data
    # epoch_windows fixes the epoch length regardless of the data
    assert _count(tmp_path, 1, 2, workers=1, epoch_windows=30)[0] == 30 // 2 // 3


@pytest.mark.integration
def test_two_processes_get_equal_batches(tmp_path: Path) -> None:
    write_synthetic(tmp_path)
    code = (
        "import sys; from brainxl.shards.config import ReaderConfig; "
        "from brainxl.shards.reader import WindowDataset, make_loader; "
        "ds = WindowDataset(sys.argv[1], ReaderConfig(window_s=4.0, shuffle_buffer=8), "
        "rank=int(sys.argv[2]), world_size=2); "
        "print(sum(1 for _ in make_loader(ds, 5, num_workers=2)))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(r)], stdout=subprocess.PIPE, text=True
        )
        for r in (0, 1)
    ]
    counts = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    ds = WindowDataset(tmp_path, ReaderConfig(window_s=4.0), world_size=2)
    ds.batch_size = 5
    assert counts == [ds.batches_per_epoch()] * 2


def test_too_little_data_for_the_batch_fails_clearly(tmp_path: Path) -> None:
    write_synthetic(tmp_path, spec={"01": [("1", 4)]})
    ds = WindowDataset(tmp_path, ReaderConfig(window_s=4.0, batch_size=3), world_size=2)
    with pytest.raises(ValueError, match="cannot fill one batch of 3 on each of 2 ranks"):
        ds.batches_per_epoch()
