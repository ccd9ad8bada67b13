"""Tests of brainxl.report: Markdown + self-contained HTML with embedded figures."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import numpy as np
import pytest

from brainxl import metrics as M
from brainxl import plots as P
from brainxl.report import ReportFiles, write_report


def _summary(noise: float, seed: int) -> M.FoldSummary:
    rng = np.random.default_rng(seed)
    names = ["V1", "MT", "PFC"]
    res = []
    for s in ("01", "02", "03"):
        true = rng.standard_normal((40, 3))
        pred = true + noise * rng.standard_normal((40, 3))
        res.append(M.evaluate_subject(s, pred, true, names, noise_ceiling=[0.9, 0.7, 0.5]))
    return M.summarize(res)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportFiles, M.FoldSummary]:
    run_dir = tmp_path_factory.mktemp("run")
    summary = _summary(0.7, 0)
    baseline = _summary(3.0, 1)
    figures = {
        "roi_r_vs_ceiling": P.plot_roi_r_vs_ceiling(summary),
        "per_subject": P.plot_per_subject(summary),
    }
    files = write_report(
        run_dir,
        summary,
        figures,
        config={"model": {"name": "neurobolt", "depth": 2}, "train": {"lr": 3e-4}},
        extra_tables={"timing": [{"stage": "train", "seconds": 12.5}, {"stage": "eval"}]},
        baseline=baseline,
        notes=["simulated data"],
    )
    return files, summary


def test_files_are_written(written: tuple[ReportFiles, M.FoldSummary]) -> None:
    files, _ = written
    assert files.directory.name == "report"
    assert set(files.figures) == {"roi_r_vs_ceiling", "per_subject"}
    for p in files.figures.values():
        assert p.parent == files.directory and p.stat().st_size > 10_000
    assert os.fspath(files) == str(files.html) and Path(files).exists()
    assert isinstance(M.from_json(files.summary_json), M.FoldSummary)
    assert not list(files.directory.glob(".*tmp*"))  # no temporary leftovers


def test_html_is_self_contained(written: tuple[ReportFiles, M.FoldSummary]) -> None:
    files, summary = written
    html = files.html.read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 2
    for b64, path in zip(imgs, files.figures.values()):
        assert base64.b64decode(b64) == path.read_bytes()
    assert 'src="roi_r_vs_ceiling.png"' not in html  # nothing linked from outside
    for s in summary.per_subject:
        row = re.search(rf"<tr><td>sub-{s.subject}</td><td>40</td><td>([-0-9.]+)</td>", html)
        assert row is not None and float(row.group(1)) == pytest.approx(s.mean_r, abs=5e-4)
    assert "95% CI" in html and "ridge (band power) mean r" in html
    assert "<td>timing</td>" not in html and "<h2>timing</h2>" in html
    assert "neurobolt" in html and "simulated data" in html
    assert "numpy" in html  # versions table


def test_markdown_links_pngs(written: tuple[ReportFiles, M.FoldSummary]) -> None:
    files, summary = written
    md = files.markdown.read_text()
    assert "![roi_r_vs_ceiling](roi_r_vs_ceiling.png)" in md
    assert "![per_subject](per_subject.png)" in md
    for s in summary.per_subject:
        assert f"| sub-{s.subject} | 40 | {s.mean_r:.3f} |" in md
    for name in summary.roi_names:
        assert re.search(rf"^\| {name} \| ", md, re.M)
    assert "difference (model - baseline)" in md
    assert "| difference, paired by subject | " in md


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    summary = _summary(1.0, 2)
    with pytest.raises(ValueError, match="safe file name"):
        write_report(tmp_path, summary, {"../evil": P.plot_per_subject(summary)}, {})
    with pytest.raises(ValueError, match="FoldSummary"):
        write_report(tmp_path, {"r": 0.3}, {}, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="list of dicts"):
        write_report(tmp_path, summary, {}, {}, extra_tables={"t": [1, 2]})  # type: ignore[list-item]
    assert not (tmp_path / "report").exists()


def test_single_subject_report_says_interval_undefined(tmp_path: Path) -> None:
    one = M.summarize(_summary(1.0, 3).per_subject[:1])
    files = write_report(tmp_path, one, {}, {"seed": 0}, baseline=0.1)
    md = files.markdown.read_text()
    assert "interval undefined" in md
    assert "ridge (band power) mean r | 0.100" in md
