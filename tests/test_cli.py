"""The console script dispatches to every subcommand and each has --help."""

import subprocess
import sys

import pytest

from launch.cli import SUBCOMMANDS, build_parser, main


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
        [sys.executable, "-m", "launch", "--help"], capture_output=True, text=True, check=True
    )
    assert "brainxl" in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert build_parser().prog == "brainxl"
