"""The malloc policies of brainxl.heap, each in a fresh interpreter (they are process-wide)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

#: Sixteen rounds of a step-like pattern (three 64 MiB tensors, then all freed); print the page
#: faults of the last four, once the heap has reached its steady state.
_FAULTS = """
import json, resource, sys
import torch
from brainxl import heap
policy = sys.argv[1]
applied = {"keep": heap.keep_freed_memory, "return": heap.return_freed_memory,
           "libc": lambda: None}[policy]()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():
    x = torch.ones(16 << 20)
    y = x * 2
    z = x + y
    del x, y, z
for _ in range(12):  # the heap grows for about 6 rounds (aligned blocks fragment it)
    step()
before = faults()
for _ in range(4):
    step()
print(json.dumps({"applied": applied, "faults": faults() - before,
                  "policy": heap.heap_policy()}))
"""


#: create_engine on a one-rank gloo group; prints the malloc policy it chose.
_ENGINE = """
import os, sys
import torch
from brainxl import heap
from brainxl.distrib.env import free_port
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0",
                  WORLD_SIZE="1", LOCAL_RANK="0")
from brainxl.distrib.config import TrainConfig
from brainxl.distrib.engine import create_engine
create_engine(torch.nn.Linear(4, 4), TrainConfig(zero_stage=int(sys.argv[1])), 1, 10,
              keep_heap=sys.argv[2] == "keep")
print(heap.heap_policy())
"""


def _python(code: str, *args: str) -> str:
    """The last line ``code`` prints, run in a fresh interpreter with ``args``."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def _faults(policy: str) -> dict:
    return json.loads(_python(_FAULTS, policy))


def test_kept_memory_is_reused_without_page_faults() -> None:
    pages = 4 * 3 * (64 << 20) // 4096  # 4 rounds of 3 tensors, every page faulted in
    libc = _faults("libc")
    keep = _faults("keep")
    assert keep["applied"] is True and keep["policy"] == "keep"
    assert libc["faults"] >= 0.9 * pages, libc  # glibc maps each tensor afresh
    # kept: the heap stops growing after some rounds (64 MiB more now and then, as the
    # aligned blocks fragment it); glibc's defaults fault in every page of every round
    assert keep["faults"] <= pages // 4, keep


def test_returned_memory_faults_in_again_and_keep_does_not_override_it() -> None:
    code = (
        "from brainxl import heap\n"
        "print(heap.return_freed_memory(), heap.keep_freed_memory(), heap.heap_policy())"
    )
    assert _python(code).split() == ["True", "False", "return"]
    ret = _faults("return")
    assert ret["applied"] is True
    assert ret["faults"] >= 0.9 * 4 * 3 * (64 << 20) // 4096, ret


def test_keep_is_applied_once_per_process() -> None:
    code = (
        "from brainxl import heap\n"
        "print(heap.heap_policy(), heap.keep_freed_memory(), heap.keep_freed_memory(), "
        "heap.heap_policy())"
    )
    assert _python(code).split() == ["None", "True", "True", "keep"]


@pytest.mark.parametrize(
    ("stage", "heap_reuse", "policy"),
    [(0, "keep", "keep"), (0, "off", "None"), (3, "keep", "return")],
)
def test_create_engine_chooses_the_policy(stage: int, heap_reuse: str, policy: str) -> None:
    # ZeRO-3 gives memory back; otherwise kept unless data.reader.heap_reuse is off
    assert _python(_ENGINE, str(stage), heap_reuse) == policy
