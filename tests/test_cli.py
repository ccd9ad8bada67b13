"""The console script dispatches to every subcommand and each has --help."""

import subprocess
import sys

import pytest
from brainxl.launch.cli import SUBCOMMANDS, build_parser, main


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: brainxl " + name in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "brainxl.launch", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "brainxl" in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert build_parser().prog == "brainxl"


def test_quickstart_refuses_to_reuse_a_different_dataset(sim_bids, tmp_path, capsys):
    """The quickstart reuses a simulated dataset only if it is the one it would simulate."""
    import argparse
    import shutil

    from brainxl.launch import cmd_quickstart
    from brainxl.launch.cmd_quickstart import reuse_mismatch

    assert reuse_mismatch(sim_bids, 3, 2.0, "biosemi64") is None
    assert reuse_mismatch(sim_bids, 12, 2.0, "biosemi64") == "3 subjects, not 12"
    assert reuse_mismatch(sim_bids, 3, 2.0, "biosemi32") == "montage biosemi64, not biosemi32"
    assert "volumes per run" in reuse_mismatch(sim_bids, 3, 8.0, "biosemi64")
    out = tmp_path / "qs"
    shutil.copytree(sim_bids, out / "bids")
    parser = argparse.ArgumentParser()
    cmd_quickstart.add_arguments(parser)
    assert cmd_quickstart.run(parser.parse_args(["--out", str(out)])) == 2
    err = capsys.readouterr().out
    assert "3 subjects, not 12" in err and "choose another --out" in err
    assert not (out / "shards").exists()  # nothing written after the refusal
