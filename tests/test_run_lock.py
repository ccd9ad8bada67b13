"""One live writer per run folder (:mod:`brainxl.distrib.runlock`).

Holders are real processes: a second launch fails at once naming the holder, a lock
left by a dead process does not block, a requeued SLURM job takes its own lock over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from brainxl.distrib.rundir import RunDir
from brainxl.distrib.runlock import (
    LockHolder,
    RunLock,
    RunLockedError,
    check_free,
    probe,
    read_holder,
)

HOLDER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from brainxl.distrib.runlock import RunLock

    lock = RunLock(sys.argv[1])
    lock.acquire()
    mode = sys.argv[2]
    if mode == "hold":
        print("held", flush=True)
        time.sleep(600)
    elif mode == "fork":  # a forked child (a DataLoader worker) outlives its parent
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        print(pid, flush=True)
        os._exit(0)
    elif mode == "inherit":  # a child that kept the descriptor outlives the holder
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], pass_fds=[lock._fd]
        )
        print(child.pid, flush=True)
        os._exit(0)
    """
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(extra)
    return env


def _start(path: Path, mode: str, **env: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), mode],
        env=_env(**env),
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()  # blocks until the holder took the lock
    assert line, f"holder exited with {proc.wait(timeout=60)}"
    return proc, line


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def no_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("SLURM")]:
        monkeypatch.delenv(k)


def test_second_holder_fails_at_once_naming_the_first(tmp_path: Path, no_slurm) -> None:
    path = RunDir(tmp_path / "run").lock_path
    proc, _ = _start(path, "hold")
    try:
        holder = read_holder(path)
        assert holder is not None and holder.pid == proc.pid
        assert holder.host == socket.gethostname() and holder.started
        assert probe(path) == holder
        t0 = time.monotonic()
        with pytest.raises(RunLockedError) as err:
            RunLock(path).acquire()
        assert time.monotonic() - t0 < 5.0  # no waiting for the holder
        msg = str(err.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in msg
        assert f"kill {proc.pid}" in msg and "run.name=" in msg and "\n" not in msg
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            check_free(path)
        assert read_holder(path) == holder  # the refused launch wrote nothing
    finally:
        proc.kill()
        proc.wait()
    with RunLock(path) as lock:  # the holder is gone: free
        assert lock.held and read_holder(path).pid == os.getpid()
    assert probe(path) is None


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path, no_slurm) -> None:
    path = RunDir(tmp_path).lock_path
    proc, _ = _start(path, "hold")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_holder(path).pid == proc.pid  # the stale record is still there
    lock = RunLock(path)
    lock.acquire()
    try:
        assert read_holder(path).pid == os.getpid()
    finally:
        lock.release()


def test_forked_children_do_not_keep_the_lock(tmp_path: Path, no_slurm) -> None:
    path = RunDir(tmp_path).lock_path
    proc, child = _start(path, "fork")
    proc.wait()
    try:
        assert os.path.exists(f"/proc/{child}")  # the forked child still runs
        with RunLock(path, takeover_wait_s=0.0):
            pass
    finally:
        _kill(int(child))


def test_dead_holder_whose_descendant_kept_the_lock_is_taken_over(tmp_path: Path, no_slurm) -> None:
    path = RunDir(tmp_path).lock_path
    proc, child = _start(path, "inherit")
    proc.wait()
    try:
        holder = probe(path)  # still locked, by a process that is not the recorded holder
        assert holder is not None and holder.pid == proc.pid and holder.is_alive() is False
        with RunLock(path) as lock:
            assert lock.held and read_holder(path).pid == os.getpid()
    finally:
        _kill(int(child))


