"""`brainxl pretrain --cluster local` on the 2-node test cluster: a time-limit signal
(USR2) saves, the job requeues itself and resumes to the weights of a local run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_fixtures import REPO, write_corpus
from test_slurm_cluster import (
    STEP_LIMIT_S,
    _release_requeued,
    _wait_until,
    interrupt_after_checkpoint,
)

pytestmark = pytest.mark.slurm
STEPS, CKPT_EVERY = 60, 3


@pytest.fixture(scope="module", autouse=True)
def cluster(slurm_cluster: str) -> str:
    return slurm_cluster


def _pretrain(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch.cli", "pretrain", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=STEP_LIMIT_S,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def test_requeued_pretraining_resumes_to_the_local_weights(tmp_path: Path) -> None:
    from brainxl.launch import slurm

    train = {"steps": STEPS, "warmup_steps": 2, "ckpt_every": CKPT_EVERY, "log_every": 3}
    corpus = write_corpus(tmp_path, train)
    out = _pretrain(str(corpus / "tok.yaml"), "run.name=slurm", "--cluster", "local")
    job_id, run = re.search(r"submitted (\S+)\s+(\S+)", out).groups()
    run = Path(run)
    interrupt_after_checkpoint(run, CKPT_EVERY, job_id, ["scancel", "--signal=USR2", job_id])
    _release_requeued(job_id)
    _wait_until(
        lambda: (
            (run / "final_metrics.json").is_file()
            or slurm.job_states([job_id]).get(job_id, "") in ("FAILED", "CANCELLED", "TIMEOUT")
        ),
        STEP_LIMIT_S * 2,
        f"pretraining job {job_id} did not finish",
        1.0,
    )
    slurm.wait_until_finished([job_id], timeout_s=STEP_LIMIT_S)
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["step"] == STEPS
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["split"] == "resume"]
    assert len(resumed) == 1 and CKPT_EVERY <= resumed[0]["step"] < STEPS, resumed
    assert resumed[0]["world_size"] == resumed[0]["from_world_size"] == 2

    # the same config, uninterrupted, on 2 local ranks
    _pretrain(str(corpus / "tok.yaml"), "run.name=local", "--nproc", "2")
    local = run.parent / "local"
    wa = torch.load(run / "final_model.pt", weights_only=True)
    wb = torch.load(local / "final_model.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6, msg=f"at {k}")
