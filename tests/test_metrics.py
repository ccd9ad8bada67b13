"""Tests of brainxl.metrics: correlations against scipy, intervals, ceilings, JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from brainxl import metrics as M


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    true = rng.standard_normal((120, 6))
    pred = 0.5 * true + rng.standard_normal((120, 6)) + 3.0
    return pred, true


def test_pearson_and_spearman_match_scipy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, true = pair
    r = M.pearson_per_roi(pred, true)
    rho = M.spearman_per_roi(pred, true)
    assert r.shape == rho.shape == (6,)
    for j in range(6):
        assert r[j] == pytest.approx(stats.pearsonr(pred[:, j], true[:, j])[0], abs=1e-12)
        assert rho[j] == pytest.approx(stats.spearmanr(pred[:, j], true[:, j])[0], abs=1e-12)


def test_spearman_with_ties_matches_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, size=(50, 3)).astype(float)
    b = a + rng.integers(0, 3, size=(50, 3))
    rho = M.spearman_per_roi(a, b)
    for j in range(3):
        assert rho[j] == pytest.approx(stats.spearmanr(a[:, j], b[:, j])[0], abs=1e-12)


def test_cosine_is_uncentred(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, true = pair
    cos = M.cosine_per_roi(pred, true)
    j = 2
    expect = pred[:, j] @ true[:, j] / np.linalg.norm(pred[:, j]) / np.linalg.norm(true[:, j])
    assert cos[j] == pytest.approx(expect, abs=1e-12)
    # an offset changes cosine but not Pearson r
    assert not np.allclose(cos, M.pearson_per_roi(pred, true))


def test_constant_roi_gives_nan_and_summaries_skip_it(pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, true = pair
    pred = pred.copy()
    pred[:, 1] = 0.1  # constant at a value that is not exact in binary
    true = true.copy()
    true[:, 4] = 7.0
    r = M.pearson_per_roi(pred, true)
    assert np.isnan(r[1]) and np.isnan(r[4])
    assert np.isfinite(np.delete(r, [1, 4])).all()
    assert np.isnan(M.spearman_per_roi(pred, true)[[1, 4]]).all()
    names = [f"p{i}" for i in range(6)]
    res = M.evaluate_subject("01", pred, true, names)
    assert res.n_valid_rois == 4
    assert res.mean_r == pytest.approx(np.mean(np.delete(r, [1, 4])))
    s = M.summarize([res, M.evaluate_subject("02", *pair, names)])
    assert list(s.roi_n) == [2, 1, 2, 2, 1, 2]
    assert any("undefined r" in n for n in s.notes)
    assert s.roi_r[1] == pytest.approx(M.pearson_per_roi(*pair)[1])


def test_shape_mismatch_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="same shape"):
        M.pearson_per_roi(np.zeros((10, 3)), np.zeros((3, 10)))
    with pytest.raises(ValueError, match="ROI names"):
        M.evaluate_subject("01", np.ones((10, 3)), np.ones((10, 3)), ["a", "b"])


def test_interval_matches_hand_computation() -> None:
    vals = [0.31, 0.22, 0.40, 0.18, 0.27]
    n = len(vals)
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    t975_df4 = 2.7764451051977987  # Student t quantile, 4 degrees of freedom
    half = t975_df4 * sd / math.sqrt(n)
    m, lo, hi, k = M.t_interval(vals)
    assert k == 5
    assert m == pytest.approx(mean)
    assert lo == pytest.approx(mean - half, abs=1e-12)
    assert hi == pytest.approx(mean + half, abs=1e-12)


def test_summary_interval_across_subjects_and_single_subject() -> None:
    rng = np.random.default_rng(2)
    names = ["a", "b", "c"]
    results = []
    for i, noise in enumerate([0.5, 1.0, 2.0, 4.0]):
        true = rng.standard_normal((80, 3))
        results.append(
            M.evaluate_subject(f"{i:02d}", true + noise * rng.standard_normal((80, 3)), true, names)
        )
    s = M.summarize(results)
    per = [r.mean_r for r in results]
    m, lo, hi, n = M.t_interval(per)
    assert (s.r.mean, s.r.low, s.r.high, s.r.n) == pytest.approx((m, lo, hi, n))
    assert s.r.low < s.r.mean < s.r.high
    np.testing.assert_allclose(s.roi_r, np.mean([r.r for r in results], axis=0))
    one = M.summarize(results[:1])
    assert math.isnan(one.r.low) and math.isnan(one.r.high)
    assert one.r.mean == pytest.approx(results[0].mean_r)
    assert any("undefined" in n for n in one.notes)
    assert "interval undefined" in str(one.r)


def test_duplicate_subjects_and_mixed_atlases_are_rejected() -> None:
    x = np.random.default_rng(3).standard_normal((20, 2))
    a = M.evaluate_subject("01", x, x + 1, ["a", "b"])
    with pytest.raises(ValueError, match="more than once"):
        M.summarize([a, a])
    b = M.evaluate_subject("02", x, x + 1, ["a", "c"])
    with pytest.raises(ValueError, match="same atlas"):
        M.summarize([a, b])


def test_noise_ceiling_and_fraction() -> None:
    rng = np.random.default_rng(4)
    clean = rng.standard_normal((200, 4))
    observed = clean + rng.standard_normal((200, 4)) * np.array([0.2, 0.5, 1.0, 2.0])
    ceil = M.noise_ceiling(observed, clean)
    assert np.all(np.diff(ceil) < 0)  # more noise, lower ceiling
    pred = clean + rng.standard_normal((200, 4))
    res = M.evaluate_subject("01", pred, observed, list("abcd"), noise_ceiling=ceil)
    np.testing.assert_allclose(res.fraction_of_ceiling, res.r / ceil)
    expect = np.mean(res.r) / np.mean(ceil)
    assert res.mean_fraction_of_ceiling == pytest.approx(expect)
    frac = M.fraction_of_ceiling(np.array([0.2, 0.2]), np.array([0.4, -0.1]))
    assert frac[0] == pytest.approx(0.5) and np.isnan(frac[1])


def test_full_window_mask() -> None:
    mask = M.full_window_mask(10, tr=2.0, window_s=6.0, lead_in=0.0)
    assert mask.tolist() == [False] * 3 + [True] * 7
    assert M.full_window_mask(10, tr=2.0, window_s=6.0, lead_in=6.0).all()


def _write_ceiling(root, sub: str, run: str, rows: list[tuple[str, str]]) -> None:
    d = root / "derivatives" / "brainxl-sim" / f"sub-{sub}" / "func"
    d.mkdir(parents=True, exist_ok=True)
    text = "name\tr\n" + "".join(f"{n}\t{r}\n" for n, r in rows)
    (d / f"sub-{sub}_task-rest_run-{run}_desc-noiseceiling_stats.tsv").write_text(text)


def test_load_noise_ceiling(tmp_path) -> None:
    assert M.load_noise_ceiling(tmp_path, "01") is None  # not simulated
    _write_ceiling(tmp_path, "01", "1", [("V1", "0.8"), ("MT", "0.6"), ("X", "n/a")])
    _write_ceiling(tmp_path, "01", "2", [("V1", "0.6"), ("MT", "0.4"), ("X", "n/a")])
    c = M.load_noise_ceiling(tmp_path, "sub-01")
    assert c["V1"] == pytest.approx(0.7) and c["MT"] == pytest.approx(0.5)
    assert math.isnan(c["X"])
    arr = M.ceiling_array(c, ["MT", "V1", "missing"])
    assert arr[:2] == pytest.approx([0.5, 0.7]) and math.isnan(arr[2])
    with pytest.raises(ValueError, match="sub-02"):
        M.load_noise_ceiling(tmp_path, "02")
    _write_ceiling(tmp_path, "03", "1", [("V1", "high")])
    with pytest.raises(ValueError, match="not a number"):
        M.load_noise_ceiling(tmp_path, "03")


def test_json_round_trip_and_merge(tmp_path) -> None:
    rng = np.random.default_rng(5)
    names = ["a", "b", "c"]
    folds = []
    for i in range(3):
        true = rng.standard_normal((50, 3))
        pred = true + rng.standard_normal((50, 3))
        pred[:, 2] = 1.0 if i == 0 else pred[:, 2]  # a NaN survives the round trip
        res = M.evaluate_subject(f"{i:02d}", pred, true, names, noise_ceiling=[0.9, 0.8, 0.7])
        folds.append(M.summarize([res]))
    path = tmp_path / "fold0" / "summary.json"
    M.to_json(folds[0], path)
    back = M.from_json(path)
    assert isinstance(back, M.FoldSummary)
    np.testing.assert_allclose(back.per_subject[0].r, folds[0].per_subject[0].r)
    assert np.isnan(back.per_subject[0].r[2])
    merged = M.merge_summaries([M.from_json(M.to_json(f)) for f in folds])
    assert merged.subjects == ["00", "01", "02"]
    assert merged.r.n == 3 and np.isfinite(merged.r.low)
    assert merged.fraction_of_ceiling is not None and merged.fraction_of_ceiling.n == 3
    with pytest.raises(ValueError, match="more than once"):
        M.merge_summaries([folds[0], folds[0]])
    sr = M.from_json(M.to_json(folds[1].per_subject[0]))
    assert isinstance(sr, M.SubjectResult) and sr.subject == "01"


def test_from_json_rejects_garbage(tmp_path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        M.from_json(bad)
    with pytest.raises(ValueError, match="FoldSummary"):
        M.from_json('{"kind": "other"}')


def test_noise_ceiling_on_scored_trs(tmp_path) -> None:
    rng = np.random.default_rng(6)
    clean = rng.standard_normal((30, 2))
    obs = clean + rng.standard_normal((30, 2))
    obs[:10] = rng.standard_normal((10, 2))  # early TRs: pure noise
    d = tmp_path / "derivatives" / "brainxl-sim" / "sub-01" / "func"
    d.mkdir(parents=True)
    stem = "sub-01_task-rest_run-1_atlas-sim"
    for suffix, data in (("_timeseries.tsv", obs), ("_desc-noisefree_timeseries.tsv", clean)):
        rows = "".join("\t".join(f"{v:.7g}" for v in row) + "\n" for row in data)
        (d / f"{stem}{suffix}").write_text("A\tB\n" + rows)
    full = M.load_noise_ceiling_on_trs(tmp_path, "01")
    late = M.load_noise_ceiling_on_trs(tmp_path, "01", tr_indices=np.arange(10, 30))
    assert full["A"] == pytest.approx(M.noise_ceiling(obs, clean)[0], abs=1e-6)
    assert late["A"] == pytest.approx(M.noise_ceiling(obs[10:], clean[10:])[0], abs=1e-6)
    assert late["A"] > full["A"] and late["B"] > full["B"]
    assert M.load_noise_ceiling_on_trs(tmp_path / "nothing", "01") is None
    with pytest.raises(ValueError, match="TR index 40"):
        M.load_noise_ceiling_on_trs(tmp_path, "01", tr_indices=[40])


def test_paired_difference_and_comparison_text() -> None:
    rng = np.random.default_rng(7)
    names = ["a", "b"]
    model, base = [], []
    for i in range(4):
        true = rng.standard_normal((60, 2))
        model.append(
            M.evaluate_subject(f"{i:02d}", true + 0.5 * rng.standard_normal((60, 2)), true, names)
        )
        base.append(
            M.evaluate_subject(f"{i:02d}", true + 3 * rng.standard_normal((60, 2)), true, names)
        )
    sm, sb = M.summarize(model), M.summarize(base)
    diff = M.paired_difference(sm, sb)
    expect = M.t_interval([m.mean_r - b.mean_r for m, b in zip(model, base)])
    assert (diff.mean, diff.low, diff.high, diff.n) == pytest.approx(expect)
    assert diff.low > 0
    text = M.format_comparison(sm, sb)
    assert "sub-00" in text and "ridge (band power) mean r" in text and "paired" in text
    other = M.summarize(
        [M.evaluate_subject("09", true + rng.standard_normal((60, 2)), true, names)]
    )
    with pytest.raises(ValueError, match="do not overlap"):
        M.paired_difference(sm, other)


def test_true_hrfs_of_a_simulated_subject(sim_bids, tmp_path):
    from brainxl.metrics import load_true_hrfs

    k = load_true_hrfs(sim_bids, "01", dt=0.1)
    assert k.ndim == 2 and k.shape[1] >= 200  # at least 20 s of lags
    assert np.allclose(np.abs(k).max(axis=1), 1.0)
    peaks = k.argmax(axis=1) * 0.1
    assert np.all((peaks > 3.0) & (peaks < 9.0))  # the positive lobe of a BOLD response
    assert load_true_hrfs(tmp_path, "01") is None  # not a simulated dataset
