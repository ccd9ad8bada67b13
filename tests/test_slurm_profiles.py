"""Cluster profiles and generated sbatch scripts (no cluster needed).

Golden files: ``tests/golden/<profile>.sbatch`` hold the dry-run script of each shipped
profile (and of the quoting test profile) with run-specific paths normalised;
``UPDATE_GOLDEN=1 pytest tests/test_slurm_profiles.py`` rewrites them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from brainxl.launch import cli, slurm

GOLDEN = Path(__file__).parent / "golden"
PROFILES = {
    "local": "local",
    "example-gpu": "example-gpu",
    "quoting": str(GOLDEN / "quoting.yaml"),
}


def _dry_run(tmp_path: Path, profile: str, extra: list[str], capsys) -> str:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("experiment: golden\n")
    rc = cli.main(
        ["submit", str(cfg), f"run.root={tmp_path / 'runs'}", "--cluster", profile, "--dry-run"]
        + extra
    )
    assert rc == 0
    return capsys.readouterr().out


def _normalise(text: str, tmp_path: Path) -> str:
    text = text.replace(str(tmp_path.resolve()), "<TMP>").replace(str(tmp_path), "<TMP>")
    text = text.replace(shlex.quote(sys.executable), "<PYTHON>")
    return re.sub(r"-[0-9a-f]{12}\b", "-<RUNID>", text)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"sbatch script of {name} changed; see {path}"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_golden_sbatch(name: str, tmp_path: Path, capsys) -> None:
    out = _dry_run(tmp_path, PROFILES[name], [], capsys)
    _check_golden(name, _normalise(out, tmp_path))


def test_golden_loso_array(tmp_path: Path, capsys) -> None:
    out = _dry_run(
        tmp_path, "local", ["--loso", "--subjects", "01", "02", "03", "--max-parallel", "2"], capsys
    )
    assert "#SBATCH --array=0-2%2" in out
    assert out.count("# fold 0") == 3
    _check_golden("local-loso", _normalise(out, tmp_path))


def _script_only(out: str) -> str:
    return out.split("\n# run folder:")[0]


def test_quoting_profile_cannot_inject(tmp_path: Path, capsys) -> None:
    script = _script_only(_dry_run(tmp_path, PROFILES["quoting"], [], capsys))
    prof = slurm.load_profile(PROFILES["quoting"])
    # every #SBATCH value round-trips through the shell-style parsing sbatch applies
    flags = dict(
        line[len("#SBATCH --") :].split("=", 1)
        for line in script.splitlines()
        if line.startswith("#SBATCH --") and "=" in line
    )
    assert shlex.split(flags["account"]) == [prof.account]
    assert shlex.split(flags["constraint"]) == [prof.constraint]
    assert shlex.split(flags["comment"]) == [prof.additional_parameters["comment"]]
    assert "#SBATCH --requeue" in script.splitlines()
    # the script is valid bash, and running its setup part executes nothing injected
    marker = Path("/tmp/brainxl-injected")
    marker.unlink(missing_ok=True)
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)
    setup = script.split("# setup\n")[1].split("# command")[0]
    res = subprocess.run(
        ["bash", "-c", setup + '\nprintf "%s" "$BRAINXL_NOTE"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.endswith(prof.env["BRAINXL_NOTE"])
    assert "setup with spaces and 'quotes'" in res.stdout
    assert not marker.exists()


def test_profile_fields_and_world_size() -> None:
    local = slurm.load_profile("local")
    assert (local.nodes, local.ntasks_per_node, local.world_size) == (2, 1, 2)
    gpu = slurm.load_profile("example-gpu")
    assert gpu.ntasks_per_node == gpu.gpus_per_node == 8
    assert gpu.world_size == 32
    params = slurm.executor_parameters(gpu, "brainxl-x")
    assert params["ntasks_per_node"] == 8 and params["gpus_per_node"] == 8
    assert params["mem"] == f"{480 * 1024}M"
    assert "module load cuda/12.4 nccl/2.21" in params["setup"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "prof.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("partiton: gpu\n", r"unknown cluster profile key 'partiton' \(did you mean 'partition'"),
        ('partition: "gpu\\nrm -rf ~"\n', "newline or control character"),
        ("slurm_setup:\n  - echo 'unbalanced\n", "balance its quotes"),
        ("slurm_setup: module load cuda\n", "slurm_setup must be a list"),
        ("additional_parameters:\n  output: /tmp/x\n", "may not set 'output'"),
        ("additional_parameters:\n  'x; rm -rf ~': 1\n", "not an sbatch option name"),
        ('additional_parameters:\n  comment: "a\\nb"\n', "newline"),
        ("env:\n  'BAD NAME': 1\n", "not a valid environment variable name"),
        ("nodes: 0\n", "nodes must be an integer >= 1"),
        ("nodes: two\n", "nodes must be an integer"),
        ("mem_gb: -1\n", "mem_gb must be a positive number"),
        ("time_min: 1\nsignal_delay_s: 90\n", "signal_delay_s"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_bad_profiles_are_rejected(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(slurm.ProfileError, match=match) as err:
        slurm.load_profile(path)
    assert str(path) in str(err.value)


def test_missing_profile_lists_shipped(tmp_path: Path) -> None:
    with pytest.raises(slurm.ProfileError, match="example-gpu, local"):
        slurm.load_profile("no-such-profile")


def test_loso_configs_one_per_subject() -> None:
    from brainxl.distrib.config import load_config, run_dir

    cfg = load_config(None, ["data.val_subjects=[sub-02]"])
    folds = slurm.loso_configs(cfg, ["sub-01", "sub-02"])
    assert [c.data.test_subject for c in folds] == ["sub-01", "sub-02"]
    assert folds[1].data.val_subjects == []
    assert cfg.data.test_subject == ""  # the input is not modified
    assert len({run_dir(c) for c in folds}) == 2
    named = load_config(None, ["run.name=study"])
    folds = slurm.loso_configs(named, ["sub-01", "sub-02"])
    assert [run_dir(c).name for c in folds] == ["study-test-sub-01", "study-test-sub-02"]
    assert named.run.name == "study"
    with pytest.raises(ValueError, match="at least one subject"):
        slurm.loso_configs(cfg, [])
