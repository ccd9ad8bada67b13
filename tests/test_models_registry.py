"""Every registered model: forward+backward at debug size, parameter counts, the CLI table.

Cases are generated from the registry, so a newly registered model is tested (and fails
here if it lacks a debug flavor or example inputs) without editing this file.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from brainxl.models.registry import count_parameters, list_models

REGISTRY = list_models()
ALL_FLAVORS = [(name, flavor) for name, spec in REGISTRY.items() for flavor in spec.flavors]


def scalar_loss(out) -> torch.Tensor:
    """The model's own loss when it returns one, else the mean square of its output."""
    if isinstance(out, dict):
        if "loss" in out:
            return out["loss"]
        return sum(v.float().pow(2).mean() for v in out.values() if v.is_floating_point())
    if isinstance(out, (tuple, list)):
        return sum(scalar_loss(o) for o in out)
    return out.float().pow(2).mean()


def test_builtin_models_are_registered():
    assert {"labram", "labram-tokenizer", "neurobolt"} <= set(REGISTRY)
    assert REGISTRY["neurobolt"].task == "eeg2fmri"
    assert REGISTRY["labram"].task == "pretrain"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_debug_forward_backward(name: str):
    spec = REGISTRY[name]
    assert "debug" in spec.flavors, f"model {name!r} has no 'debug' flavor for CPU tests"
    torch.manual_seed(0)
    model = spec.build("debug")
    model.train()
    inputs = spec.example_inputs(model, 2)
    assert isinstance(inputs, dict) and inputs, f"model {name!r} gives no example inputs"
    loss = scalar_loss(model(**inputs))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params, f"model {name!r} has no trainable parameters"
    skip = set(spec.extra.get("params_without_grad", ()))
    no_grad = [n for n, p in params if p.grad is None and n not in skip]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad[:10]}"
    bad = [n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad[:10]}"
    assert any(float(p.grad.abs().sum()) > 0 for _, p in params if p.grad is not None)


@pytest.mark.parametrize(("name", "flavor"), ALL_FLAVORS)
def test_parameter_count_matches_table(name: str, flavor: str):
    spec = REGISTRY[name]
    expected = spec.flavors[flavor].get("expected_params")
    assert isinstance(expected, int) and expected > 0, f"{name}/{flavor}: no expected_params"
    with torch.device("meta"):
        model = spec.build(flavor)
    actual = count_parameters(model)
    assert abs(actual - expected) <= 0.02 * expected, f"{name}/{flavor}: {actual} vs {expected}"
    inp, out = spec.describe_io(flavor)
    assert isinstance(inp, str) and inp and isinstance(out, str) and out


def test_flavor_sizes_follow_the_labram_table():
    """Encoder sizes as LaBraM's (5.8M / 46M / 369M) plus an xl above 0.9B."""
    from brainxl.models.labram import ENCODER_FLAVORS, build_encoder

    want = {"base": 5.82e6, "large": 46.3e6, "huge": 369.2e6}
    with torch.device("meta"):
        sizes = {f: count_parameters(build_encoder(f)) for f in ENCODER_FLAVORS}
    for f, n in want.items():
        # our spatial embedding has 768 rows instead of LaBraM's 129: +0.13M..+0.5M
        assert abs(sizes[f] - n) / n < 0.025, (f, sizes[f])
    assert sizes["xl"] > 0.9e9 > sizes["huge"]
    assert REGISTRY["labram"].flavors["xl"].get("zero3_only") is True


def test_cli_models_table_and_json(capsys):
    from brainxl.launch.cli import main

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["name"], r["flavor"]) for r in rows} == set(ALL_FLAVORS)
    nb = next(r for r in rows if (r["name"], r["flavor"]) == ("neurobolt", "base"))
    assert nb["params_str"] == "8.2M" and nb["output"] == "64 ROIs"
    assert nb["input"] == "26 ch x 16 s @ 200 Hz"
    assert main(["models", "--model", "labram"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["MODEL", "FLAVOR", "PARAMS"]
    assert "ZeRO-3 only" in text and "neurobolt" not in text
    assert main(["models", "--model", "nosuchmodel"]) == 2
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["labram", "labram-tokenizer", "neurobolt"])
def test_small_is_debug_with_the_base_patch_stem(name: str):
    """The README's pretraining results ran ``debug`` with ``filters=8``; ``small`` must be
    that model, tensor for tensor, so they hold for it."""
    spec = REGISTRY[name]
    assert spec.flavors["small"]["filters"] == spec.flavors["base"]["filters"] == 8
    torch.manual_seed(0)
    small = spec.build("small").state_dict()
    torch.manual_seed(0)
    debug8 = spec.build("debug", filters=8).state_dict()
    assert small.keys() == debug8.keys()
    for k, v in small.items():
        assert torch.equal(v, debug8[k]), k
