"""The run schema: YAML + overrides, errors naming key and fix, run identity, saved files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from brainxl.distrib.config import (
    CONFIG_DIR,
    ConfigError,
    RunConfig,
    load_config,
    run_dir,
    run_id,
    save_run_config,
)

from brainxl.models.registry import list_models

SHIPPED = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))


def test_defaults_and_overrides_are_typed() -> None:
    cfg = load_config(None, ["train.lr=1e-3", "train.zero_stage=3", "model.overrides.depth=4"])
    assert isinstance(cfg, RunConfig)
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.zero_stage == 3
    assert cfg.model.overrides == {"depth": 4}


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lrr=1", "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
        ("model.flavour=base", "did you mean 'model.flavor'"),
        ("data.reader.window=4", "did you mean 'data.reader.window_s'"),
        ("train.lr=fast", "wrong type for config key 'train.lr'"),
        ("train.zero_stage=two", "wrong type for config key 'train.zero_stage'"),
        ("train.precision=bf61", "did you mean 'bf16'"),
        ("train.loss.name=mae", "allowed: mse, pearson, cosine, samba"),
        ("train.zero_stage=4", "train.zero_stage must be 0, 1, 2 or 3"),
        ("train.lr", "must look like key=value"),
    ],
)
def test_bad_overrides_name_key_and_fix(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"'train.lrr' \(did you mean 'train.lr'\?\) in .*bad"):
        load_config(bad)
    bad.write_text("train:\n  steps: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)


def test_base_include_and_numeric_subject_labels(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text("train:\n  lr: 0.5\n  steps: 7\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  steps: 9\n")
    cfg = load_config(tmp_path / "child.yaml", ["data.test_subject=04", "data.val_subjects=[03]"])
    assert (cfg.train.lr, cfg.train.steps) == (0.5, 9)
    assert cfg.data.test_subject == "04" and cfg.data.val_subjects == ["03"]
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_name_registered_models(name: str) -> None:
    cfg = load_config(name)
    spec = list_models()[cfg.model.name]
    assert cfg.model.flavor in spec.flavors
    assert spec.task != "pretrain"


def test_shipped_configs_cover_models_flavors_and_quickstart() -> None:
    for stem in (
        "neurobolt-debug",
        "neurobolt-base",
        "neurobolt-large",
        "neurobolt-huge",
        "samba-eeg2fmri-debug",
        "samba-eeg2fmri-base",
        "samba-fmri2eeg-debug",
        "samba-fmri2eeg-base",
        "quickstart",
    ):
        assert f"{stem}.yaml" in SHIPPED
    with pytest.raises(ConfigError, match="not found; give a path or one of"):
        load_config("neurobolt-tiny")


def test_quickstart_filters_is_the_measured_recipe() -> None:
    # the README's 12-fold figures are of quickstart with these two overrides
    shipped = load_config("quickstart-filters")
    measured = load_config(
        "quickstart",
        [
            "model.overrides.spatial_filters=32",
            "data.reader.ephys_norm=subject",
            "experiment=quickstart-filters",
        ],
    )
    assert shipped == measured
    assert shipped != load_config("quickstart", ["experiment=quickstart-filters"])


def test_run_id_depends_on_semantic_keys_only() -> None:
    a = load_config("neurobolt-debug")
    same = load_config(
        "neurobolt-debug",
        [
            "logging.wandb=disabled",
            "run.root=/elsewhere",
            "train.log_every=1",
            "data.num_workers=1",
        ],
    )
    other = load_config("neurobolt-debug", ["train.lr=1e-2"])
    fold = load_config("neurobolt-debug", ["data.test_subject=02"])
    assert run_id(a) == run_id(same)
    assert len({run_id(a), run_id(other), run_id(fold)}) == 3
    assert run_dir(fold).name.startswith("test-02-")
    assert run_dir(a).parent.name == a.experiment


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config("samba-eeg2fmri-debug", ["data.test_subject=07", "seed=3"])
    save_run_config(cfg, tmp_path)
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg and run_id(again) == run_id(cfg)
    version = json.loads((tmp_path / "version.json").read_text())
    assert version["brainxl"] != "" and version["run_id"] == run_id(cfg)
    assert "torch" in version and "deepspeed" in version


def test_zero_buffers_scale_with_the_model():
    from brainxl.distrib.engine import MAX_BUCKET, MAX_LIVE, ds_config, zero_buffers

    small = zero_buffers(50_000_000, 3)
    assert small["reduce_bucket_size"] == small["stage3_prefetch_bucket_size"] == 5_000_000
    assert small["stage3_max_live_parameters"] == 12_500_000
    big = zero_buffers(20_000_000_000, 3)
    assert big["reduce_bucket_size"] == MAX_BUCKET and big["stage3_max_live_parameters"] == MAX_LIVE
    floor = 1_000_000
    assert zero_buffers(10, 2) == {"reduce_bucket_size": floor, "allgather_bucket_size": floor}
    cfg = load_config(None, ["train.zero_stage=3"])
    zero = ds_config(cfg.train, 2, n_params=50_000_000)["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_max_reuse_distance"] == 12_500_000
    assert "reduce_bucket_size" not in ds_config(cfg.train, 2)["zero_optimization"]
    cfg0 = load_config(None, ["train.zero_stage=0"])
    assert ds_config(cfg0.train, 2, n_params=50_000_000)["zero_optimization"] == {"stage": 0}
