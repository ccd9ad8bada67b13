"""``brainxl collect`` / ``logs`` / ``status`` on run folders (no cluster needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from brainxl.launch import cli
from brainxl.launch.cmd_collect import collect

from brainxl import metrics as bm


def _fold(root: Path, subject: str, seed: int, name: str) -> Path:
    rng = np.random.default_rng(seed)
    true = rng.standard_normal((50, 4))
    pred = true + rng.standard_normal((50, 4))
    res = bm.evaluate_subject(subject, pred, true, ["a", "b", "c", "d"])
    d = root / "exp" / f"test-{subject}-{seed:012x}"
    bm.to_json(res, d / name)
    return d


def _record(d: Path, job_id: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "slurm_job.json").write_text(
        json.dumps(
            {
                "job_id": job_id,
                "stdout": str(d / f"{job_id}_0_log.out"),
                "stderr": str(d / f"{job_id}_0_log.err"),
                "run_dir": str(d),
                "profile": "local",
                "submitted_at": "2026-01-01T00:00:00",
            }
        )
    )


def test_collect_reports_every_fold(tmp_path: Path, capsys) -> None:
    d1 = _fold(tmp_path, "sub-01", 1, name="test/metrics-01.json")  # what the trainer writes
    d2 = _fold(tmp_path, "sub-02", 2, name="results.json")
    _record(d1, "7_0")
    missing = tmp_path / "exp" / "test-sub-03-000000000003"
    _record(missing, "7_2")
    report, miss = collect([str(tmp_path / "exp")])
    assert miss == [missing.resolve()]
    assert "3 fold(s), 2 with results." in report
    for d, f in ((d1, "test/metrics-01.json"), (d2, "results.json")):
        res = bm.from_json(d / f)
        assert f"| {d.name} | {res.subject} | {res.mean_r:.3f} |" in report
    assert "| test-sub-03-000000000003 | - | missing |" in report
    merged = bm.summarize(
        [bm.from_json(d1 / "test/metrics-01.json"), bm.from_json(d2 / "results.json")]
    )
    assert f"- Pearson r: {merged.r}" in report

    out = tmp_path / "report.md"
    assert cli.main(["collect", str(tmp_path / "exp"), "--out", str(out)]) == 1
    assert out.read_text() == report
    assert cli.main(["collect", str(d1), str(d2)]) == 0
    capsys.readouterr()


def test_collect_rejects_bad_json(tmp_path: Path) -> None:
    d = tmp_path / "exp" / "fold"
    d.mkdir(parents=True)
    (d / "results.json").write_text("{not json")
    report, miss = collect([str(d)])
    assert miss == [d.resolve()] and "not valid JSON" in report
    with pytest.raises(ValueError, match="does not exist"):
        collect([str(tmp_path / "nope")])


def test_logs_and_status_from_records(tmp_path: Path, capsys) -> None:
    d = tmp_path / "runs" / "exp" / "all-0123456789ab"
    _record(d, "42")
    (d / "42_0_log.out").write_text("".join(f"line {i}\n" for i in range(100)))
    (d / "42_1_log.out").write_text("rank one\n")
    assert cli.main(["logs", "all-0123", "--root", str(tmp_path / "runs"), "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "line 97\nline 98\nline 99\n" in out and "line 96" not in out
    assert cli.main(["logs", "42", "--root", str(tmp_path / "runs"), "--rank", "1"]) == 0
    assert "rank one" in capsys.readouterr().out
    # a user mistake: one line on stderr, exit code 2 (cli.main catches the ValueError)
    assert cli.main(["logs", "zzz", "--root", str(tmp_path / "runs")]) == 2
    assert "no submitted run matches" in capsys.readouterr().err
    assert cli.main(["status", "--root", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == "42" and lines[1].split()[-1] == str(d)


@pytest.mark.parametrize(
    "script",
    [
        "slurm/start-cluster.sh",
        "slurm/stop-cluster.sh",
        "slurm/templates/srun-train.sh",
        "slurm/templates/train-gpu.sbatch",
        "slurm/templates/train-cpu.sbatch",
    ],
)
def test_slurm_scripts_parse(script: str) -> None:
    import subprocess

    path = Path(__file__).resolve().parent.parent / script
    res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if script.endswith(".sbatch"):
        text = path.read_text()
        assert "--signal=B:USR2@" in text and "#SBATCH --requeue" in text
