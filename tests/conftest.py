"""Shared fixtures: small simulated BIDS datasets, each built once per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path
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
