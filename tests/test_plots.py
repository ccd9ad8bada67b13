"""Tests of brainxl.plots: every function returns a Figure that saves a non-trivial PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from brainxl import metrics as M
from brainxl import plots as P

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _save(fig: Figure, path: Path) -> int:
    assert isinstance(fig, Figure)
    fig.savefig(path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    return len(data)


@pytest.fixture(scope="module")
def summary() -> M.FoldSummary:
    rng = np.random.default_rng(0)
    names = [f"parcel{i}" for i in range(8)]
    ceiling = np.linspace(0.9, 0.3, 8)
    res = []
    for s in range(3):
        true = rng.standard_normal((60, 8))
        pred = true * ceiling + rng.standard_normal((60, 8))
        res.append(M.evaluate_subject(f"{s + 1:02d}", pred, true, names, noise_ceiling=ceiling))
    return M.summarize(res)


def test_roi_r_vs_ceiling(summary: M.FoldSummary, tmp_path: Path) -> None:
    fig = P.plot_roi_r_vs_ceiling(summary)
    assert len([a for a in fig.axes if a.get_visible()]) == 2
    assert _save(fig, tmp_path / "a.png") > 10_000
    fig2 = P.plot_roi_r_vs_ceiling(summary.roi_r)  # bare arrays, no ceiling
    assert len(fig2.axes) == 1
    assert _save(fig2, tmp_path / "b.png") > 5_000
    with pytest.raises(ValueError, match="shape"):
        P.plot_roi_r_vs_ceiling(summary.roi_r, ceiling=np.ones(3))


def test_pred_vs_true_picks_best_median_worst(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    true = rng.standard_normal((100, 5))
    noise = np.array([0.1, 20.0, 1.0, 0.5, 2.0])
    pred = true + noise * rng.standard_normal((100, 5))
    names = list("abcde")
    fig = P.plot_pred_vs_true(pred, true, names, tr=2.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("best: a") and titles[-1].startswith("worst: b")
    assert titles[1].startswith("median: c")
    assert fig.axes[-1].get_xlabel() == "time (s)"
    assert _save(fig, tmp_path / "p.png") > 10_000
    with pytest.raises(ValueError, match="which"):
        P.plot_pred_vs_true(pred, true, names, which=("top",))


def test_hrfs_and_attention(tmp_path: Path) -> None:
    t = np.arange(0, 20, 0.5)
    true = np.stack([t**5 * np.exp(-t) / 120 * (1 + 0.1 * i) for i in range(6)])
    learned = true + 0.02 * np.random.default_rng(2).standard_normal(true.shape)
    fig = P.plot_hrfs(learned, true, dt=0.5, names=[f"p{i}" for i in range(6)])
    assert "r = " in fig.axes[0].get_title()
    assert _save(fig, tmp_path / "h.png") > 10_000
    assert _save(P.plot_hrfs(learned, None, dt=0.5), tmp_path / "h2.png") > 10_000
    w = np.random.default_rng(3).dirichlet(np.ones(4), size=(2, 10))  # (B, P, n_scales)
    fig = P.plot_wavelet_attention(w, ["D1", "D2", "D3", "A3"])
    assert _save(fig, tmp_path / "w.png") > 10_000
    with pytest.raises(ValueError, match="n_scales"):
        P.plot_wavelet_attention(np.zeros(4))


def test_training_curves(tmp_path: Path) -> None:
    records = [{"step": s, "split": "train", "loss": 1.0 / (s + 1), "lr": 1e-3} for s in range(20)]
    records += [{"step": s, "split": "val", "loss": 1.2 / (s + 1), "r": s / 40} for s in (5, 10)]
    fig = P.plot_training_curves(records)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["loss", "r", "lr"]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["train", "val"]
    assert _save(fig, tmp_path / "c.png") > 10_000
    with pytest.raises(ValueError, match="step"):
        P.plot_training_curves([{"loss": 1.0}])


def test_per_subject(summary: M.FoldSummary, tmp_path: Path) -> None:
    fig = P.plot_per_subject(summary)
    assert len(fig.axes) == 2
    assert _save(fig, tmp_path / "s.png") > 10_000
    one = M.summarize(summary.per_subject[:1])
    texts = [t.get_text() for t in P.plot_per_subject(one).axes[0].texts]
    assert any("interval undefined" in t for t in texts)


def test_standard_figures_skip_missing_inputs(summary: M.FoldSummary) -> None:
    assert list(P.standard_figures(summary)) == ["roi_r_vs_ceiling", "per_subject"]
    rng = np.random.default_rng(4)
    true = rng.standard_normal((30, 8))
    figs = P.standard_figures(
        summary,
        predictions={"01": (true + rng.standard_normal((30, 8)), true)},
        learned_hrfs=np.ones((8, 10)) + rng.random((8, 10)),
        attention=rng.random((8, 3)),
        records=[{"step": 1, "split": "train", "loss": 1.0}],
    )
    assert list(figs)[2:] == ["pred_vs_true_sub-01", "hrfs", "wavelet_attention", "training_curves"]
    assert all(isinstance(f, Figure) for f in figs.values())
