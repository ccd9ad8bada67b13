"""Corruption is caught where it is read: each sample carries checksums of its members.

Bytes altered inside an array member (tar structure and ``.npy`` header intact) are named
by the reader, the whole-recording reader and ``brainxl train`` (file and key) under the
default ``fail`` policy, and skipped and counted under ``skip``. Shards written before
per-sample checksums stay readable, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from brainxl.shards.config import ReaderConfig
from brainxl.shards.errors import ShardError
from brainxl.shards.manifest import read_manifest
from brainxl.shards.reader import WindowDataset, make_loader
from brainxl.shards.shardset import ShardSet
from brainxl.shards.tarformat import (
    CHECKSUM_KEY,
    META_CHECKSUM_KEY,
    TarSampleWriter,
    iter_tar_samples,
    member_checksum,
)
from brainxl.shards.verify import verify_shards

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pristine(synthetic_shards: Path) -> Path:
    return synthetic_shards


@pytest.fixture
def shards(synthetic_shards_copy: Path) -> Path:
    return synthetic_shards_copy


def _cfg(on_error: str = "fail") -> ReaderConfig:
    return ReaderConfig(window_s=4.0, batch_size=2, shuffle_buffer=4, on_error=on_error)


def alter_member(tar: Path, suffix: str = "ephys.npy", sample: int | None = None) -> list[str]:
    """Flip one payload byte of ``suffix`` in every sample (or one) of ``tar``; return keys."""
    with tarfile.open(tar) as t:
        members = [m for m in t.getmembers() if m.name.endswith("." + suffix)]
    if sample is not None:
        members = [members[sample]]
    data = bytearray(tar.read_bytes())
    for m in members:
        data[m.offset_data + m.size - 3] ^= 0x40  # the payload's last float, not the header
    tar.write_bytes(bytes(data))
    return [m.name.split(".", 1)[0] for m in members]


def test_samples_carry_checksums_of_their_members(pristine: Path) -> None:
    m = read_manifest(pristine)
    assert m["version"] == 2 and ShardSet(pristine).has_checksums
    entry = m["subjects"]["01"]["shards"][0]
    samples = list(iter_tar_samples(pristine / entry["path"]))
    assert [k for k, _ in samples] == [d["key"] for d in entry["samples"]]
    for (_, members), desc in zip(samples, entry["samples"]):
        meta = json.loads(members["meta.json"])
        assert set(meta[CHECKSUM_KEY]) == {"ephys.npy", "bold.npy"}
        for suffix, value in meta[CHECKSUM_KEY].items():
            assert member_checksum(members[suffix]) == value
        assert desc[META_CHECKSUM_KEY] == member_checksum(members["meta.json"])


@pytest.mark.timeout(60)
def test_altered_array_bytes_fail_naming_file_and_key(shards: Path) -> None:
    entry = read_manifest(shards)["subjects"]["03"]["shards"][1]
    path = shards / entry["path"]
    [key] = alter_member(path, "bold.npy", sample=1)
    with pytest.raises(ShardError, match="member bold.npy differs from its checksum") as info:
        list(WindowDataset(shards, _cfg()))
    assert info.value.path == str(path) and info.value.key == key
    assert f"{path} (key {key})" in str(info.value)
    problems = verify_shards(shards)  # --verify names it too (the shard's sha256)
    assert [p.path for p in problems] == [str(path)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_skip_policy_skips_altered_samples(shards: Path, workers: int) -> None:
    clean = WindowDataset(shards, _cfg("skip"))
    entry = read_manifest(shards)["subjects"]["01"]["shards"][0]
    keys = set(alter_member(shards / entry["path"]))
    ds = WindowDataset(shards, _cfg("skip"))
    batches = list(make_loader(ds, 2, num_workers=workers))
    assert len(batches) == ds.batches_per_epoch() == clean.batches_per_epoch()
    assert ds.skipped_errors >= len(keys)
    assert not keys & {k for b in batches for k in b["key"]}  # never a window of them


@pytest.mark.timeout(60)
def test_altered_meta_json_fails(shards: Path) -> None:
    entry = read_manifest(shards)["subjects"]["02"]["shards"][0]
    path = shards / entry["path"]
    data = bytearray(path.read_bytes())
    pos = data.index(b'"sfreq": 50.0')  # same length, still valid JSON, wrong value
    data[pos : pos + 13] = b'"sfreq": 51.0'
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="meta.json differs from the manifest's checksum"):
        list(WindowDataset(shards, _cfg()))


def test_whole_recordings_are_checked(shards: Path) -> None:
    entry = read_manifest(shards)["subjects"]["01"]["shards"][0]
    [key] = alter_member(shards / entry["path"], sample=0)
    with pytest.raises(ShardError, match=f"key {key}.*ephys.npy differs from its checksum"):
        ShardSet(shards).recording_timeseries(["01"], ("ephys",))


def rewrite_without_checksums(path: Path, samples: set[int] | None = None) -> None:
    """Rewrite a shard with the ``meta.json`` of ``samples`` (default all) lacking checksums."""
    old = list(iter_tar_samples(path))
    with open(path, "wb") as f:
        w = TarSampleWriter(f)
        for i, (key, members) in enumerate(old):
            meta = json.loads(members["meta.json"])
            if samples is None or i in samples:
                meta.pop(CHECKSUM_KEY)
            out = {s: bytes(v) for s, v in members.items() if s != "meta.json"}
            w.write(key, {**out, "meta.json": json.dumps(meta).encode()})
        w.close()


def strip_checksums(root: Path) -> None:
    """Rewrite ``root`` as brainxl wrote shards before per-sample checksums (version 1)."""
    m = read_manifest(root)
    for frag in m["subjects"].values():
        for entry in frag["shards"]:
            path = root / entry["path"]
            rewrite_without_checksums(path)
            entry["bytes"] = path.stat().st_size
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            for desc in entry["samples"]:
                desc.pop(META_CHECKSUM_KEY)
        frag.pop("version", None)
    m["version"] = 1
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.mark.timeout(60)
def test_old_shards_without_checksums_are_read_with_a_warning(
    shards: Path, pristine: Path, caplog
) -> None:
    strip_checksums(shards)
    assert verify_shards(shards) == []
    with caplog.at_level(logging.WARNING, logger="brainxl.shards.shardset"):
        old = WindowDataset(shards, _cfg())
    assert "before per-sample checksums" in caplog.text and "re-run `brainxl shard`" in caplog.text
    new = WindowDataset(pristine, _cfg())
    a, b = list(make_loader(old, 2)), list(make_loader(new, 2))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["key"] == y["key"]
        np.testing.assert_array_equal(x["ephys"].numpy(), y["ephys"].numpy())


@pytest.mark.timeout(60)
def test_a_sample_without_checksums_in_a_checksummed_set_fails(shards: Path) -> None:
    m = read_manifest(shards)
    entry = m["subjects"]["02"]["shards"][0]
    rewrite_without_checksums(shards / entry["path"], {0})
    entry["samples"][0].pop(META_CHECKSUM_KEY)
    (shards / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="meta.json holds no member checksums") as info:
        list(WindowDataset(shards, _cfg()))
    assert info.value.key == entry["samples"][0]["key"]


def _train(shards: Path, runs: Path, **kw: object) -> subprocess.CompletedProcess:
    from train_fixtures import overrides

    cmd = [sys.executable, "-m", "brainxl.launch.cli", "train", *overrides(shards, runs, **kw)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
@pytest.mark.timeout(1300)
def test_brainxl_train_stops_on_altered_bytes_or_skips_them(tmp_path: Path) -> None:
    from train_fixtures import write_shards

    shards = write_shards(tmp_path / "shards")
    altered = []
    for tar in sorted((shards / "sub-01").glob("*.tar")):  # a training subject
        altered += [(tar, key) for key in alter_member(tar)]
    proc = _train(shards, tmp_path / "runs-fail")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "differs from its checksum" in out
    assert any(f"{tar} (key {key})" in out for tar, key in altered), out[-3000:]
    # 6 steps of 4 windows plus the shuffle buffer: more than subject 02 holds, so 01 is read
    proc = _train(shards, tmp_path / "runs-skip", data__reader__on_error="skip")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "skipping corrupt shard data" in proc.stderr and "differs from its checksum" in proc.stderr
    )
    assert '"step": 6' in proc.stdout