def test_requeued_slurm_job_takes_its_lock_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_slurm
) -> None:
    path = RunDir(tmp_path).lock_path
    proc, _ = _start(path, "hold", SLURM_JOB_ID="4242")
    try:
        monkeypatch.setenv("SLURM_JOB_ID", "999")  # another job: refused at once
        with pytest.raises(RunLockedError, match=r"SLURM job 4242.*scancel 4242"):
            RunLock(path, takeover_wait_s=30).acquire()

        monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the same job, requeued on this node
        t0 = time.monotonic()
        with RunLock(path, takeover_wait_s=1.0):
            assert 1.0 <= time.monotonic() - t0 < 30  # waited for the old attempt first
            assert read_holder(path).slurm_job == "4242"
            assert read_holder(path).pid == os.getpid()
    finally:
        proc.kill()
        proc.wait()


def test_requeue_on_another_node_takes_over_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_slurm
) -> None:
    path = RunDir(tmp_path).lock_path
    proc, _ = _start(path, "hold", SLURM_JOB_ID="77")
    try:
        # the record of an attempt on node n1 (as on a shared file system)
        rec = json.loads(path.read_text())
        path.write_text(json.dumps({**rec, "host": "n1-elsewhere"}))
        assert probe(path) == LockHolder(**{**rec, "host": "n1-elsewhere"})
        monkeypatch.setenv("SLURM_JOB_ID", "77")
        t0 = time.monotonic()
        with RunLock(path, takeover_wait_s=60):
            assert time.monotonic() - t0 < 5.0
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ two real launches
@pytest.mark.integration
@pytest.mark.parametrize(
    ("nproc", "second_nproc"),
    [(2, 1), (1, 2)],  # held by the launcher, refused by rank 0; held by rank 0, refused
)  # by the launcher
def test_second_launch_of_a_running_run_fails_at_once(
    nproc: int, second_nproc: int, tmp_path: Path
) -> None:
    """`brainxl train` twice at once: the second fails naming the first, which finishes
    unharmed; its `latest` never moves backwards."""
    import threading

    from train_fixtures import overrides, write_shards

    repo = Path(__file__).resolve().parent.parent
    shards = write_shards(tmp_path / "shards")
    runs = tmp_path / "runs"
    kw = {"train__steps": 400, "train__ckpt_every": 2, "train__val_every": 0}
    cmd = [sys.executable, "-m", "brainxl.launch.cli", "train", *overrides(shards, runs, **kw)]
    env = {k: v for k, v in _env().items() if not k.startswith(("WANDB", "RANK"))}
    first = subprocess.Popen(
        [*cmd, "--nproc", str(nproc)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    stop = threading.Event()

    def watch_latest() -> None:
        while not stop.is_set():
            for p in runs.glob("default/*/checkpoints/latest"):
                tag = p.read_text().strip()
                if tag and (not seen or seen[-1] != tag):
                    seen.append(tag)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch_latest, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 400
        while len(seen) < 2:  # the first run holds the lock and has saved twice
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the first run never saved a checkpoint"
            time.sleep(0.1)
        (folder,) = [p for p in (runs / "default").iterdir() if p.is_dir()]
        holder = read_holder(RunDir(folder).lock_path)
        assert holder is not None and holder.pid != os.getpid()
        before = {n: (folder / n).read_bytes() for n in ("config.yaml", "data.json")}

        second = subprocess.run(
            [*cmd, "--nproc", str(second_nproc)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert first.poll() is None, "the second launch had to wait for the first"
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("brainxl train: error: run folder")
        assert f"pid {holder.pid} on host {holder.host}" in lines[0]
        assert "run.name=" in lines[0] and "Traceback" not in second.stdout

        assert {n: (folder / n).read_bytes() for n in before} == before
        first.send_signal(signal.SIGUSR2)  # save and stop; the same command would resume
        out, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out[-3000:]
    finally:
        stop.set()
        watcher.join(timeout=10)
        if first.poll() is None:
            first.kill()
            first.wait()
    steps = [int(t.removeprefix("step")) for t in seen]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), seen
    tag = (folder / "checkpoints" / "latest").read_text().strip()
    meta = json.loads((folder / "checkpoints" / tag / "brainxl_meta.json").read_text())
    assert meta["step"] == steps[-1] and meta["step"] < 400
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps))  # one writer: no interleaved lines
    assert probe(RunDir(folder).lock_path) is None  # released when the run stopped
