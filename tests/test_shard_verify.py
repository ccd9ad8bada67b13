"""``brainxl shard --verify`` and ``verify_shards``: every bad file is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from brainxl.launch.cli import main
from brainxl.shards.manifest import read_manifest
from brainxl.shards.verify import verify_shards


@pytest.fixture
def pristine(synthetic_shards: Path) -> Path:
    return synthetic_shards


def test_clean_shards_verify(pristine: Path, capsys) -> None:
    assert verify_shards(pristine) == []
    assert main(["shard", "--verify", str(pristine)]) == 0
    assert "all shards match" in capsys.readouterr().out


def test_each_bad_file_is_named(pristine: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "s"
    shutil.copytree(pristine, root)
    shards = [
        root / e["path"] for f in read_manifest(root)["subjects"].values() for e in f["shards"]
    ]
    missing, short, flipped = shards[0], shards[3], shards[-1]
    missing.unlink()
    short.write_bytes(short.read_bytes()[:-700])
    data = bytearray(flipped.read_bytes())
    data[2000] ^= 0xFF
    flipped.write_bytes(bytes(data))
    problems = {p.path: p.reason for p in verify_shards(root)}
    assert problems == {
        str(missing): "missing",
        str(short): problems[str(short)],
        str(flipped): "sha256 checksum differs from the manifest",
    }
    assert problems[str(short)].startswith("size ")
    assert main(["shard", "--verify", str(root)]) == 1
    err = capsys.readouterr().err
    for p in (missing, short, flipped):
        assert str(p) in err
    assert "3 bad file(s)" in err


def test_sample_count_mismatch_is_reported(pristine: Path, tmp_path: Path) -> None:
    import hashlib
    import json

    root = tmp_path / "s"
    shutil.copytree(pristine, root)
    m = read_manifest(root)
    entry = m["subjects"]["02"]["shards"][0]
    entry["n_samples"] += 1  # manifest claims a sample the tar lacks
    (root / "manifest.json").write_text(json.dumps(m))
    data = (root / entry["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    [problem] = verify_shards(root)
    assert problem.path == str(root / entry["path"]) and "samples, manifest" in problem.reason


def test_missing_manifest(tmp_path: Path, capsys) -> None:
    assert main(["shard", "--verify", str(tmp_path)]) == 1
    assert "manifest.json" in capsys.readouterr().err


def test_tar_reader_handles_pax_and_long_names(tmp_path: Path) -> None:
    import webdataset as wds
    from brainxl.shards.tarformat import iter_tar_samples

    long_key = "sub-01_task-" + "x" * 120 + "_seg-0000"
    path = tmp_path / "foreign.tar"
    with wds.TarWriter(str(path), encoder=False) as w:  # float mtime: pax headers
        w.write({"__key__": "a", "x.npy": b"12345", "meta.json": b"{}"})
        w.write({"__key__": long_key, "x.npy": b"6" * 700})
    got = [(k, {s: bytes(v) for s, v in m.items()}) for k, m in iter_tar_samples(path)]
    assert got == [
        ("a", {"meta.json": b"{}", "x.npy": b"12345"}),
        (long_key, {"x.npy": b"6" * 700}),
    ]


def test_verify_reports_progress_per_shard(pristine: Path) -> None:
    calls: list[tuple[int, int]] = []
    assert verify_shards(pristine, on_shard=lambda done, total: calls.append((done, total))) == []
    n = sum(len(f["shards"]) for f in read_manifest(pristine)["subjects"].values())
    assert calls[0] == (0, n) and calls[-1] == (n, n)
    assert [d for d, _ in calls] == list(range(n + 1))
