"""Window reader: exact window contents, targets, determinism, resume, selection, norm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from brainxl.shards.config import ReaderConfig, ShardingConfig
from brainxl.shards.reader import WindowDataset, make_loader
from brainxl.shards.stats import fold_statistics
from brainxl.shards.writer import write_subject
from shard_fixtures import (
    CH_STRIDE,
    LEAD_IN,
    ROI_STRIDE,
    SFREQ,
    SPEC,
    TR,
    make_recording,
    write_synthetic,
)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reader")
    write_synthetic(out, n_parcels=2)
    return out


def _expected_ephys(k: int, lag: float, W: int, n_ch: int = 4) -> np.ndarray:
    end = int(round((k * TR - lag) * SFREQ)) + int(LEAD_IN * SFREQ)  # recording sample
    idx = np.arange(end - W, end, dtype=np.float64)
    return (idx[None, :] + CH_STRIDE * np.arange(n_ch)[:, None]).astype(np.float32)


@pytest.mark.parametrize("lag", [0.0, 1.234, 6.0])
def test_window_for_tr_k_holds_exactly_its_samples(sharded: Path, lag: float) -> None:
    cfg = ReaderConfig(window_s=4.0, lag_s=lag, batch_size=1, shuffle_buffer=1, bold_norm="none")
    ds = WindowDataset(sharded, cfg)
    W = int(4.0 * SFREQ)
    assert ds.window == W and ds.skipped_trs == 0
    seen = set()
    for item in ds:
        k = item["tr_index"]
        assert item["ephys"].dtype == torch.float32 and item["ephys"].shape == (4, W)
        np.testing.assert_array_equal(item["ephys"].numpy(), _expected_ephys(k, lag, W))
        np.testing.assert_array_equal(item["bold"].numpy(), k + ROI_STRIDE * np.arange(3))
        assert "parcels" not in item
        seen.add((item["key"].rsplit("_seg-", 1)[0], k))
    expected = {
        (f"sub-{s}_task-rest_run-{run}", k)
        for s, runs in SPEC.items()
        for run, n in runs
        for k in range(n)
    }
    assert seen == expected  # unshuffled, one rank: every window exactly once per epoch
    assert ds.n_windows == len(expected)


def test_multi_frame_targets_and_parcels(sharded: Path) -> None:
    cfg = ReaderConfig(
        window_s=2.0,
        n_targets=3,
        modality="parcels",
        batch_size=1,
        shuffle_buffer=1,
        bold_norm="none",
    )
    ds = WindowDataset(sharded, cfg)
    assert ds.skipped_trs == 2 * sum(len(r) for r in SPEC.values())  # TRs 0 and 1 of each run
    assert ds.parcel_names == ["parcel0", "parcel1"]
    n = 0
    for item in ds:
        k = item["tr_index"]
        assert k >= 2
        expect = np.arange(k - 2, k + 1)[None, :] + ROI_STRIDE * np.arange(3)[:, None]
        np.testing.assert_array_equal(item["bold"].numpy(), expect)
        assert item["parcels"].shape == (2, 100)
        np.testing.assert_array_equal(item["parcels"].numpy(), -_expected_ephys(k, 0.0, 100, 2))
        n += 1
    assert n == ds.n_windows


def test_short_run_lead_in_skips_early_trs(tmp_path: Path) -> None:
    rec = make_recording("01", "1", 10, lead_in=2.0)
    write_subject([rec], tmp_path, ShardingConfig(segment_trs=4, lead_in_s=8.0))
    from brainxl.shards.manifest import build_manifest, read_fragment, write_json_atomic

    frag = read_fragment(tmp_path, "01")
    m = build_manifest([frag], settings={"sharding": {"lead_in_s": 8.0, "bold_lead_trs": 0}})
    write_json_atomic(tmp_path / "manifest.json", m)
    ds = WindowDataset(tmp_path, ReaderConfig(window_s=4.0, batch_size=1, shuffle_buffer=1))
    assert ds.skipped_trs == 1  # TR 0 needs 4 s before it, the run has 2 s
    ks = sorted(item["tr_index"] for item in ds)
    assert ks == list(range(1, 10))
    with pytest.raises(ValueError, match=r"re-shard with sharding.lead_in_s >= 10"):
        WindowDataset(tmp_path, ReaderConfig(window_s=8.0, lag_s=2.0))


def test_deterministic_per_epoch_and_shuffled(sharded: Path) -> None:
    cfg = ReaderConfig(window_s=4.0, batch_size=4, shuffle_buffer=32)

    def keys(epoch: int, seed: int = 0) -> list[tuple[str, int]]:
        ds = WindowDataset(sharded, cfg, seed=seed)
        ds.set_epoch(epoch)
        return [(x["key"], x["tr_index"]) for x in ds]

    a0, b0, a1 = keys(0), keys(0), keys(1)
    assert a0 == b0
    assert a0 != a1 and len(a0) == len(a1)
    assert keys(0, seed=5) != a0
    ordered = sorted(a0, key=lambda t: (t[0], t[1]))
    assert a0 != ordered  # the shuffle buffer mixes windows


def test_resume_mid_epoch_gives_the_same_batches(sharded: Path) -> None:
    cfg = ReaderConfig(window_s=4.0, batch_size=4, shuffle_buffer=16)
    ds = WindowDataset(sharded, cfg, seed=3)
    loader = make_loader(ds, 4, num_workers=2)
    loader.set_epoch(2)
    full = [b["tr_index"].tolist() + b["key"] for b in loader]
    assert len(full) == ds.batches_per_epoch() == len(loader)
    # interrupted after 7 batches
    loader.set_epoch(2)
    it = iter(loader)
    first = [next(it)["tr_index"].tolist() for _ in range(7)]
    state = loader.state_dict()
    del it
    assert state["epoch"] == 2 and state["batches_consumed"] == 7
    assert first == [f[:4] for f in full[:7]]
    ds2 = WindowDataset(sharded, cfg, seed=3)
    loader2 = make_loader(ds2, 4, num_workers=2)
    loader2.load_state_dict(state)
    assert len(loader2) == len(full) - 7
    rest = [b["tr_index"].tolist() + b["key"] for b in loader2]
    assert rest == full[7:]
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(WindowDataset(sharded, cfg, seed=3), 4, num_workers=0).load_state_dict(state)


def test_every_window_once_for_evaluation(sharded: Path) -> None:
    """``every_window`` (evaluation) yields each window once, the training stream only
    whole batches; the complete ReaderSource ends with a partial batch."""
    from brainxl.distrib.data import ReaderSource

    cfg = ReaderConfig(window_s=4.0, batch_size=7, shuffle_buffer=16)
    ds = WindowDataset(sharded, cfg, seed=3)
    assert ds.n_windows % 7 != 0  # the training stream drops the remainder
    ids = [(x["key"], x["tr_index"]) for x in ds.every_window()]
    assert len(ids) == len(set(ids)) == ds.n_windows
    assert len(list(ds)) == ds.batches_per_epoch() * 7 < ds.n_windows
    ranks = [WindowDataset(sharded, cfg, rank=r, world_size=2) for r in (0, 1)]
    parts = [[(x["key"], x["tr_index"]) for x in d.every_window()] for d in ranks]
    assert sorted(parts[0] + parts[1]) == sorted(ids) and abs(len(parts[0]) - len(parts[1])) <= 1
    src = ReaderSource(ds, 7, num_workers=2, complete=True)
    batches = list(src)
    assert len(batches) == src.batches_per_epoch() == -(-ds.n_windows // 7)
    assert [len(b["key"]) for b in batches[:-1]] == [7] * (len(batches) - 1)
    got = [(k, int(t)) for b in batches for k, t in zip(b["key"], b["tr_index"])]
    assert got == ids


def test_include_exclude_subjects(sharded: Path) -> None:
    cfg = ReaderConfig(window_s=4.0, batch_size=2, exclude_subjects=["sub-02"])
    ds = WindowDataset(sharded, cfg)
    assert ds.subjects == ["01", "03"]
    assert {x["subject"] for x in ds} == {"01", "03"}
    only = WindowDataset(sharded, ReaderConfig(window_s=4.0, batch_size=2, include_subjects=["02"]))
    assert {x["subject"] for x in only} == {"02"}
    assert only.n_windows == SPEC["02"][0][1]
    with pytest.raises(ValueError, match=r"subjects \['09'\] are not in the shards"):
        WindowDataset(sharded, ReaderConfig(include_subjects=["09"]))


def test_normalisation_uses_training_subjects_only(sharded: Path) -> None:
    norm = fold_statistics(sharded, ["01", "03"])
    raw = [make_recording(s, run, n) for s in ("01", "03") for run, n in SPEC[s]]
    eph = np.concatenate([r.ephys for r in raw], axis=1).astype(np.float64)
    bold = np.concatenate([r.bold for r in raw], axis=1).astype(np.float64)
    np.testing.assert_allclose(norm.ephys_mean, eph.mean(1), rtol=1e-6)
    np.testing.assert_allclose(norm.ephys_std, eph.std(1), rtol=1e-4)
    np.testing.assert_allclose(norm.bold_mean, bold.mean(1), rtol=1e-6)
    np.testing.assert_allclose(norm.bold_std, bold.std(1), rtol=1e-4)
    assert norm.parcels_mean is not None and norm.parcels_mean.shape == (2,)
    assert not np.allclose(fold_statistics(sharded, ["02"]).ephys_mean, norm.ephys_mean)
    cfg = ReaderConfig(window_s=4.0, batch_size=1, shuffle_buffer=1, include_subjects=["02"])
    item = next(iter(WindowDataset(sharded, cfg, norm=norm)))
    expect = (
        _expected_ephys(item["tr_index"], 0.0, 200) - norm.ephys_mean[:, None]
    ) / norm.ephys_std[:, None]
    np.testing.assert_allclose(item["ephys"].numpy(), expect, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not in the manifest"):
        fold_statistics(sharded, ["01", "42"])


def test_norm_scopes_per_modality(sharded: Path) -> None:
    fold = fold_statistics(sharded, ["01", "03"])
    own = fold_statistics(sharded, ["02"])
    raw = {k: np.asarray(v) for k, v in _first_item(sharded, "none", "none").items()}
    for ephys_scope, bold_scope in (("fold", "subject"), ("subject", "fold"), ("none", "none")):
        item = _first_item(sharded, ephys_scope, bold_scope, norm=fold)
        e_stats = {"fold": fold, "subject": own}.get(ephys_scope)
        b_stats = {"fold": fold, "subject": own}.get(bold_scope)
        e, b = raw["ephys"], raw["bold"]
        if e_stats is not None:
            e = (e - e_stats.ephys_mean[:, None]) / e_stats.ephys_std[:, None]
        if b_stats is not None:
            b = (b - b_stats.bold_mean) / b_stats.bold_std
        np.testing.assert_allclose(item["ephys"].numpy(), e, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(item["bold"].numpy(), b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="reader.bold_norm='scan'"):
        _first_item(sharded, "fold", "scan")


def _first_item(sharded: Path, ephys_norm: str, bold_norm: str, norm=None) -> dict:
    cfg = ReaderConfig(
        window_s=4.0,
        batch_size=1,
        shuffle_buffer=1,
        include_subjects=["02"],
        ephys_norm=ephys_norm,
        bold_norm=bold_norm,
    )
    return next(iter(WindowDataset(sharded, cfg, norm=norm)))
