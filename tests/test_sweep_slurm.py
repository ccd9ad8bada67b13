"""A sweep in one SLURM allocation on the local 2-node test cluster (``slurm/start-cluster.sh``).

The job's first task starts the Ray head on n1, the second joins from n2; two trials of
one CPU each run at once, so one runs on each node; the sweep finishes with its report.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import train_fixtures

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def cluster(slurm_cluster: str) -> str:
    return slurm_cluster


def test_sweep_in_one_allocation_runs_trials_on_both_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from brainxl.launch import sweep as sw
    from brainxl.launch.sweep_cluster import submit_sweep

    shards = train_fixtures.write_shards(
        tmp_path / "shards", subjects=("01", "02", "03", "04", "05")
    )
    search = tmp_path / "search.yaml"
    search.write_text(
        "space:\n  train.lr: {grid: [0.003, 0.001]}\nnum_samples: 1\nmax_concurrent: 2\n"
        "inner_folds: 2\nresources: {ranks: 1, cpus: 1}\n"
    )
    skip = ("data.test_subject", "data.val_subjects")
    ov = [o for o in train_fixtures.overrides(shards, tmp_path / "runs") if not o.startswith(skip)]
    plan = sw.plan("neurobolt-debug", str(search), ov, tmp_path / "sweep")
    # the job inherits this environment: DeepSpeed's JIT-built CPU op in a cache of this
    # checkout's own (the shared one is rebuilt, under a lock, by every other checkout)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = submit_sweep(plan, ["05"], "local", ridge=False)
    deadline = time.time() + 1200
    while not job.done():
        if time.time() > deadline:
            subprocess.run(["scancel", str(job.job_id)], check=False)
            pytest.fail(f"sweep job {job.job_id} did not finish: {job.stdout()}")
        time.sleep(2.0)
    results = job.results()
    assert results[0] is not None and results[0]["report"], job.stdout()
    search_result = json.loads((plan.folder / "outer-05" / "search.json").read_text())
    nodes = {f["node"] for t in search_result["trials"] for f in t["folds"]}
    assert nodes == {"n1", "n2"}, search_result["trials"]
    assert {t["state"] for t in search_result["trials"]} == {"done"}
    assert (plan.folder / "report.md").is_file()
    # Ray is stopped at the end: no raylet of this job is left on the machine
    left = subprocess.run(
        ["pgrep", "-f", f"brx-{str(job.job_id).split('_')[0]}-"], capture_output=True, text=True
    )
    assert left.stdout.strip() == "", left.stdout
