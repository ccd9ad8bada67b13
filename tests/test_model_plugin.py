"""A model family defined HERE, trained and evaluated by ``brainxl train`` / ``evaluate``.

The family (a band-power read-out with its own input keyword, data arguments, fold hook,
loss and diagnostics) is plugged in as ``model.name=test_model_plugin:SPEC``; nothing in
``distrib/`` or ``launch/`` knows it. The rank processes import it from ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn
from train_fixtures import overrides, write_shards

from brainxl.models.spec import DataShapes, FoldContext, ModelSpec, translation_batch

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


class BandPowerNet(nn.Module):
    """Log power of each channel in ``n_bins`` time bins -> linear map to the ROIs.

    ``forward(eeg)``: the input keyword is ``eeg`` (declared by the spec, not guessed).
    ``channel_scale`` is fitted from the training subjects by the fold hook.
    """

    def __init__(self, n_chans: int, n_rois: int, n_times: int, n_bins: int = 2) -> None:
        super().__init__()
        if n_times % n_bins:
            raise ValueError(f"n_times {n_times} is not a multiple of n_bins {n_bins}")
        self.n_chans, self.n_rois, self.n_bins = n_chans, n_rois, n_bins
        self.readout = nn.Linear(n_chans * n_bins, n_rois)
        self.register_buffer("channel_scale", torch.ones(n_chans))

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        B, C, T = eeg.shape
        x = eeg * self.channel_scale[:, None]
        power = x.reshape(B, C, self.n_bins, T // self.n_bins).square().mean(-1)
        return self.readout(torch.log1p(power).reshape(B, -1))


def _build(flavor: str, **kw: Any) -> nn.Module:
    scale = {k: v for k, v in FLAVORS[flavor].items() if k != "expected_params"}
    return BandPowerNet(**{**scale, **kw})


def _data_args(shapes: DataShapes) -> dict[str, Any]:
    return {"n_chans": shapes.n_chans, "n_rois": shapes.n_rois, "n_times": shapes.n_times}


def _prepare_fold(model: nn.Module, fold: FoldContext) -> dict[str, Any]:
    """Scale each channel by 1 / its RMS over the training subjects' recordings."""

    def rms() -> list[float]:
        arrays = fold.timeseries(("ephys",), ephys_hz=50.0)["ephys"]
        x = np.concatenate(arrays, axis=1)
        return [float(v) for v in np.sqrt((x**2).mean(axis=1))]

    values = fold.on_main(rms)
    model.channel_scale.copy_(1.0 / torch.tensor(values).clamp_min(1e-6))
    return {"plugin_subjects": list(fold.subjects), "plugin_rms": values}


def _loss(
    model: nn.Module, forward: Any, inputs: dict[str, Any], target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    pred = forward(**inputs)
    loss = (pred.float() - target).abs().mean()  # L1: the family's own objective
    return pred, loss, {"l1": float(loss.detach())}


def _diagnostics(model: nn.Module, inputs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    w = model.readout.weight.detach().abs().reshape(model.n_rois, model.n_chans, -1)
    return {"attention": w.mean(0).numpy()}  # per channel and time bin


FLAVORS = {"tiny": {"n_bins": 2, "expected_params": 0}}

SPEC = ModelSpec(
    name="bandpower-plugin",
    build=_build,
    flavors=FLAVORS,
    example_inputs=lambda model, b: {"eeg": torch.randn(b, model.n_chans, 400)},
    describe_io=lambda f: ("EEG channels", "ROIs"),
    task="eeg2fmri",
    data_args=_data_args,
    batch=translation_batch("eeg2fmri", input_name="eeg"),
    prepare_fold=_prepare_fold,
    loss=_loss,
    diagnostics=_diagnostics,
)


def _run(args: list[str], timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "brainxl.launch.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_a_family_defined_in_a_test_trains_and_evaluates(tmp_path: Path) -> None:
    shards = write_shards(tmp_path / "shards")
    ov = overrides(shards, tmp_path / "runs", train__lr=1e-2, train__keep_best="false")
    ov = [o for o in ov if not o.startswith("model.overrides=")]
    ov += ["model.name=test_model_plugin:SPEC", "model.flavor=tiny", "train.loss.name=model"]
    _run(["train", *ov, "--nproc", "2"])
    (folder,) = (tmp_path / "runs" / "default").iterdir()

    final = json.loads((folder / "final_metrics.json").read_text())
    assert final["step"] == 6 and final["test"]["subject"] == "04"
    # the fold hook ran on the training subjects only, once, shared by both ranks
    assert final["graphs"]["plugin_subjects"] == ["01", "02"]
    weights = torch.load(folder / "final_model.pt")
    want = 1.0 / torch.tensor(final["graphs"]["plugin_rms"])
    torch.testing.assert_close(weights["channel_scale"], want)
    # the family's own loss (L1) is what validation reports
    records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    (graph,) = [r for r in records if r["split"] == "graph"]
    assert graph["plugin_subjects"] == ["01", "02"]
    # shapes, statistics and split were recorded for evaluation
    info = json.loads((folder / "data_info.json").read_text())
    assert info["shapes"]["ch_names"] == ["Fp1", "Fp2", "Cz", "O1"]
    assert info["split"] == {"train": ["01", "02"], "val": ["03"], "test": ["04"]}

    proc = _run(["evaluate", str(folder), "--weights", "final", "--no-baseline"])
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["subjects"] == ["04"] and result["weights"] == "final"
    assert result["per_subject"]["04"] == pytest.approx(final["test"]["mean_r"], abs=1e-6)
    # the spec's diagnostics reached the report
    assert (folder / "report" / "wavelet_attention.png").stat().st_size > 2_000


def test_plugin_spec_errors_are_one_line(tmp_path: Path) -> None:
    from brainxl.models.registry import get_model_spec

    with pytest.raises(ValueError, match="cannot import"):
        get_model_spec("no_such_module_xyz:SPEC")
    with pytest.raises(ValueError, match="not a brainxl.models.spec.ModelSpec"):
        get_model_spec("test_model_plugin:BandPowerNet")
    assert get_model_spec("test_model_plugin:SPEC") is SPEC
