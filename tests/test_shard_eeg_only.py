"""EEG-only (pretraining) shards: a real EDF+ recording, globs, bad input, verify and reopen."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import mne
import numpy as np
import pytest
from brainxl.launch.cli import main
from brainxl.shards.config import IngestConfig, PreprocessConfig, ReaderConfig, ShardingConfig
from brainxl.shards.eeg_writer import shard_eeg
from brainxl.shards.errors import ChannelNameError, MissingFileError
from brainxl.shards.reader import WindowDataset
from brainxl.shards.shardset import ShardSet

#: Channels of pyedflib's EDF+ test recording given 10-05 names (the rest are dropped).
RENAME = {"sine 8 Hz": "O1", "sine 15 Hz": "C3", "sine 17 Hz": "C4", "noise": "Cz"}


def _edf_copy(tmp_path: Path) -> Path:
    """pyedflib's EDF+ test recording (11 channels, 200 Hz, 600 s), copied under recs/."""
    src = resources.files("pyedflib") / "data" / "test_generator.edf"
    dest = tmp_path / "recs" / "site1" / "test_generator.edf"
    dest.parent.mkdir(parents=True)
    with resources.as_file(src) as path:
        shutil.copy(path, dest)
    return dest


def _ingest(**pre) -> IngestConfig:
    return IngestConfig(preprocess=PreprocessConfig(**pre))


def test_real_edf_through_ingest_into_eeg_only_shards(tmp_path: Path) -> None:
    edf = _edf_copy(tmp_path)
    out = tmp_path / "shards"
    lines: list[str] = []
    manifest = shard_eeg(
        str(tmp_path / "recs" / "**" / "*.edf"),
        out,
        _ingest(rename_channels=RENAME),
        ShardingConfig(segment_s=45.0, workers=1),
        progress=False,
        report=lines.append,
    )
    # every channel without a vocabulary entry: one line naming the file and the channel
    dropped = ["squarewave", "ramp", "pulse", "sine 1 Hz", "sine 8.1777 Hz", "sine 8.5 Hz"]
    dropped.append("sine 50 Hz")
    assert len(lines) == len(dropped)
    for ch, line in zip(dropped, lines):
        assert line.startswith(f"{edf}: channel {ch!r} ") and "dropped" in line
    assert manifest["kind"] == "eeg-only"
    frag = manifest["subjects"]["site1testgenerator"]
    assert frag["dataset"] == "recs" and frag["native_sfreqs"] == [200.0]
    assert frag["montages"] == [["Cz", "O1", "C3", "C4"]]
    assert frag["runs"][0]["dropped_channels"] == dropped
    assert frag["n_ephys"] == 120000 and frag["runs"][0]["native_n_samples"] == 120000
    assert manifest["datasets"]["recs"]["n_ephys"] == 120000
    assert manifest["montages"] == [
        {"ch_names": ["Cz", "O1", "C3", "C4"], "subjects": [frag["subject"]]}
    ]
    assert frag["n_samples"] == 14  # 600 s in 45 s segments, the last 15 s

    shards = ShardSet.open(out)
    assert shards.eeg_only and shards.verify() == []
    segs = list(shards.eeg_segments())
    assert [m["offset"] for m, _ in segs] == [i * 9000 for i in range(14)]
    stored = np.concatenate([x for _, x in segs], axis=1)
    # the same preprocessing done directly with MNE: band-pass 0.5-75 Hz, microvolts
    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    raw.pick(list(RENAME)).filter(0.5, 75.0, picks="all", verbose=False)
    expect = raw.get_data(picks=["noise", "sine 8 Hz", "sine 15 Hz", "sine 17 Hz"], units="uV")
    assert stored.shape == expect.shape
    np.testing.assert_allclose(stored, expect, rtol=1e-4, atol=1e-3 * np.abs(expect).max())
    # the recording's channel statistics, kept for pretraining's channel_norm=recording
    assert frag["runs"][0]["ephys_sums"]["count"] == 120000
    mean, std = shards.recording_scales(frag["subject"])[frag["runs"][0]["recording"]]
    np.testing.assert_allclose(mean, stored.astype(np.float64).mean(1), atol=1e-3)
    np.testing.assert_allclose(std, stored.astype(np.float64).std(1), rtol=1e-5)


