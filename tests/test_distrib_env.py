"""Rank/world detection from torchrun, the DeepSpeed launcher, SLURM and plain env."""

from __future__ import annotations

import pytest
from brainxl.distrib.env import (
    RANK_VARS,
    DistEnv,
    clear_launcher_env,
    detect_env,
    expand_hostlist,
)


def test_single_process_without_launcher() -> None:
    env = detect_env({})
    assert env == DistEnv() and not env.in_launcher and env.is_main


def test_torchrun_wins_over_slurm() -> None:
    env = detect_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "4",
            "LOCAL_RANK": "1",
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "node7",
            "MASTER_PORT": "1234",
            "TORCHELASTIC_RUN_ID": "x",
            "SLURM_PROCID": "0",
            "SLURM_STEP_ID": "0",
            "SLURM_NTASKS": "1",
        }
    )
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == (
        "torchrun",
        3,
        4,
        1,
        2,
    )
    assert (env.master_addr, env.master_port) == ("node7", 1234)


def test_deepspeed_launcher() -> None:
    env = detect_env(
        {
            "RANK": "1",
            "WORLD_SIZE": "2",
            "LOCAL_RANK": "1",
            "CROSS_RANK": "0",
            "LOCAL_SIZE": "2",
            "MASTER_ADDR": "h",
            "MASTER_PORT": "29501",
        }
    )
    assert (env.source, env.rank, env.local_world_size, env.master_port) == (
        "deepspeed",
        1,
        2,
        29501,
    )


def test_slurm_srun_step() -> None:
    env = detect_env(
        {
            "SLURM_PROCID": "5",
            "SLURM_NTASKS": "8",
            "SLURM_LOCALID": "1",
            "SLURM_STEP_ID": "0",
            "SLURM_JOB_NODELIST": "gpu[01-03,07]",
            "SLURM_NTASKS_PER_NODE": "2(x4)",
            "SLURM_JOB_ID": "12345",
        }
    )
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == (
        "slurm",
        5,
        8,
        1,
        2,
    )
    assert env.master_addr == "gpu01"
    assert env.master_port == 20000 + 12345 % 20000


def test_slurm_batch_script_is_not_a_rank() -> None:
    # sbatch's batch step sets SLURM_PROCID but is not an srun task
    assert detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}).source == "single"


def test_plain_env_from_local_launcher_and_export() -> None:
    env = detect_env(
        {"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "4000"}
    )
    assert (env.source, env.rank, env.world_size, env.local_rank) == ("env", 1, 2, 0)
    out: dict[str, str] = {}
    env.export(out)
    assert out["RANK"] == "1" and out["WORLD_SIZE"] == "2" and out["MASTER_PORT"] == "4000"


def test_clear_launcher_env_leaves_a_single_process() -> None:
    # a sweep trial inside an srun step: its own ranks must not take the step's place
    env = {
        "SLURM_PROCID": "3",
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "4",
        "SLURM_JOB_NODELIST": "n[1-2]",
        "SUBMITIT_FOLDER": "/tmp/x",
        "TORCHELASTIC_RUN_ID": "r",
        "PATH": "/usr/bin",
        "OMP_NUM_THREADS": "1",
    }
    DistEnv(rank=3, world_size=4, source="slurm").export(env)
    assert detect_env(env).in_launcher
    removed = clear_launcher_env(env)
    assert set(RANK_VARS) <= set(removed) and "SLURM_PROCID" in removed
    assert env == {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1"}
    assert detect_env(env) == DistEnv()
    assert clear_launcher_env(env) == []


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node1", ["node1"]),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("a[1-2],b5,c[9]", ["a1", "a2", "b5", "c9"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert expand_hostlist(hostlist) == hosts
