"""The README's quickstart end to end: the model must beat the band-power ridge (slow)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_quickstart_beats_the_ridge_baseline(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch.cli", "quickstart", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = float(re.search(r"neurobolt mean r = (-?[0-9.]+)", proc.stdout).group(1))
    ridge = float(re.search(r"ridge \(band power\) mean r = (-?[0-9.]+)", proc.stdout).group(1))
    assert model > ridge + 0.02, proc.stdout[-2000:]
    report = Path(re.search(r"report: (\S+)", proc.stdout).group(1))
    assert report.is_file() and (report.parent / "report.md").is_file()
    final = json.loads((report.parent.parent / "final_metrics.json").read_text())
    assert final["test"]["weights"].startswith("best")
    assert final["split"]["test"] == ["01"] and "01" not in final["split"]["train"]
