"""Shared fixtures: small simulated BIDS datasets, each built once per test session."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# DeepSpeed JIT-builds its CPU shared-memory op into ~/.cache/torch_extensions by default;
# a build killed there leaves a lock that makes every later DeepSpeed start on the machine
# wait forever. The tests (and the ranks they start) build into this interpreter's prefix.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))

#: Arguments of ``simulate_dataset`` behind each fixture (tests read them back).
SIM_BIDS_ARGS: dict[str, Any] = dict(n_subjects=3, minutes=2.0, seed=7)
SIM_BIDS_EDF_LEGACY_ARGS: dict[str, Any] = dict(
    n_subjects=2, minutes=1.5, seed=11, montage="easycap-M1", fmt="EDF", channel_style="legacy"
)


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import a script of the repository (``experiments/x.py``, ``benchmarks/y.py``)."""

    def load(relpath: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / relpath
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def sim_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BIDS root of a simulated dataset: 3 subjects x 2 min, biosemi64, BrainVision."""
    from brainxl.simulator import simulate_dataset

    root = tmp_path_factory.mktemp("sim_bids") / "bids"
    simulate_dataset(root, **SIM_BIDS_ARGS)
    return root


@pytest.fixture(scope="session")
def sim_bids_edf_legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BIDS root: 2 subjects x 1.5 min, easycap-M1 (74 ch), EDF, legacy names (EEG T3-REF)."""
    from brainxl.simulator import simulate_dataset

    root = tmp_path_factory.mktemp("sim_bids_edf_legacy") / "bids"
    simulate_dataset(root, **SIM_BIDS_EDF_LEGACY_ARGS)
    return root


@pytest.fixture(scope="module")
def slurm_cluster():
    """``SLURM_CONF`` of the local 2-node test cluster (``slurm/start-cluster.sh``), set for
    the module's tests and restored after.

    Without the cluster the tests skip; ``slurm/run-tests.sh`` (what CI runs) sets
    ``BRAINXL_REQUIRE_SLURM=1`` so that a cluster that did not come up fails instead.
    """
    import re
    import shutil
    import subprocess

    def absent(why: str) -> None:
        if os.environ.get("BRAINXL_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM test cluster required (BRAINXL_REQUIRE_SLURM=1): {why}")
        pytest.skip(why)

    repo = Path(__file__).resolve().parent.parent
    conf = os.environ.get("SLURM_CONF") or str(repo / ".slurm-cluster" / "etc" / "slurm.conf")
    if not Path(conf).is_file() or not shutil.which("sinfo"):
        absent("no SLURM test cluster: run slurm/start-cluster.sh and export SLURM_CONF")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=30
    )
    up = {ln.split()[0] for ln in out.stdout.splitlines() if re.search(r" (idle|mix|alloc)", ln)}
    if out.returncode != 0 or not {"n1", "n2"} <= up:
        absent(f"SLURM test cluster not up (sinfo: {out.stdout or out.stderr!r})")
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of ``shard_fixtures.write_synthetic`` (default arguments), written once.

    Read-only: tests that alter files take :func:`synthetic_shards_copy`.
    """
    from shard_fixtures import write_synthetic

    out = tmp_path_factory.mktemp("synthetic_shards")
    write_synthetic(out)
    return out


@pytest.fixture
def synthetic_shards_copy(synthetic_shards: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`synthetic_shards` that the test may alter."""
    import shutil

    return Path(shutil.copytree(synthetic_shards, tmp_path / "shards"))
