"""``model.spatial_init``: NeuroBOLT's spatial filters started by ICA of EEG-only shards."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from brainxl.shards.config import ShardingConfig
from brainxl.shards.eeg_writer import shard_eeg

from brainxl.channels import channel_indices
from brainxl.models.neurobolt import NeuroBOLT
from brainxl.models.unmixing import apply_unmixing, fit_unmixing

CHANNELS = ["Fp1", "F3", "C3", "P3", "O1", "Cz"]
RHYTHMS_HZ = (7.0, 11.0, 23.0)
SFREQ = 200.0
SECONDS = 120


def _gates(rng: np.random.Generator, n: int) -> np.ndarray:
    """Independent on/off gates in 1-s blocks, (len(RHYTHMS_HZ), SECONDS)."""
    return (rng.random((n, SECONDS)) < 0.5).astype(float)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, dict]:
    """Two FIF recordings of three gated rhythms that every channel mixes, sharded.

    Returns the shard folder, the mixing matrix and each subject's gates.
    """
    root = tmp_path_factory.mktemp("unmix")
    rng = np.random.default_rng(0)
    shape = (len(CHANNELS), len(RHYTHMS_HZ))  # every channel carries every rhythm alike
    mixing = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.6, 1.0, shape)
    t = np.arange(int(SECONDS * SFREQ)) / SFREQ
    gates = {}
    for sub in ("01", "02"):
        g = _gates(rng, len(RHYTHMS_HZ))
        src = np.stack(
            [np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in RHYTHMS_HZ]
        ) * np.repeat(g, int(SFREQ), axis=1)
        x = mixing @ src + 0.02 * rng.standard_normal((len(CHANNELS), len(t)))
        raw = mne.io.RawArray(20e-6 * x, mne.create_info(CHANNELS, SFREQ, "eeg"), verbose=False)
        raw.save(_path(root, sub), verbose=False)
        gates[sub] = g
    out = root / "shards"
    shard_eeg(str(root / "recs" / "*.fif"), out, cfg=ShardingConfig(workers=1), progress=False,
              report=lambda line: None)  # fmt: skip
    return out, mixing, gates


def _path(root: Path, sub: str) -> Path:
    path = root / "recs" / f"sub-{sub}_task-rest_raw.fif"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _second_power(y: np.ndarray) -> np.ndarray:
    """Power of each row per 1-s block, (rows, seconds)."""
    n = y.shape[1] // int(SFREQ)
    return (y[:, : n * int(SFREQ)] ** 2).reshape(len(y), n, int(SFREQ)).mean(axis=2)


def _scaled_recording(shards: Path, sub: str) -> np.ndarray:
    """Subject ``sub``'s whole recording, each channel z-scored (as the stream scales it)."""
    from brainxl.shards.shardset import ShardSet

    parts = [
        (meta["key"], np.asarray(x))
        for meta, x in ShardSet(shards).eeg_segments()
        if meta["subject"] == sub
    ]
    x = np.concatenate([p[1] for p in sorted(parts, key=lambda p: p[0])], axis=1)
    return (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)


def test_ica_separates_what_every_channel_mixes(mixed) -> None:
    shards, _, gates = mixed
    unmix, report = fit_unmixing(shards, CHANNELS, 3, window_s=4, seed=0)
    assert unmix.shape == (3, len(CHANNELS))
    assert report.n_components == 3 and report.n_recordings == 2 and report.converged
    assert report.seconds == pytest.approx(2 * SECONDS, abs=8)
    assert "ICA of 6 channels -> 3 filters" in str(report)
    x = _scaled_recording(shards, "01")
    n = min(x.shape[1] // int(SFREQ), SECONDS) - 2  # edges: filtering and segment cuts
    truth = gates["01"][:, 1:n]

    def best_r(y: np.ndarray) -> np.ndarray:
        p = _second_power(y)[:, 1:n]
        r = np.corrcoef(np.vstack([p, truth]))[: len(p), len(p) :]
        return np.abs(r).max(axis=0)  # per rhythm, the row that follows its gate best

    # each component follows one rhythm's gate; no channel does (each mixes all three)
    assert (best_r(unmix @ x) > 0.95).all(), best_r(unmix @ x)
    assert (best_r(x) < 0.8).all(), best_r(x)


def test_filters_start_at_the_components(mixed) -> None:
    shards, _, _ = mixed
    unmix, _ = fit_unmixing(shards, CHANNELS, 4, window_s=4, seed=0)
    assert unmix.shape == (4, len(CHANNELS))  # at most one per channel; 4 asked of 6
    torch.manual_seed(0)
    model = NeuroBOLT(n_rois=3, window_s=4, spatial_filters=6)
    before = model.spatial_filters.weight.detach().clone()
    idx = channel_indices(CHANNELS)
    assert apply_unmixing(model, unmix, idx) == 4
    x = torch.randn(2, len(CHANNELS), 800)
    v = model.spatial_filters(x, torch.as_tensor(idx)).detach().numpy()
    expect = np.einsum("kc,bct->bkt", unmix, x.numpy())
    np.testing.assert_allclose(v[:, :4], expect, rtol=1e-4, atol=1e-4)
    w = model.spatial_filters.weight.detach()
    others = np.setdiff1d(np.arange(len(w)), np.asarray(idx) + 1)
    assert torch.count_nonzero(w[others, :4]) == 0  # other montages' rows do not leak in
    assert torch.equal(w[:, 4:], before[:, 4:])  # filters beyond the components: random
    with pytest.raises(ValueError, match="spatial_filters=K"):
        apply_unmixing(NeuroBOLT(n_rois=3, window_s=4), unmix, idx)


def test_montage_missing_from_the_shards_is_named(mixed) -> None:
    shards, _, _ = mixed
    with pytest.raises(ValueError, match=r"no recording of .*shards has all 7 channels.*'Oz'"):
        fit_unmixing(shards, [*CHANNELS, "Oz"], 3, window_s=4)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        fit_unmixing(shards, CHANNELS, 0, window_s=4)
