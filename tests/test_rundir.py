"""RunDir: every run-folder file name is spelled once, in distrib/rundir.py."""

from __future__ import annotations

import re
from pathlib import Path

from brainxl.distrib.config import load_config, run_dir
from brainxl.distrib.rundir import RunDir

REPO = Path(__file__).resolve().parent.parent
NAMES = [
    RunDir.CONFIG,
    RunDir.VERSION,
    RunDir.DATA_ID,
    RunDir.DATA_INFO,
    RunDir.METRICS,
    RunDir.BEST_MODEL,
    RunDir.BEST_META,
    RunDir.FINAL_MODEL,
    RunDir.FINAL_METRICS,
    RunDir.JOB_RECORD,
]


def test_run_file_names_are_spelled_only_in_rundir() -> None:
    """No other module of the runtime or the launchers writes a run-file name as a string."""
    offenders = []
    for folder in ("distrib", "launch"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "rundir.py":
                continue
            text = path.read_text()
            for name in NAMES:
                # a string literal holding the name (docstrings and comments may mention it)
                for m in re.finditer(rf"[\"'](?:[^\"'\n]*/)?{re.escape(name)}[\"']", text):
                    line = text[: m.start()].count("\n") + 1
                    stripped = text.splitlines()[line - 1].strip()
                    if not stripped.startswith(("#", '"""', "``")) and "``" not in m.group():
                        offenders.append(f"{path.relative_to(REPO)}:{line}: {m.group()}")
    assert not offenders, "\n".join(offenders)


def test_paths_and_state(tmp_path: Path) -> None:
    cfg = load_config(None, [f"run.root={tmp_path}"])
    run = RunDir.of(cfg)
    assert run.path == run_dir(cfg)
    assert run.latest_path == run.checkpoints / "latest"
    assert run.predictions(run.test_dir, "04").name == "predictions-04.npz"
    assert run.lock_path.parent == run.path
    assert not run.is_run() and not run.is_complete()
    run.path.mkdir(parents=True)
    run.config_path.write_text("experiment: x\n")
    run.final_metrics.write_text("{}")
    assert run.is_run() and run.is_complete()
