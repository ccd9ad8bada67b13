"""The one owner of stop signals (distrib/signals.py) and of the rank environment's
writers and free ports (distrib/env.py)."""

from __future__ import annotations

import os
import signal
import socket

import pytest
from brainxl.distrib import signals
from brainxl.distrib.env import (
    detect_env,
    free_port,
    local_rank_env,
    single_env,
    slurm_job,
)


@pytest.fixture(autouse=True)
def fresh_handlers():
    old = signal.getsignal(signal.SIGUSR2), signal.getsignal(signal.SIGTERM)
    signals.clear()
    yield
    signal.signal(signal.SIGUSR2, old[0])
    signal.signal(signal.SIGTERM, old[1])
    signals.clear()


def test_launcher_forwards_usr2_and_restores_the_handler() -> None:
    forwarded: list[int] = []
    before = signal.getsignal(signal.SIGUSR2)
    with signals.StopSignals(forward=forwarded.append):
        os.kill(os.getpid(), signal.SIGUSR2)
        assert signals.stop_requested() and signals.stop_reason() == "SIGUSR2"
        assert forwarded == [signal.SIGUSR2]
    assert signal.getsignal(signal.SIGUSR2) == before


def test_job_hands_the_stop_to_the_previous_handler_after_the_run() -> None:
    seen: list[int] = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))  # submitit's
    with signals.StopSignals(watch_term=True) as stop:
        assert not stop.call_previous()  # nothing requested yet
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == []  # recorded only: the trainer saves first
        assert stop.call_previous() and seen == [signal.SIGUSR2]


def test_sigterm_stops_the_run_is_passed_on_and_not_handed_to_submitit() -> None:
    seen: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # submitit bypass
    signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))  # its requeue
    with signals.StopSignals(watch_term=True) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.kill_seen() and seen == [signal.SIGTERM]
        # the trainer saves at its next step (SLURM kills KillWait seconds later)...
        assert signals.stop_requested() and signals.stop_reason() == "SIGTERM"
        # ... and SLURM, not submitit, requeues or cancels the job
        assert not stop.call_previous() and seen == [signal.SIGTERM]


def test_entry_handler_does_not_replace_a_launchers() -> None:
    signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    assert signals.ensure_stop_handler()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert signals.stop_requested()
    mine = lambda signum, frame: None  # noqa: E731
    signal.signal(signal.SIGUSR2, mine)
    assert not signals.ensure_stop_handler()
    assert signal.getsignal(signal.SIGUSR2) is mine


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_local_rank_env_round_trips_through_detect_env() -> None:
    env: dict[str, str] = {}
    local_rank_env(1, 3, 29555).export(env)
    got = detect_env(env)
    assert (got.rank, got.world_size, got.local_rank, got.master_port) == (1, 3, 1, 29555)
    with pytest.raises(ValueError, match="outside"):
        local_rank_env(3, 3, 1)


def test_single_env_takes_master_port_or_a_free_one() -> None:
    assert single_env({"MASTER_PORT": "29777"}).master_port == 29777
    assert 0 < single_env({}).master_port < 65536


def test_slurm_job_names_array_tasks() -> None:
    assert slurm_job({"SLURM_JOB_ID": "12"}) == "12"
    job = {"SLURM_JOB_ID": "15", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "3"}
    assert slurm_job(job) == "12_3"
    assert slurm_job({}) == ""
