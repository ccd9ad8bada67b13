"""The mixed pretraining stream over EEG-only shards of several datasets and montages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from brainxl.shards.config import ShardingConfig
from brainxl.shards.eeg_writer import shard_eeg
from brainxl.shards.errors import ShardError
from brainxl.shards.pretrain_stream import DatasetSource, PretrainStream
from brainxl.shards.shardset import ShardSet
from brainxl.shards.tarformat import tar_member_offsets

from brainxl.channels import channel_indices
from brainxl.simulator.eeg_corpus import simulate_eeg_corpus

BUDGET = 8 * 32 * 2  # eight 32-channel 2-s windows


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Dataset A (3 subjects, biosemi32 + clinical19, 30 s) and B (2 subjects, 15 s)."""
    root = tmp_path_factory.mktemp("pretrain")
    out = []
    for name, n_sub, minutes, montages in (
        ("A", 3, 0.5, "biosemi32,clinical19"),
        ("B", 2, 0.25, "easycap-M1,clinical19"),
    ):
        bids = root / f"bids{name}"
        simulate_eeg_corpus(bids, n_sub, minutes, seed=len(out), montages=montages, rates=[200])
        shard_eeg(
            bids, root / f"shards{name}", cfg=ShardingConfig(segment_s=10.0, workers=1),
            progress=False, report=lambda line: None,
        )  # fmt: skip
        out.append(root / f"shards{name}")
    return out[0], out[1]


def _stream(folders, **kw) -> PretrainStream:
    args = {"window_s": 2, "token_budget": BUDGET, "seed": 3} | kw
    return PretrainStream(list(folders), **args)


def _raw_windows(folders) -> dict[tuple[int, str, int], tuple[np.ndarray, dict]]:
    """Every 2-s window read straight from the shards, by (dataset, sample key, start)."""
    out = {}
    for d, folder in enumerate(folders):
        for meta, x in ShardSet(folder).eeg_segments():
            for start in range(0, meta["n_ephys"] - 399, 400):
                out[(d, meta["key"], start)] = (np.asarray(x[:, start : start + 400]), meta)
    return out


