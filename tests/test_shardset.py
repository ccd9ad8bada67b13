"""One ShardSet per shard folder: the manifest is parsed once per run and every consumer
(data identity, fold, streams, statistics, whole recordings) agrees with a fresh reading;
run-config keys of the data side are honoured or refused, never silently dropped."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from brainxl.distrib.config import ConfigError, load_config
from brainxl.distrib.data import build_fold, recording_timeseries, subject_source
from brainxl.distrib.entry import data_identity
from brainxl.launch.cli import main
from brainxl.shards.config import ReaderConfig
from brainxl.shards.manifest import read_manifest
from brainxl.shards.shardset import ShardSet
from brainxl.shards.stats import fold_statistics
from train_fixtures import overrides, write_shards

from brainxl.files import atomic_write_text

_MANIFEST_OPENS: list[str] | None = None


def _audit(event: str, args: tuple) -> None:  # counts real file opens of any manifest.json
    if _MANIFEST_OPENS is not None and event == "open" and str(args[0]).endswith("manifest.json"):
        _MANIFEST_OPENS.append(str(args[0]))


sys.addaudithook(_audit)


@contextlib.contextmanager
def manifest_opens() -> Iterator[list[str]]:
    global _MANIFEST_OPENS
    _MANIFEST_OPENS = opens = []
    try:
        yield opens
    finally:
        _MANIFEST_OPENS = None


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shardset") / "shards")


@pytest.fixture
def shards(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shards"  # a path no ShardSet of this process has opened yet
    shutil.copytree(pristine, out)
    return out


def test_a_run_parses_the_manifest_once_and_agrees_with_a_fresh_read(
    shards: Path, tmp_path: Path
) -> None:
    cfg = load_config(None, overrides(shards, tmp_path))
    with manifest_opens() as opens:
        ident = data_identity(cfg)
        fold = build_fold(cfg, 0, 1)
        test = subject_source(cfg, ["04"], fold.norm)
        series = recording_timeseries(shards, fold.split.train, ("ephys", "bold"), norm=fold.norm)
        again = ShardSet.open(shards)
    assert opens == [str(shards / "manifest.json")]
    assert fold.shards is again and again.root == shards
    # the same answers as reading the manifest afresh, the way each caller used to
    m = read_manifest(shards)
    content = {k: v for k, v in m.items() if k != "created"}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    assert ident["manifest_sha256"] == digest == ShardSet(shards).digest()
    assert again.subjects == sorted(m["subjects"])
    fresh = fold_statistics(m, fold.split.train)
    for name in ("ephys_mean", "ephys_std", "bold_mean", "bold_std"):
        np.testing.assert_array_equal(getattr(fold.norm, name), getattr(fresh, name))
    assert fold.train.dataset.subjects == list(fold.split.train) == ["01", "02"]
    assert test.dataset.subjects == ["04"] and test.tr == m["tr"]
    assert len(series["ephys"]) == 2 and series["ephys"][0].shape[0] == len(m["ch_names"])
    # every ShardSet(...) parses once more; one parse serves all its methods
    with manifest_opens() as opens:
        other = ShardSet(shards)
        other.select(exclude=["sub-02"])
        other.fold_statistics(["01"])
        other.digest()
        other.windows(ReaderConfig(window_s=2.0, batch_size=2))
        other.recording_timeseries(["03"], ("bold",))
    assert len(opens) == 1


def test_open_rereads_a_rewritten_manifest(shards: Path) -> None:
    first = ShardSet.open(shards)
    assert ShardSet.open(shards) is first
    m = read_manifest(shards)
    m["subjects"].pop("03")
    atomic_write_text(shards / "manifest.json", json.dumps(m))
    second = ShardSet.open(shards)
    assert second is not first and second.subjects == ["01", "02", "04"]
    assert second.digest() != first.digest()


def test_selection_and_unknown_subjects(shards: Path) -> None:
    s = ShardSet(shards)
    assert s.select(include=["sub-01", "03"]) == ["01", "03"]
    assert s.select(exclude=["02"]) == ["01", "03", "04"]
    with pytest.raises(ValueError, match=r"subjects \['09'\] are not in the shards"):
        s.select(include=["09"])
    with pytest.raises(ValueError, match="subject '09' is not in the shards"):
        s.fragment("09")
    with pytest.raises(FileNotFoundError, match="run `brainxl shard"):
        ShardSet(shards / "nothing-here")


def test_run_subject_lists_are_honoured(shards: Path, tmp_path: Path) -> None:
    for key, value in (
        ("data__reader__exclude_subjects", "[02]"),
        ("data__reader__include_subjects", "[sub-01,03,04]"),
    ):
        cfg = load_config(None, overrides(shards, tmp_path, **{key: value}))
        fold = build_fold(cfg, 0, 1)
        assert fold.split.train == ("01",) and fold.split.val == ("03",)
        assert fold.norm.subjects == ("01",)
        assert {s for b in fold.train for s in b["subject"]} == {"01"}
    cfg = load_config(None, overrides(shards, tmp_path, data__reader__exclude_subjects="[04]"))
    with pytest.raises(ValueError, match="data.test_subject '04' is not among the fold's"):
        build_fold(cfg, 0, 1)
    cfg = load_config(None, overrides(shards, tmp_path, data__reader__include_subjects="[07]"))
    with pytest.raises(ValueError, match=r"data.reader.include_subjects.*\['07'\]"):
        build_fold(cfg, 0, 1)


def test_reader_batch_size_is_not_a_run_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'data.reader.batch_size'.*train.batch_size"):
        load_config("quickstart", ["data.reader.batch_size=8"])
    yaml = tmp_path / "run.yaml"
    yaml.write_text("base: quickstart.yaml\ndata:\n  reader:\n    batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"run.yaml is not a run setting.*train.batch_size"):
        load_config(yaml)
    assert main(["train", str(yaml), "--print-config"]) == 2
    cfg = load_config("quickstart", ["train.batch_size=5"])
    assert not hasattr(cfg.data.reader, "batch_size")
    assert ReaderConfig(batch_size=3).batch_size == 3  # the standalone reader keeps it


def test_shard_config_rejects_a_reader_block(tmp_path: Path, capsys) -> None:
    from brainxl.launch.cmd_shard import load_config as load_shard_config

    conf = tmp_path / "data.yaml"
    conf.write_text("data:\n  sharding:\n    segment_trs: 8\n  reader:\n    window_s: 4.0\n")
    with pytest.raises(ValueError, match=r"data.yaml: a 'reader:' block.*data.reader"):
        load_shard_config(conf)
    assert main(["shard", str(tmp_path), str(tmp_path / "out"), "--config", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "move it to the run config as data.reader" in err
    assert not (tmp_path / "out").exists()