def test_every_channel_unmappable_fails_naming_the_file(tmp_path: Path) -> None:
    edf = _edf_copy(tmp_path)
    with pytest.raises(ValueError, match="none of its 11 channels maps onto the channel") as err:
        shard_eeg(edf, tmp_path / "out", progress=False, cfg=ShardingConfig(workers=1))
    assert str(edf) in str(err.value) and "rename_channels" in str(err.value)


def test_glob_matching_nothing_or_no_recording(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"nothing/\*\*/\*.edf: the glob matches no file"):
        shard_eeg(str(tmp_path / "nothing" / "**" / "*.edf"), tmp_path / "out", progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(MissingFileError, match=r"none MNE reads as a recording"):
        shard_eeg(str(tmp_path / "notes" / "*"), tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_file_mne_cannot_read_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "recs" / "broken.edf"
    bad.parent.mkdir()
    bad.write_bytes(b"0       this is not an EDF header" + bytes(300))
    with pytest.raises(ValueError, match=r"broken.edf: MNE cannot read it as a recording"):
        shard_eeg(str(tmp_path / "recs" / "*.edf"), tmp_path / "out", progress=False)
    # through the CLI: one line on stderr, exit 2
    assert main(["shard", str(tmp_path / "recs" / "*.edf"), str(tmp_path / "o"), "--eeg-only"]) == 2


def test_cli_glob_verify_reopen_and_translation_refused(tmp_path: Path, capsys) -> None:
    _edf_copy(tmp_path)
    conf = tmp_path / "data.yaml"
    conf.write_text(
        "ingest:\n  preprocess:\n    rename_channels: " + json.dumps(RENAME) + "\n"
        "sharding:\n  workers: 1\n"
    )
    out = tmp_path / "shards"
    glob = str(tmp_path / "recs" / "**" / "*.edf")
    args = ["shard", glob, str(out), "--eeg-only", "--config", str(conf), "--quiet"]
    assert main([*args, "--segment-s", "120", "--dataset", "edfplus", "--verify"]) == 0
    cap = capsys.readouterr()
    assert "all shards match the manifest" in cap.out and "edfplus" in cap.out
    assert cap.err.count("is not in the channel vocabulary; dropped") == 7
    shards = ShardSet.open(out)
    assert shards.manifest["datasets"]["edfplus"]["subjects"] == ["site1testgenerator"]
    assert shards.fragment("site1testgenerator")["n_samples"] == 5
    # a translation run pointed at these shards: one line naming the folder and the fix
    calls = (
        lambda: shards.fold_statistics(shards.subjects),
        lambda: WindowDataset(out, ReaderConfig()),
        shards.require_translation,
    )
    for call in calls:
        with pytest.raises(ValueError, match="EEG-only shards") as err:
            call()
        assert str(out) in str(err.value) and "\n" not in str(err.value)
        assert "without --eeg-only" in str(err.value)
    # a glob without --eeg-only: told to pass it
    assert main(["shard", glob, str(tmp_path / "o2"), "--quiet"]) == 2
    assert "pass --eeg-only" in capsys.readouterr().err
    # altered bytes inside an EEG-only shard are found by --verify
    tar = next((out / "sub-site1testgenerator").glob("*.tar"))
    data = bytearray(tar.read_bytes())
    data[4096] ^= 0xFF
    tar.write_bytes(bytes(data))
    assert main(["shard", "--verify", str(out), "--quiet"]) == 1
    assert "sha256" in capsys.readouterr().err


def test_rerun_skips_finished_subjects(tmp_path: Path) -> None:
    _edf_copy(tmp_path)
    glob = str(tmp_path / "recs" / "**" / "*.edf")
    kw = dict(progress=False, report=None, cfg=ShardingConfig(workers=1))
    shard_eeg(glob, tmp_path / "out", _ingest(rename_channels=RENAME), **kw)
    frag = tmp_path / "out" / "sub-site1testgenerator" / "subject.json"
    before = frag.stat().st_mtime_ns
    first = ShardSet(tmp_path / "out").digest()
    shard_eeg(glob, tmp_path / "out", _ingest(rename_channels=RENAME), **kw)
    assert frag.stat().st_mtime_ns == before
    assert ShardSet(tmp_path / "out").digest() == first
    # other preprocessing redoes the subject
    shard_eeg(glob, tmp_path / "out", _ingest(rename_channels=RENAME, h_freq=40.0), **kw)
    assert frag.stat().st_mtime_ns != before
    # a folder written before runs kept their channel statistics: the same command adds them
    old = json.loads(frag.read_text())
    for run in old["runs"]:
        del run["ephys_sums"]
    del old["settings"]["run_stats"]
    frag.write_text(json.dumps(old))
    before = frag.stat().st_mtime_ns
    shard_eeg(glob, tmp_path / "out", _ingest(rename_channels=RENAME, h_freq=40.0), **kw)
    assert frag.stat().st_mtime_ns != before
    assert "ephys_sums" in json.loads(frag.read_text())["runs"][0]
    ShardSet(tmp_path / "out").recording_scales("site1testgenerator")


def test_unmappable_error_class(tmp_path: Path) -> None:
    from brainxl.shards.ingest.eeg_only import preprocess_recording, read_file

    edf = _edf_copy(tmp_path)
    with pytest.raises(ChannelNameError):
        preprocess_recording(
            read_file(edf), IngestConfig(), subject="x", dataset="d", entities={}, src=str(edf)
        )


def test_bids_with_bold_and_meg_sharded_eeg_only(tmp_path: Path) -> None:
    """EEG (and, asked for, MEG) of a BIDS EEG-MEG-fMRI dataset; the BOLD is ignored."""
    from brainxl.simulator.dataset import simulate_dataset

    bids = tmp_path / "bids"
    simulate_dataset(
        bids, n_subjects=1, minutes=0.5, montage="biosemi32", sfreq=250.0, meg=True, n_parcels=8
    )
    kw = dict(progress=False, cfg=ShardingConfig(workers=1))
    eeg = shard_eeg(bids, tmp_path / "eeg", **kw)["subjects"]["01"]
    assert eeg["runs"][0]["source_files"]["ephys"].endswith("_eeg.vhdr")
    assert len(eeg["ch_names"]) == 32 and eeg["native_sfreqs"] == [250.0]
    assert eeg["n_ephys"] == 50 * 200  # 20 s lead-in + 30 s run, at 200 Hz
    meg = shard_eeg(bids, tmp_path / "meg", _ingest(ch_types=["mag", "grad"]), **kw)
    frag = meg["subjects"]["01"]
    assert frag["runs"][0]["source_files"]["ephys"].endswith("_meg.fif")
    assert len(frag["ch_names"]) == 306 and set(frag["ch_types"]) == {"mag", "grad"}
    assert ShardSet(tmp_path / "meg").verify() == []


def test_glob_subject_labels_and_clashes(tmp_path: Path) -> None:
    from brainxl.shards.errors import IngestError
    from brainxl.shards.ingest.eeg_only import resolve_source

    names = [
        "site1/rec_01.edf",
        "site1/rec_01.vmrk",  # not a recording: skipped
        "site2/sub-07_ses-1_task-rest_eeg.vhdr",
        "site2/sub-07_ses-2_task-rest_eeg.vhdr",
    ]
    for name in names:
        (tmp_path / "recs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "recs" / name).write_bytes(b"")
    src = resolve_source(str(tmp_path / "recs" / "**" / "*"), IngestConfig())
    assert src.kind == "glob" and src.dataset == "recs"
    assert src.subjects == ["07", "site1rec01"]
    assert [p.name for p in src.files["07"]] == [Path(n).name for n in names[2:]]
    (tmp_path / "recs" / "site3").mkdir()
    (tmp_path / "recs" / "site3" / "sub-07_ses-1_task-rest_eeg.edf").write_bytes(b"")
    with pytest.raises(IngestError, match="same subject and recording key"):
        resolve_source(str(tmp_path / "recs" / "**" / "*"), IngestConfig())
    with pytest.raises(MissingFileError, match="not a BIDS dataset"):
        resolve_source(tmp_path / "recs", IngestConfig())
