"""A rank ends its process groups before interpreter shutdown (two real gloo ranks).

A gloo group lives, with its worker threads, until its last reference is gone; one still
alive at interpreter shutdown can abort a rank that has already finished its work
(``terminate called without an active exception``, exit code -6).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from brainxl.distrib.env import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc/self/task"),
]

RANK = """
import json, os, sys
from pathlib import Path

import torch
from brainxl.distrib.config import TrainConfig
from brainxl.distrib.engine import create_engine, end_distributed, init_distributed
from brainxl.distrib.env import detect_env


def threads():
    return sorted(Path(f"/proc/self/task/{t}/comm").read_text().strip()
                  for t in os.listdir("/proc/self/task"))


env = detect_env()
init_distributed(env)
engine = create_engine(torch.nn.Linear(4, 2), TrainConfig(steps=2), env.world_size, 2)
import torch.distributed.nn  # noqa: E402,F401  as DeepSpeed's engine does, after init
loss = engine(torch.ones(3, 4)).sum()
engine.backward(loss)
engine.step()
during = threads()
del engine, loss
end_distributed()
print(json.dumps({"during": during, "after": threads()}))
"""


def test_end_distributed_leaves_no_gloo_thread_to_interpreter_shutdown(tmp_path: Path) -> None:
    port = free_port()
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "RANK"))}
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RANK],
                env=env,
                cwd=tmp_path,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        )
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        seen = json.loads(out.strip().splitlines()[-1])
        assert any(t.startswith(("gloo", "pt_gloo")) for t in seen["during"]), seen
        assert not [t for t in seen["after"] if "gloo" in t or "tcpstore" in t], seen
