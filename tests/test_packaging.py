"""The distribution installs one import package, ``brainxl``, with its configs as data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (whl,) = out.glob("brainxl-*.whl")
    with zipfile.ZipFile(whl) as z:
        return z.namelist()


def test_wheel_has_one_top_level_package(wheel_names: list[str]) -> None:
    tops = {n.split("/")[0] for n in wheel_names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"brainxl"}


def test_wheel_ships_configs_runtime_and_vocabulary(wheel_names: list[str]) -> None:
    names = set(wheel_names)
    for path in (
        "brainxl/configs/quickstart.yaml",
        "brainxl/configs/neurobolt-debug.yaml",
        "brainxl/configs/base/neurobolt.yaml",
        "brainxl/configs/cluster/local.yaml",
        "brainxl/channel_vocab.txt",
        "brainxl/distrib/entry.py",
        "brainxl/launch/cli.py",
        "brainxl/shards/reader.py",
        "brainxl/shards/ingest/bids.py",
    ):
        assert path in names, path
    shipped = {p.name for p in (REPO / "configs").rglob("*.yaml")}
    packaged = {Path(n).name for n in names if n.startswith("brainxl/configs/")}
    assert shipped <= packaged


def test_import_brainxl_is_light() -> None:
    code = (
        "import sys, brainxl; "
        "heavy = [m for m in ('torch', 'deepspeed', 'mne', 'ray') if m in sys.modules]; "
        "print(heavy); "
        "assert all(callable(getattr(brainxl, f)) for f in "
        "('simulate', 'shard', 'train', 'evaluate', 'predict', 'sweep'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == "[]"


def test_config_lookup_works_outside_the_checkout() -> None:
    code = "import brainxl; print(brainxl.load_config('quickstart').model.name)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == "neurobolt"
