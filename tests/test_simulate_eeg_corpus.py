"""``brainxl simulate --eeg-only``: montages x native rates, BIDS EEG without BOLD, sharded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from brainxl.launch.cli import main
from brainxl.shards.config import ShardingConfig
from brainxl.shards.eeg_writer import shard_eeg
from brainxl.shards.shardset import ShardSet

from brainxl.simulator.eeg_corpus import CLINICAL19, simulate_eeg_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "bids"
    assert main(["simulate", str(out), "--eeg-only", "--subjects", "5", "--minutes", "0.25"]) == 0
    return out


def test_corpus_mixes_montages_and_rates_without_bold(corpus: Path) -> None:
    subs = sorted(p.name for p in corpus.glob("sub-*"))
    assert subs == [f"sub-0{i}" for i in range(1, 6)]
    assert not list(corpus.rglob("func")) and not (corpus / "derivatives").exists()
    want = [  # subject i: montages[i % 4], rates[(i + i // 4) % 4]
        ("biosemi32", 250, ".vhdr", 32),
        ("biosemi64", 500, ".vhdr", 64),
        ("easycap-M1", 512, ".vhdr", 74),
        ("clinical19", 1000, ".edf", 19),
        ("biosemi32", 500, ".vhdr", 32),
    ]
    for sub, (_, rate, ext, n_ch) in zip(subs, want):
        eeg = corpus / sub / "eeg"
        side = json.loads(next(eeg.glob("*_eeg.json")).read_text())
        assert side["SamplingFrequency"] == rate
        assert len(list(eeg.glob(f"*_eeg{ext}"))) == 1
        rows = (next(eeg.glob("*_channels.tsv")).read_text().strip().splitlines())[1:]
        assert len(rows) == n_ch
    clinical = (next((corpus / "sub-04" / "eeg").glob("*_channels.tsv"))).read_text()
    assert "EEG T3-REF" in clinical and "EEG T7-REF" not in clinical  # clinical labels
    assert "each montage records a brain of its own" in (corpus / "README").read_text()


def test_corpus_shards_eeg_only(corpus: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    m = shard_eeg(
        corpus, tmp_path / "shards", cfg=ShardingConfig(segment_s=4.0, workers=2),
        progress=False, report=lines.append,
    )  # fmt: skip
    assert lines == []  # every simulated channel maps onto the vocabulary
    assert m["native_sfreqs"] == [250.0, 500.0, 512.0, 1000.0]
    assert sorted(len(x["ch_names"]) for x in m["montages"]) == [19, 32, 64, 74]
    clinical = next(x for x in m["montages"] if len(x["ch_names"]) == 19)
    assert sorted(clinical["ch_names"]) == sorted(CLINICAL19) and clinical["subjects"] == ["04"]
    assert m["subjects"]["04"]["runs"][0]["native_n_samples"] == 15000  # 15 s at 1000 Hz
    assert all(f["n_ephys"] == 3000 for f in m["subjects"].values())  # 15 s at 200 Hz
    shards = ShardSet.open(tmp_path / "shards")
    assert shards.verify() == []
    for meta, x in shards.eeg_segments(["01"]):
        assert x.shape == (32, meta["n_ephys"]) and meta["native_sfreq"] == 250.0
        rms = float(np.sqrt(np.mean(np.square(x))))
        assert 3.0 < rms < 100.0  # microvolts, a scalp-EEG amplitude


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"montages \['bogus'\] unknown"):
        simulate_eeg_corpus(tmp_path / "a", 1, 0.1, montages="biosemi32,bogus")
    with pytest.raises(ValueError, match="at least 100 Hz"):
        simulate_eeg_corpus(tmp_path / "a", 1, 0.1, rates=[50])
    with pytest.raises(ValueError, match="rates='fast'"):
        simulate_eeg_corpus(tmp_path / "a", 1, 0.1, rates="fast")
    with pytest.raises(ValueError, match="pass brain= as well"):
        simulate_eeg_corpus(tmp_path / "a", 1, 0.1, brain_name="those of data/bids")
    assert not (tmp_path / "a").exists()
    assert main(["simulate", str(tmp_path / "b"), "--eeg-only", "--meg"]) == 2


def _column_r(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over parcels of r between two gain matrices' columns (average-referenced)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    r = (a * b).sum(0) / np.sqrt((a**2).sum(0) * (b**2).sum(0))
    return float(np.mean(np.abs(r)))


def test_corpus_records_the_brains_of_a_dataset(sim_bids: Path, tmp_path: Path, capsys) -> None:
    from brainxl.simulator.eeg_corpus import montage_model
    from brainxl.simulator.truth import dataset_brain, template_gain

    brain = dataset_brain(sim_bids)
    shared = montage_model("easycap-M1", 8, np.random.default_rng(1), brain)
    drawn = montage_model("easycap-M1", brain.n_parcels, np.random.default_rng(1))
    assert shared.template.n_parcels == brain.n_parcels  # the brain's, not the argument
    np.testing.assert_array_equal(shared.template.source_pos, brain.source_pos)
    np.testing.assert_array_equal(shared.template.parcel_of_source, brain.parcel_of_source)
    # the dataset's population head seen through another cap: where the caps share
    # electrodes, its parcels project as in the dataset; a brain of the cap's own does not
    names = [c for c in shared.ch_names if c in brain.ch_names]
    assert len(names) > 40
    truth = template_gain(sim_bids, names)
    pick = [shared.ch_names.index(c) for c in names]
    assert _column_r(shared.gain[pick], truth) > 0.8  # 0.88; the rest: jitter, skull
    assert _column_r(drawn.gain[[drawn.ch_names.index(c) for c in names]], truth) < 0.6

    out = tmp_path / "corpus"
    args = ["simulate", str(out), "--eeg-only", "--subjects", "2", "--minutes", "0.1"]
    small = ["--montages", "biosemi32", "--rates", "200"]
    assert main([*args, *small, "--brain-of", str(sim_bids)]) == 0
    assert sorted(p.name for p in out.glob("sub-*")) == ["sub-01", "sub-02"]
    assert f"brains: those of {sim_bids}" in capsys.readouterr().out
    readme = (out / "README").read_text()
    assert f"every montage records the same population of brains (those of {sim_bids})" in readme
    assert main(["simulate", str(tmp_path / "c"), "--brain-of", str(sim_bids)]) == 2
    assert "--brain-of goes with --eeg-only" in capsys.readouterr().err
    assert main([*args[:1], str(tmp_path / "d"), *args[2:], "--brain-of", str(tmp_path)]) == 2
    assert "not a `brainxl simulate` dataset" in capsys.readouterr().err
