"""Shard writer and manifest: counts, checksums, atomicity, re-runs, consistency checks."""

from __future__ import annotations

import hashlib
import json
import tarfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from brainxl.shards import npy
from brainxl.shards.config import ShardingConfig
from brainxl.shards.manifest import build_manifest, read_manifest
from brainxl.shards.writer import shard_dataset, write_subject
from shard_fixtures import SPEC, fail_on_02, load_spec, make_recording, write_synthetic


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_synthetic(out)
    return out


def test_manifest_counts_match_shards(sharded: Path) -> None:
    m = read_manifest(sharded)
    assert sorted(m["subjects"]) == sorted(SPEC)
    n_total = 0
    for s, frag in m["subjects"].items():
        assert len(frag["shards"]) > 1  # small max_shard_bytes: several shards per subject
        for entry in frag["shards"]:
            path = sharded / entry["path"]
            assert path.parent.name == f"sub-{s}"
            data = path.read_bytes()
            assert len(data) == entry["bytes"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            with tarfile.open(path) as tar:
                names = tar.getnames()
            keys = sorted({n.split(".", 1)[0] for n in names})
            assert len(keys) == entry["n_samples"] == len(entry["samples"])
            assert keys == sorted(d["key"] for d in entry["samples"])
            for k in keys:
                assert "." not in k
                assert {f"{k}.ephys.npy", f"{k}.bold.npy", f"{k}.meta.json"} <= set(names)
            n_total += entry["n_samples"]
        # every TR of every run is stored exactly once
        trs = {r["recording"]: r["n_trs"] for r in frag["runs"]}
        assert [r[1] for r in SPEC[s]] == [r["n_trs"] for r in frag["runs"]]
        stored: dict[str, list[int]] = {}
        for entry in frag["shards"]:
            for d in entry["samples"]:
                rec = d["key"].rsplit("_seg-", 1)[0]
                stored.setdefault(rec, []).extend(range(d["first_tr"], d["first_tr"] + d["n_trs"]))
        assert {k: sorted(v) for k, v in stored.items()} == {
            k: list(range(n)) for k, n in trs.items()
        }
    assert m["totals"]["n_samples"] == n_total
    assert m["totals"]["n_runs"] == sum(len(v) for v in SPEC.values())
    assert m["sfreq"] == 50.0 and m["tr"] == 2.0
    assert m["ch_names"] == ["Fp1", "Fp2", "Cz", "Pz"]
    assert m["roi_names"] == ["roi0", "roi1", "roi2"]


def test_segment_holds_its_ephys_and_bold(sharded: Path) -> None:
    """Segment arrays are exact slices of the recording (values encode time indices)."""
    m = read_manifest(sharded)
    entry = m["subjects"]["01"]["shards"][1]
    with tarfile.open(sharded / entry["path"]) as tar:
        members = {n: tar.extractfile(n).read() for n in tar.getnames()}
    key = entry["samples"][0]["key"]
    meta = json.loads(members[f"{key}.meta.json"])
    ephys = npy.decode(members[f"{key}.ephys.npy"])
    bold = npy.decode(members[f"{key}.bold.npy"])
    assert ephys.dtype == np.float32 and bold.dtype == np.float32
    zero = 20.0 * 50  # recording sample of TR 0 (lead_in * sfreq)
    first = meta["ephys_offset"] + zero
    assert ephys[0, 0] == first and ephys[2, -1] == first + ephys.shape[1] - 1 + 2 * 100_000
    assert meta["ephys_offset"] == (meta["first_tr"] * 2.0 - 16.0) * 50
    assert meta["ephys_t0"] == pytest.approx(-16.0)
    assert bold[1].tolist() == [
        1000.0 + k for k in range(meta["bold_first_tr"], meta["first_tr"] + meta["n_trs"])
    ]


def test_rerun_skips_finished_subjects(tmp_path: Path) -> None:
    write_synthetic(tmp_path)
    tars = sorted(tmp_path.rglob("*.tar"))
    mtimes = [p.stat().st_mtime_ns for p in tars]
    (tmp_path / "sub-01" / "sub-01-000000.tar.tmp").write_bytes(b"partial")  # stale tmp
    write_synthetic(tmp_path)
    assert [p.stat().st_mtime_ns for p in tars] == mtimes
    assert not list(tmp_path.rglob("*.tmp"))
    # changed settings redo the data (fewer, larger segments) and drop stale shards
    m = write_synthetic(tmp_path, segment_trs=16, max_shard_bytes=10**8)
    assert all(len(f["shards"]) == 1 for f in m["subjects"].values())
    assert sorted(p.name for p in (tmp_path / "sub-01").glob("*.tar")) == ["sub-01-000000.tar"]


def test_failed_subject_leaves_no_partial_shard(tmp_path: Path) -> None:
    cfg = ShardingConfig(segment_trs=8, max_shard_bytes=60_000, workers=1, lead_in_s=16.0)
    with pytest.raises(ValueError, match=r"sub-02: ValueError: synthetic/sub-02: broken"):
        shard_dataset(tmp_path, sorted(SPEC), fail_on_02, cfg, progress=False)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    assert not list((tmp_path / "sub-02").glob("*.tar")) if (tmp_path / "sub-02").exists() else True
    done = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.tar")}
    assert {p.parent.name for p in done} == {"sub-01", "sub-03"}
    shard_dataset(tmp_path, sorted(SPEC), load_spec, cfg, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())
    assert sorted(read_manifest(tmp_path)["subjects"]) == ["01", "02", "03"]


def test_failure_mid_subject_leaves_only_complete_tars(tmp_path: Path) -> None:
    good = make_recording("01", "1", 40)
    bad = make_recording("01", "2", 40)
    bad.extra = {"not_json": object()}  # fails while encoding the second run's first sample
    cfg = ShardingConfig(segment_trs=8, max_shard_bytes=60_000)
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_subject([good, bad], tmp_path, cfg)
    assert not list(tmp_path.rglob("*.tmp"))
    assert not (tmp_path / "sub-01" / "subject.json").exists()  # subject is not finished
    tars = list(tmp_path.rglob("*.tar"))
    assert tars  # the first run's closed shards
    for p in tars:
        with tarfile.open(p) as tar:  # every visible shard is a complete tar
            assert len(tar.getnames()) % 3 == 0


def test_too_short_recording_names_file(tmp_path: Path) -> None:
    bad = make_recording("01", "2", 40)
    bad.ephys = np.ones((4, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="synthetic/sub-01_run-2_eeg.vhdr"):
        write_subject([bad], tmp_path, ShardingConfig())
    assert not list(tmp_path.rglob("*.tar*"))


def test_parallel_workers_write_identical_shards(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a", workers=1)
    b = write_synthetic(tmp_path / "b", workers=2)
    for s in SPEC:
        assert [x["sha256"] for x in a["subjects"][s]["shards"]] == [
            x["sha256"] for x in b["subjects"][s]["shards"]
        ]


def test_parcels_and_empty_ephys(tmp_path: Path) -> None:
    m = write_synthetic(tmp_path, n_parcels=2, spec={"01": [("1", 20)]})
    assert m["parcel_names"] == ["parcel0", "parcel1"]
    assert m["subjects"]["01"]["stats"]["parcels"]["count"] > 0
    rec = make_recording("02", "1", 12, n_parcels=3)
    rec.ephys = np.zeros((0, rec.parcels.shape[1]), dtype=np.float32)
    rec.ch_names, rec.ch_types = [], []
    frag = write_subject([rec], tmp_path / "p", ShardingConfig(segment_trs=8))
    with tarfile.open(tmp_path / "p" / frag["shards"][0]["path"]) as tar:
        k = frag["shards"][0]["samples"][0]["key"]
        ephys = npy.decode(tar.extractfile(f"{k}.ephys.npy").read())
        parcels = npy.decode(tar.extractfile(f"{k}.parcels.npy").read())
    assert ephys.shape == (0, parcels.shape[1]) and parcels.shape[0] == 3


def test_subjects_must_agree_on_sfreq() -> None:
    frag = {"subject": "01", "sfreq": 50.0, "roi_names": ["a"], "parcel_names": [], "ch_names": []}
    other = dict(frag, subject="02", sfreq=100.0)
    with pytest.raises(ValueError, match=r"disagree on sfreq .*preprocess.sfreq"):
        build_manifest([frag, other], source="ds")


def test_runs_of_one_subject_must_agree(tmp_path: Path) -> None:
    a = make_recording("01", "1", 10)
    b = make_recording("01", "2", 10, ch_names=["Fp1", "Fp2", "Cz", "Oz"])
    with pytest.raises(ValueError, match="ch_names differs"):
        write_subject([a, b], tmp_path, ShardingConfig())


def test_loader_partial_is_used_per_subject(tmp_path: Path) -> None:
    spec = {"07": [("1", 9)]}
    cfg = ShardingConfig(segment_trs=4, workers=1)
    m = shard_dataset(tmp_path, ["07"], partial(load_spec, spec=spec), cfg, progress=False)
    assert [d["n_trs"] for d in m["subjects"]["07"]["shards"][0]["samples"]] == [4, 4, 1]
