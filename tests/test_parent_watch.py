"""A child that watches its parent dies with it (``kill -9`` of a launcher or a Ray node)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
from brainxl.distrib.parent_watch import LAUNCHER_PID_ENV

# the parent starts the child, reports its pid, and waits; the child watches its parent
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD = """
import sys, time
from brainxl.distrib.parent_watch import watch_launcher
assert watch_launcher()
print("watching", flush=True)
time.sleep(1.0)  # five polls with the parent alive
print("alive", flush=True)
time.sleep(600)
"""


def gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], limit_s: float) -> list[int]:
    """Wait up to ``limit_s`` for every pid to exit; returns those still running."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        left = [p for p in pids if not gone(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


def test_child_exits_when_its_launcher_is_killed() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # the child learns its launcher's pid as a rank does, from the environment
            f"import os\nos.environ[{LAUNCHER_PID_ENV!r}] = str(os.getpid())\n{PARENT}",
            CHILD,
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "watching"
        assert parent.stdout.readline().strip() == "alive"  # no false alarm
        assert not gone(child)
        os.kill(parent.pid, signal.SIGKILL)  # the parent only: its group lives on
        parent.wait()
        assert wait_gone([child], 30.0) == [], "the child kept running after its parent died"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_watch_is_once_per_process_and_needs_the_launcher_variable(monkeypatch) -> None:
    code = (
        "import os\n"
        "from brainxl.distrib.parent_watch import exit_with_parent, watch_launcher\n"
        "assert not watch_launcher()  # no launcher variable: no watch\n"
        "assert exit_with_parent()\n"
        "assert not exit_with_parent()\n"
        "print('ok')\n"
    )
    monkeypatch.delenv(LAUNCHER_PID_ENV, raising=False)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_child_whose_parent_is_already_gone_exits_at_once() -> None:
    code = (
        "from brainxl.distrib.parent_watch import exit_with_parent\n"
        "exit_with_parent(1)  # not this process's parent: as if it had died already\n"
        "print('still here')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == -signal.SIGKILL and "still here" not in out.stdout
    assert "parent process 1 is gone" in out.stderr