def test_index_from_manifests_and_deterministic_order(folders) -> None:
    s = _stream(folders)
    # A: 3 x 30 s in 10-s segments -> 15 windows each; B: 2 x 15 s (10 + 5 s) -> 7 each
    assert s.datasets == ["bidsA", "bidsB"]
    assert s.windows_per_dataset.tolist() == [45, 14]
    assert sorted(len(m) for m in s.montages) == [19, 32, 74]
    again = _stream(folders)
    a, b = list(s.batches(0)), list(again.batches(0))
    assert len(a) == s.batches_per_epoch(0) > 0
    for x, y in zip(a, b):
        assert torch.equal(x.windows, y.windows) and torch.equal(x.padded.x, y.padded.x)
    order0, order1 = s.plan(0).order, s.plan(1).order
    assert not np.array_equal(order0, order1)
    assert not np.array_equal(order0, _stream(folders, seed=4).plan(0).order)
    # one shuffle over both datasets, not dataset after dataset
    ds = np.array([s.window_info(w)["dataset"] for w in order0])
    first_b = int(np.argmax(ds == 1))
    assert first_b < 30 and (ds[first_b:] == 0).any()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_equal_disjoint_and_cover_the_epoch_minus_the_drop(folders, world_size) -> None:
    streams = [_stream(folders, rank=r, world_size=world_size) for r in range(world_size)]
    plan = streams[0].plan(0)
    total = len(plan.batches) + plan.dropped_batches
    assert plan.dropped_batches == total % world_size
    counts = {s.batches_per_epoch(0) for s in streams}
    assert counts == {len(plan.batches) // world_size}
    seen = [np.concatenate([b.windows.numpy() for b in s.batches(0)]) for s in streams]
    assert {len(list(s.batches(0))) for s in streams} == counts
    union = np.concatenate(seen)
    assert len(np.unique(union)) == len(union)  # disjoint
    assert len(union) == streams[0].n_windows - plan.dropped_windows
    if plan.dropped_batches:
        assert plan.dropped_windows > 0


def test_resume_mid_epoch_is_bitwise_exact(folders) -> None:
    full = list(_stream(folders, rank=1, world_size=2).batches(2))
    k = len(full) // 2
    resumed = list(_stream(folders, rank=1, world_size=2).batches(2, start=k))
    assert len(resumed) == len(full) - k
    for a, b in zip(full[k:], resumed):
        assert a.index == b.index
        for name in ("x", "ch_idx", "pad_mask"):
            assert torch.equal(getattr(a.padded, name), getattr(b.padded, name))
        assert torch.equal(a.dataset, b.dataset) and torch.equal(a.windows, b.windows)
    with pytest.raises(ValueError, match="outside epoch"):
        next(_stream(folders).batches(0, start=10_000))


def test_budget_respected_and_mixed_montage_batches_decode_to_raw_windows(folders) -> None:
    s = _stream(folders, bucket_batches=0)  # no bucketing: montages share batches
    raw = _raw_windows(folders)
    mixed = 0
    for batch in s.batches(0):
        p = batch.padded
        assert batch.tokens == p.x.shape[0] * p.x.shape[1] * 2 <= BUDGET
        assert batch.real_tokens == sum(c * n for c, n in p.shapes)
        assert batch.padding_fraction == pytest.approx(1 - batch.real_tokens / batch.tokens)
        mixed += len({c for c, _ in p.shapes}) > 1
        for i, w in enumerate(batch.windows.tolist()):
            info = s.window_info(w)
            expect, meta = raw[(info["dataset"], info["key"], info["start"])]
            c = expect.shape[0]
            assert batch.dataset[i] == info["dataset"]
            assert p.shapes[i] == (c, 2)
            np.testing.assert_array_equal(p.x[i, :c].numpy(), expect)
            assert not p.x[i, c:].any()
            assert p.ch_idx[i, :c].tolist() == channel_indices(meta["ch_names"])
            assert (p.ch_idx[i, c:] == -1).all()
            mask = p.pad_mask[i].reshape(p.x.shape[1], 2)
            assert not mask[:c].any() and mask[c:].all()
    assert mixed > 0


def test_temperature_sets_dataset_proportions(folders) -> None:
    n = np.array([45, 14])
    plain = _stream(folders)
    assert plain.dataset_counts(0).tolist() == n.tolist()  # every window once
    for temp, p_b in ((1.0, 14 / 59), (2.0, 14**0.5 / (45**0.5 + 14**0.5)), (1e6, 0.5)):
        s = _stream(folders, temperature=temp)
        assert s.dataset_weights[1] == pytest.approx(p_b, rel=1e-4)
        counts = sum(s.dataset_counts(e) for e in range(40))
        total = counts.sum()
        sd = np.sqrt(total * p_b * (1 - p_b))
        assert abs(counts[1] - total * p_b) < 4 * sd, (temp, counts, p_b)
    hot = _stream(folders, temperature=1e6)
    order = hot.plan(0).order
    b_windows = [w for w in order if hot.window_info(w)["dataset"] == 1]
    assert len(b_windows) > 14  # the small dataset repeats to fill its share
    assert len(set(b_windows)) == 14


def test_corrupted_bytes_name_file_and_key(folders, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(folders[1], bad)
    tar = sorted(bad.rglob("*.tar"))[0]
    offsets = tar_member_offsets(tar)
    key = sorted(offsets)[1]
    at, size = offsets[key]["ephys.npy"]
    data = bytearray(tar.read_bytes())
    data[at + size - 5] ^= 0xFF
    tar.write_bytes(bytes(data))
    s = PretrainStream([bad], window_s=2, token_budget=74 * 2 * 100, seed=0)
    with pytest.raises(ShardError, match="ephys.npy differs from its checksum") as err:
        for _ in s.batches(0):
            pass
    assert err.value.path == str(tar) and err.value.key == key
    assert str(tar) in str(err.value) and key in str(err.value)
    # an altered meta.json is caught by the manifest's checksum of it
    shutil.copy(sorted(folders[1].rglob("*.tar"))[0], tar)
    at, size = offsets[key]["meta.json"]
    data = bytearray(tar.read_bytes())
    data[at + 2] ^= 0x01
    tar.write_bytes(bytes(data))
    s = PretrainStream([bad], window_s=2, token_budget=74 * 2 * 100, seed=0)
    with pytest.raises(ShardError, match="meta.json differs from the manifest") as err:
        for _ in s.batches(0):
            pass
    assert err.value.path == str(tar) and err.value.key == key


def test_selection_and_user_mistakes(folders, synthetic_shards: Path) -> None:
    one = PretrainStream(
        [DatasetSource(folders[0], exclude=["sub-01"]), folders[1]],
        window_s=2, token_budget=BUDGET,
    )  # fmt: skip
    assert one.windows_per_dataset.tolist() == [30, 14]
    with pytest.raises(ValueError, match=rf"^{synthetic_shards}: translation shards"):
        PretrainStream([folders[0], synthetic_shards], window_s=2, token_budget=BUDGET)
    missing = synthetic_shards.parent / "not-sharded"
    with pytest.raises(FileNotFoundError, match=rf"^{missing}: no shard manifest.*--eeg-only"):
        PretrainStream([folders[0], missing], window_s=2, token_budget=BUDGET)
    with pytest.raises(ValueError, match="over token_budget=100"):
        PretrainStream(list(folders), window_s=2, token_budget=100)
    with pytest.raises(ValueError, match="whole number of seconds"):
        PretrainStream(list(folders), window_s=1.5, token_budget=BUDGET)
    with pytest.raises(ValueError, match="no stored segment holds a whole 20-s window"):
        PretrainStream(list(folders), window_s=20, token_budget=10**6)
    m = json.loads((folders[1] / "manifest.json").read_text())
    assert m["kind"] == "eeg-only"


def _datasets_of_batches(s: PretrainStream, epoch: int) -> list[set[int]]:
    return [{s.window_info(w)["dataset"] for w in ids} for ids in s.rank_windows(epoch)]


def test_bucketing_cuts_padding_and_keeps_every_window(folders) -> None:
    for epoch in range(3):
        flat, bucketed = _stream(folders, bucket_batches=0), _stream(folders, bucket_batches=4)
        assert bucketed.padding_fraction(epoch) < 0.5 * flat.padding_fraction(epoch)
        again = _stream(folders, bucket_batches=4)
        assert np.array_equal(bucketed.plan(epoch).order, again.plan(epoch).order)
        assert bucketed.plan(epoch).batches == again.plan(epoch).batches
        # every window once per epoch, in batches of one channel count except at bucket edges
        windows = np.concatenate(bucketed.rank_windows(epoch))
        assert sorted(windows.tolist()) == list(range(bucketed.n_windows))
        widths = [len({len(bucketed.window_info(w)["ch_names"]) for w in ids})
                  for ids in bucketed.rank_windows(epoch)]  # fmt: skip
        assert sum(n > 1 for n in widths) < sum(n == 1 for n in widths)
    s = _stream(folders, bucket_batches=4)
    assert not np.array_equal(s.plan(0).order, s.plan(1).order)
    assert not np.array_equal(s.plan(0).order, _stream(folders, seed=4, bucket_batches=4)
                              .plan(0).order)  # fmt: skip
    batches = list(s.batches(0))
    assert sum(b.tokens - b.real_tokens for b in batches) / sum(b.tokens for b in batches) == (
        pytest.approx(s.padding_fraction(0))
    )
    with pytest.raises(ValueError, match="bucket_batches must be a whole number >= 0"):
        _stream(folders, bucket_batches=-1)


def test_bucketing_mixes_datasets_over_the_epoch(folders) -> None:
    """Chunks of the global shuffle are bucketed, so both datasets run through the epoch."""
    for seed in range(4):
        s = _stream(folders, seed=seed, bucket_batches=2)
        per_batch = _datasets_of_batches(s, 0)
        half = len(per_batch) // 2
        for part in (per_batch[:half], per_batch[half:]):
            assert set().union(*part) == {0, 1}, (seed, per_batch)
        # not dataset after dataset: the batch sequence switches dataset several times
        firsts = [min(d) for d in per_batch]
        assert sum(a != b for a, b in zip(firsts, firsts[1:])) >= 3, (seed, per_batch)


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_offset_continues_the_epoch_on_another_world_size(folders, before, after) -> None:
    old = [_stream(folders, rank=r, world_size=before) for r in range(before)]
    k = old[0].batches_per_epoch(1) // 2
    done = [w for s in old for ids in s.rank_windows(1)[:k] for w in ids]
    offset = k * before  # batches of the undealt list consumed by all old ranks
    new = [_stream(folders, rank=r, world_size=after) for r in range(after)]
    rest = [w for s in new for ids in s.rank_windows(1, offset) for w in ids]
    plan = new[0].plan(1, offset)
    assert plan.offset == offset
    assert len({s.batches_per_epoch(1, offset) for s in new}) == 1
    assert len(set(done) | set(rest)) == len(done) + len(rest)  # no window twice
    assert len(done) + len(rest) + plan.dropped_windows == new[0].n_windows
    # the new ranks take exactly the old sequence's next batches
    every = _stream(folders).rank_windows(1)
    nxt = [b.windows.numpy() for b in new[0].batches(1, start=0, offset=offset)][0]
    assert np.array_equal(nxt, every[offset])
    with pytest.raises(ValueError, match="offset=10000 is outside epoch 1"):
        new[0].plan(1, 10_000)


def _recordings(folder: Path) -> dict[tuple[str, str], np.ndarray]:
    """Every recording of an EEG-only folder, its segments joined end to end."""
    parts: dict[tuple[str, str], list[tuple[int, np.ndarray]]] = {}
    for meta, x in ShardSet(folder).eeg_segments():
        parts.setdefault((meta["subject"], meta["recording"]), []).append((meta["offset"], x))
    return {
        k: np.concatenate([x for _, x in sorted(v, key=lambda p: p[0])], 1)
        for k, v in parts.items()
    }


def test_channel_norm_recording_zscores_each_recording_by_its_own_channels(folders) -> None:
    scales = {}
    for d, folder in enumerate(folders):
        shards = ShardSet(folder)
        for (subject, rec), x in _recordings(folder).items():
            mean, std = shards.recording_scales(subject)[rec]
            x64 = x.astype(np.float64)
            np.testing.assert_allclose(mean, x64.mean(1), rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(std, x64.std(1), rtol=1e-5)
            assert (std > 1.0).all()  # microvolt EEG: the scaling does something
            scales[(d, subject, rec)] = (mean, std)
    assert len(scales) == 5  # every recording of both folders (3 + 2 subjects)

    s = _stream(folders, bucket_batches=0, channel_norm="recording")
    raw = _raw_windows(folders)
    seen, pooled = 0, {}
    for batch in s.batches(0):
        p = batch.padded
        for i, w in enumerate(batch.windows.tolist()):
            info = s.window_info(w)
            expect, meta = raw[(info["dataset"], info["key"], info["start"])]
            mean, std = scales[(info["dataset"], meta["subject"], meta["recording"])]
            c = expect.shape[0]
            got = p.x[i, :c].numpy()
            np.testing.assert_allclose(got, (expect - mean[:, None]) / std[:, None], atol=1e-5)
            assert not p.x[i, c:].any()  # padding stays zero
            pooled.setdefault((info["dataset"], meta["recording"]), []).append(got)
            seen += 1
    assert seen == s.n_windows - s.plan(0).dropped_windows
    # what a recording contributes is z-scored: about zero mean and unit spread per channel
    for parts in pooled.values():
        x = np.concatenate(parts, 1)
        assert np.abs(x.mean(1)).max() < 0.3 and np.abs(x.std(1) - 1).max() < 0.3
    # the same windows, the same order: only the scale changes
    plain = _stream(folders, bucket_batches=0)
    assert [b.windows.tolist() for b in plain.batches(0)] == [
        b.windows.tolist() for b in s.batches(0)
    ]


def test_channel_norm_needs_the_statistics_and_says_how_to_get_them(
    folders, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"channel_norm='subject'; choose one of \('none', 're"):
        _stream(folders, channel_norm="subject")
    old = tmp_path / "old"
    shutil.copytree(folders[1], old)
    m = json.loads((old / "manifest.json").read_text())
    for frag in m["subjects"].values():
        for run in frag["runs"]:
            del run["ephys_sums"]  # as written before the statistics were kept
    (old / "manifest.json").write_text(json.dumps(m))
    assert PretrainStream([old], window_s=2, token_budget=BUDGET).n_windows == 14
    with pytest.raises(ValueError) as err:
        PretrainStream([old], window_s=2, token_budget=BUDGET, channel_norm="recording")
    msg = str(err.value)
    assert msg.startswith(f"{old}/sub-") and "has no channel statistics" in msg
    assert "re-run the same `brainxl shard --eeg-only` command" in msg
    assert msg.endswith("or set data.channel_norm=none")
