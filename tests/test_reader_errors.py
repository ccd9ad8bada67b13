"""Truncated and corrupt shards: ShardError naming file and key, or skip and count."""

from __future__ import annotations

from pathlib import Path

import pytest
from brainxl.shards.config import ReaderConfig
from brainxl.shards.errors import ShardError
from brainxl.shards.manifest import read_manifest
from brainxl.shards.reader import WindowDataset, make_loader


@pytest.fixture
def pristine(synthetic_shards: Path) -> Path:
    return synthetic_shards


@pytest.fixture
def shards(synthetic_shards_copy: Path) -> Path:
    return synthetic_shards_copy


def _victim(root: Path) -> tuple[Path, dict]:
    entry = read_manifest(root)["subjects"]["03"]["shards"][2]
    return root / entry["path"], entry


def _cfg(on_error: str) -> ReaderConfig:
    return ReaderConfig(window_s=4.0, batch_size=2, shuffle_buffer=4, on_error=on_error)


@pytest.mark.timeout(60)
def test_truncated_shard_fails_naming_file_and_key(shards: Path) -> None:
    path, entry = _victim(shards)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # cut inside the second sample
    with pytest.raises(ShardError) as info:
        list(WindowDataset(shards, _cfg("fail")))
    assert str(path) in str(info.value)
    assert info.value.key == entry["samples"][1]["key"]


@pytest.mark.timeout(60)
def test_truncated_at_sample_boundary_is_detected(shards: Path) -> None:
    path, entry = _victim(shards)
    import tarfile

    with tarfile.open(path) as tar:
        first_key = entry["samples"][0]["key"]
        cut = max(m.offset_data + m.size for m in tar.getmembers() if m.name.startswith(first_key))
    path.write_bytes(path.read_bytes()[: (cut + 511) // 512 * 512])
    with pytest.raises(ShardError, match=r"1 samples but the manifest lists 2 \(truncated shard\)"):
        list(WindowDataset(shards, _cfg("fail")))


@pytest.mark.timeout(60)
def test_corrupt_member_fails_naming_key(shards: Path) -> None:
    path, entry = _victim(shards)
    data = bytearray(path.read_bytes())
    pos = data.index(b"\x93NUMPY", data.index(entry["samples"][1]["key"].encode()))
    data[pos : pos + 6] = b"XXXXXX"  # same size: the tar is intact, the member is not
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"bad magic") as info:
        list(WindowDataset(shards, _cfg("fail")))
    assert info.value.key == entry["samples"][1]["key"] and info.value.path == str(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_skip_policy_counts_and_keeps_batch_count(shards: Path, workers: int) -> None:
    path, _ = _victim(shards)
    path.write_bytes(path.read_bytes()[:3000])
    missing = read_manifest(shards)["subjects"]["01"]["shards"][0]["path"]
    (shards / missing).unlink()
    ds = WindowDataset(shards, _cfg("skip"))
    loader = make_loader(ds, 2, num_workers=workers)
    n = sum(1 for _ in loader)
    assert n == ds.batches_per_epoch()
    assert ds.skipped_errors >= 2  # the truncated shard and the missing one (each pass)


@pytest.mark.timeout(60)
def test_all_data_corrupt_raises_instead_of_hanging(shards: Path) -> None:
    for p in shards.rglob("*.tar"):
        p.write_bytes(b"garbage" * 100)
    with pytest.raises(ShardError, match="a full pass over its data gave no windows"):
        list(WindowDataset(shards, _cfg("skip")))
