"""experiments/finetune_table.py: the pretraining-seed study's layout and arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def ft(load_script):
    return load_script("experiments/finetune_table.py")


def _finished(work: Path, name: str, r: float, val_loss: float | None = None) -> None:
    run = work / "runs" / "finetune" / name
    run.mkdir(parents=True)
    metrics = {"test": {"mean_r": r}, "best_val_loss": val_loss}
    (run / "final_metrics.json").write_text(json.dumps(metrics))


def test_each_seed_gets_its_folder_and_its_seed_in_both_pretraining_stages(ft, tmp_path):
    args = ft.parse(["--work", str(tmp_path), "--seeds", "3,7", "--table-only",
                     "--pretrain-override", "model.overrides.amplitude_embed=true"])  # fmt: skip
    assert args.seeds == [3, 7]
    sub = ft.seed_args(args, 7)
    assert sub.work == tmp_path.resolve() / "seed7"
    assert sub.pretrain_override == [
        "model.overrides.amplitude_embed=true",
        "seed=7",
        "data.seed=7",
    ]
    assert args.pretrain_override == ["model.overrides.amplitude_embed=true"]  # not mutated
    assert ft._stage_dir(sub, "mem") == tmp_path.resolve() / "seed7/runs/pretrain-small/mem"
    debug = ft.parse(["--work", str(tmp_path), "--table-only",
                      "--mem-config", "pretrain/mem-debug"])  # fmt: skip
    assert ft._stage_dir(debug, "mem") == tmp_path.resolve() / "runs/pretrain-debug/mem"


def test_stage_overrides_reach_only_their_stage(ft, tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(ft, "_run", lambda cmd, log: calls.append(cmd))
    args = ft.parse(["--work", str(tmp_path), "--pretrain-shards", str(tmp_path / "pre"),
                     "--shards", str(tmp_path / "shards"),
                     "--pretrain-override", "model.overrides.amplitude_embed=true",
                     "--tokenizer-override", "model.overrides.amplitude_target=log",
                     "--mem-override", "model.overrides.filters=8"])  # fmt: skip
    assert ft.pretrain(args) == ft._stage_dir(args, "mem")
    tokenizer, mem = calls
    assert "pretrain/tokenizer-small" in tokenizer and "pretrain/mem-small" in mem
    assert f"pretrain.tokenizer={ft._stage_dir(args, 'tokenizer')}" in mem
    assert "model.overrides.amplitude_embed=true" in tokenizer
    assert "model.overrides.amplitude_embed=true" in mem
    assert "model.overrides.amplitude_target=log" in tokenizer
    assert "model.overrides.amplitude_target=log" not in mem
    assert "model.overrides.filters=8" in mem
    assert "model.overrides.filters=8" not in tokenizer


def test_the_config_files_decide_unless_a_value_is_given(ft, tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(ft, "_run", lambda cmd, log: calls.append(cmd))
    base = ["--work", str(tmp_path), "--pretrain-shards", str(tmp_path / "pre"),
            "--shards", str(tmp_path / "shards"), "--folds", "01",
            "--variants", "temporal"]  # fmt: skip
    ft.finetune(ft.parse(base), tmp_path / "mem")
    ft.pretrain(ft.parse(base))
    scratch, pretrained, tokenizer, mem = calls
    assert "quickstart-small" in scratch and f"model.pretrained={tmp_path / 'mem'}" in pretrained
    keys = ("train.steps=", "data.window_s=", "data.token_budget=", "pretrain.mask_")
    assert not [a for cmd in calls for a in cmd if a.startswith(keys)]  # the files decide
    calls.clear()
    given = ft.parse([*base, "--steps", "5", "--tokenizer-steps", "6", "--mem-steps", "7",
                      "--window-s", "4", "--token-budget", "512",
                      "--mask-ratio", "0.3", "--mask-unit", "channel"])  # fmt: skip
    ft.finetune(given, tmp_path / "mem")
    ft.pretrain(given)
    scratch, _, tokenizer, mem = calls
    assert "train.steps=5" in scratch
    assert {"train.steps=6", "data.window_s=4", "data.token_budget=512"} <= set(tokenizer)
    assert {"train.steps=7", "data.window_s=4", "pretrain.mask_ratio=0.3"} <= set(mem)
    assert "pretrain.mask_unit=channel" in mem
    assert not [
        a for a in tokenizer if a.startswith(("pretrain.mask_ratio=", "pretrain.mask_unit="))
    ]


def test_seed_table_pairs_every_seed_with_the_one_scratch_column(ft, tmp_path):
    folds = ["01", "02", "03"]
    for fold, r in zip(folds, [0.10, 0.20, 0.30]):
        _finished(tmp_path, f"temporal-scratch-{fold}", r)
    # seed 0 gains 0.05 on every fold, seed 1 loses 0.01 on every fold
    for seed, delta in [(0, 0.05), (1, -0.01)]:
        for fold, r in zip(folds, [0.10, 0.20, 0.30]):
            _finished(tmp_path / f"seed{seed}", f"temporal-pretrained-{fold}", r + delta)
    args = ft.parse(["--work", str(tmp_path), "--seeds", "0,1", "--folds", ",".join(folds),
                     "--variants", "temporal", "--table-only"])  # fmt: skip
    text = ft.seed_table(args)
    assert "| 02 | 0.200 | 0.250 | 0.190 | 0.220 |" in text
    assert "- temporal, seed 0: pretrained - scratch = +0.050 [+0.050, +0.050] (n=3)" in text
    assert "- temporal, seed 1: pretrained - scratch = -0.010 [-0.010, -0.010] (n=3)" in text
    assert "- temporal, mean of seeds: pretrained - scratch = +0.020 [+0.020, +0.020] (n=3)" in text
    # two seeds' means (+0.05, -0.01): mean +0.02, interval 0.02 +- 12.706 * 0.03
    line = next(x for x in text.splitlines() if "over seeds" in x)
    assert line.startswith(
        "- temporal: mean paired difference over seeds = +0.020 [-0.361, +0.401]"
    )


def test_a_missing_run_is_nan_and_left_out_of_the_interval(ft, tmp_path):
    _finished(tmp_path, "temporal-scratch-01", 0.1)
    _finished(tmp_path, "temporal-scratch-02", 0.2)
    _finished(tmp_path / "seed0", "temporal-pretrained-01", 0.3)
    args = ft.parse(["--work", str(tmp_path), "--seeds", "0", "--folds", "01,02",
                     "--variants", "temporal", "--table-only"])  # fmt: skip
    text = ft.seed_table(args)
    assert "| 02 | 0.200 | nan | nan |" in text
    assert "seed 0: pretrained - scratch = +0.200 [nan, nan] (n=1)" in text


def test_scratch_seeds_keep_the_folds_validation_subjects(ft, tmp_path):
    args = ft.parse(["--work", str(tmp_path), "--seeds", "0", "--scratch-seeds", "4",
                     "--table-only", "--override", "data.reader.ephys_norm=none"])  # fmt: skip
    sub = ft.scratch_seed_args(args, 4)
    assert sub.work == tmp_path.resolve() / "scratch-seed4"
    assert sub.override == ["data.reader.ephys_norm=none", "seed=4"]
    assert args.override == ["data.reader.ephys_norm=none"]
    run = tmp_path / "runs" / "finetune" / "temporal-scratch-01"
    with pytest.raises(FileNotFoundError, match="data_info.json"):
        ft.fold_split_overrides(run)
    run.mkdir(parents=True)
    split = {"train": ["02", "03"], "val": ["06", "09"], "test": ["01"]}
    (run / "data_info.json").write_text(json.dumps({"split": split}))
    assert ft.fold_split_overrides(run) == ["data.val_subjects=[06,09]"]


def _two_fold_study(ft, tmp_path: Path):
    """Two folds of finished runs: 2 scratch and 2 pretrained candidates, one run missing."""
    _finished(tmp_path, "temporal-scratch-01", 0.10, val_loss=0.9)
    _finished(tmp_path / "scratch-seed1", "temporal-scratch-01", 0.05, val_loss=0.8)
    _finished(tmp_path / "seed0", "temporal-pretrained-01", 0.30, val_loss=0.7)
    _finished(tmp_path / "seed1", "temporal-pretrained-01", 0.40, val_loss=0.95)
    _finished(tmp_path, "temporal-scratch-02", 0.20, val_loss=0.5)
    _finished(tmp_path / "scratch-seed1", "temporal-scratch-02", 0.25, val_loss=0.6)
    _finished(tmp_path / "seed1", "temporal-pretrained-02", 0.10, val_loss=0.9)
    return ft.parse(["--work", str(tmp_path), "--seeds", "0,1", "--scratch-seeds", "1",
                     "--folds", "01,02", "--variants", "temporal", "--table-only"])  # fmt: skip


def test_selection_takes_each_arms_lowest_validation_loss_not_its_best_test_score(ft, tmp_path):
    # fold 01: scratch seed 1 validates better (0.8 < 0.9) but tests worse; it is still chosen
    # fold 02: the config seed and pretraining seed 1 validate best; seed 0's run is missing
    args = _two_fold_study(ft, tmp_path)
    text = ft.selection_table(args)
    assert "| 01 | seed 1 | 0.050 | seed 0 | 0.300 |" in text
    assert "| 02 | config seed | 0.200 | seed 1 | 0.100 |" in text
    # paired differences +0.25 and -0.10: mean +0.075
    line = next(x for x in text.splitlines() if "by validation loss" in x)
    assert line.startswith(
        "- temporal, best of 2 pretrained against best of 2 scratch by validation loss: "
        "pretrained - scratch = +0.075 ["
    )
    assert ft.select_by_validation([tmp_path / "nowhere"]) is None


def test_candidates_table_lists_every_run_and_compares_the_arms_means(ft, tmp_path):
    args = _two_fold_study(ft, tmp_path)
    text = ft.candidates_table(args)
    assert "| scratch seed 1 | 0.050 (0.800) | 0.250 (0.600) |" in text
    assert "| pretrained seed 0 | 0.300 (0.700) | - | 0.300 [nan, nan] (n=1) |" in text
    # per-fold arm means: scratch 0.075, 0.225; pretrained 0.35, 0.10 (seed 0's missing run
    # left out); differences +0.275 and -0.125: mean +0.075
    assert "| scratch, mean of 2 | 0.075 | 0.225 |" in text
    assert "| pretrained, mean of 2 | 0.350 | 0.100 |" in text
    line = next(x for x in text.splitlines() if "mean of the scratch runs" in x)
    assert line.endswith("pretrained - scratch = +0.075 [-2.466, +2.616] (n=2)")


def test_candidates_table_shows_a_run_without_validation(ft, tmp_path):
    _finished(tmp_path, "temporal-scratch-01", 0.10)  # best_val_loss null: no validation
    args = ft.parse(["--work", str(tmp_path), "--seeds", "0", "--scratch-seeds", "1",
                     "--folds", "01", "--variants", "temporal", "--table-only"])  # fmt: skip
    assert "| scratch config seed | 0.100 (nan) |" in ft.candidates_table(args)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0,x"], "--seeds takes integers"),
        (["--seeds", "0", "--no-pretrain"], "make no sense with --no-pretrain"),
        (["--scratch-seeds", "1"], "add --seeds"),
        (["--seeds", "0", "--scratch-seeds", "a"], "--scratch-seeds takes integers"),
    ],
)
def test_bad_seed_arguments_are_refused(ft, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        ft.parse(["--work", str(tmp_path), "--table-only", *argv])
    assert message in capsys.readouterr().err


def test_folds_all_holds_out_every_subject_of_the_shards(ft, synthetic_shards, tmp_path, capsys):
    from brainxl.shards.manifest import read_manifest

    subjects = sorted(read_manifest(synthetic_shards)["subjects"])
    assert len(subjects) >= 2
    args = ft.parse(
        [
            "--work",
            str(tmp_path),
            "--shards",
            str(synthetic_shards),
            "--folds",
            "all",
            "--table-only",
        ]
    )
    assert args.folds == subjects
    for argv, message in [
        ([], "add --shards"),
        (["--shards", str(tmp_path / "none")], "no shard manifest"),
    ]:
        with pytest.raises(SystemExit):
            ft.parse(["--work", str(tmp_path), "--folds", "all", "--table-only", *argv])
        assert message in capsys.readouterr().err


def test_a_finished_run_of_other_settings_is_not_reused(ft, tmp_path, monkeypatch):
    from brainxl.distrib.config import load_config, run_dir, save_run_config

    calls: list[list[str]] = []

    def fake_train(cmd: list[str], log: Path) -> None:  # writes what `brainxl train` leaves
        calls.append(cmd)
        i = cmd.index("train")
        cfg = load_config(cmd[i + 1], cmd[i + 2 : -2])
        save_run_config(cfg, run_dir(cfg))
        (run_dir(cfg) / "final_metrics.json").write_text(json.dumps({"test": {"mean_r": 0.3}}))

    monkeypatch.setattr(ft, "_run", fake_train)
    argv = ["--work", str(tmp_path), "--shards", str(tmp_path / "shards"), "--folds", "01",
            "--pretrain-shards", str(tmp_path / "pre"),
            "--variants", "full"]  # fmt: skip
    ft.finetune(ft.parse(argv), None)
    ft.finetune(ft.parse(argv), None)  # the same settings: reused
    assert len(calls) == 1
    with pytest.raises(SystemExit) as err:
        ft.finetune(ft.parse([*argv, "--override", "train.lr=5e-4"]), None)
    assert "full-scratch-01 was made with other settings (train.lr: 0.001 -> 0.0005)" in str(
        err.value
    )
    assert "its own --work" in str(err.value) and len(calls) == 1


def test_per_roi_table_pairs_the_arms_roi_by_roi_on_the_folds_both_finished(ft, tmp_path):
    import numpy as np
    from brainxl.distrib.rundir import RunDir

    from brainxl.metrics import evaluate_subject, to_json

    rng = np.random.default_rng(0)
    true = rng.standard_normal((200, 2))

    def finished_with_roi_r(init: str, fold: str, noise: tuple[float, float]) -> None:
        run = tmp_path / "runs" / "finetune" / f"full-{init}-{fold}"
        pred = true + rng.standard_normal(true.shape) * np.asarray(noise)
        res = evaluate_subject(fold, pred, true, ["A", "B"])
        RunDir(run).test_dir.mkdir(parents=True)
        to_json(res, RunDir.subject_metrics(RunDir(run).test_dir, fold))

    expect = {"scratch": [], "pretrained": []}
    for fold in ("01", "02"):
        for init, noise in (("scratch", (1.0, 3.0)), ("pretrained", (1.0, 0.5))):
            finished_with_roi_r(init, fold, noise)
            metrics = tmp_path / "runs" / "finetune" / f"full-{init}-{fold}" / "test"
            expect[init].append(json.loads((metrics / f"metrics-{fold}.json").read_text())["r"])
    finished_with_roi_r("scratch", "03", (0.1, 0.1))  # no pretrained run: left out
    args = ft.parse(["--work", str(tmp_path), "--folds", "01,02,03", "--variants", "full",
                     "--table-only", "--per-roi"])  # fmt: skip
    lines = ft.roi_table(args).splitlines()
    assert lines[0] == "full, per ROI over 2 folds:"
    s, p = (np.mean(expect[k], axis=0) for k in ("scratch", "pretrained"))
    row_b = next(line for line in lines if line.startswith("| B |"))
    assert row_b.startswith(f"| B | {s[1]:.3f} | {p[1]:.3f} | {p[1] - s[1]:+.3f} [")
    assert p[1] - s[1] > 0.3 and row_b.endswith("(n=2) |")  # B is far better predicted


def test_the_reference_recipe_gets_its_own_folder_config_and_overrides(ft, tmp_path):
    args = ft.parse(["--work", str(tmp_path), "--table-only", "--steps", "600",
                     "--override", "data.reader.ephys_norm=none",
                     "--reference-override", "data.reader.include_subjects=[01,02]"])  # fmt: skip
    ref = ft.reference_args(args)
    assert ref.work == tmp_path.resolve() / "reference" and ref.config == "quickstart"
    assert ref.override == ["data.reader.include_subjects=[01,02]"] and ref.steps is None
    assert args.override == ["data.reader.ephys_norm=none"] and args.steps == 600
    off = ft.parse(["--work", str(tmp_path), "--table-only", "--reference", "none"])
    assert off.reference is None and ft.reference_args(off) is None
    assert ft.reference_table(off) == ""
    # the study's scratch arm already is the reference recipe: no second copy of it
    same = ft.parse(["--work", str(tmp_path), "--table-only", "--config", "quickstart"])
    assert same.reference is None


def test_the_reference_runs_after_the_study_from_scratch_in_its_folder(ft, tmp_path, monkeypatch):
    calls: list[list[str]] = []

    def fake_train(cmd: list[str], log: Path) -> None:
        calls.append(cmd)
        root = Path(next(c for c in cmd if c.startswith("run.root=")).split("=", 1)[1])
        name = next(c for c in cmd if c.startswith("run.name=")).split("=", 1)[1]
        (root / "finetune" / name).mkdir(parents=True)  # unfinished: the table reads nan

    monkeypatch.setattr(ft, "_run", fake_train)
    ft.main(["--work", str(tmp_path), "--shards", str(tmp_path / "shards"), "--folds", "01,02",
             "--variants", "full", "--no-pretrain",
             "--override", "data.reader.ephys_norm=none"])  # fmt: skip
    configs = [c[c.index("train") + 1] for c in calls]
    assert configs == ["quickstart-small"] * 2 + ["quickstart"] * 2
    ref_calls = calls[2:]
    assert all(f"run.root={tmp_path.resolve() / 'reference' / 'runs'}" in c for c in ref_calls)
    assert all("data.reader.ephys_norm=none" not in c for c in ref_calls)
    assert all(not any(x.startswith("model.pretrained=") for x in c) for c in ref_calls)


def test_reference_table_pairs_every_arm_with_the_reference_per_fold(ft, tmp_path):
    for fold, r in (("01", 0.50), ("02", 0.40), ("03", 0.45)):
        _finished(tmp_path / "reference", f"full-scratch-{fold}", r)
        _finished(tmp_path, f"full-scratch-{fold}", r - 0.06)
        _finished(tmp_path / "seed0", f"full-pretrained-{fold}", r - 0.04)
    _finished(tmp_path / "seed1", "full-pretrained-01", 0.52)  # seed 1: fold 01 only
    args = ft.parse(["--work", str(tmp_path), "--seeds", "0,1", "--folds", "01,02,03",
                     "--variants", "full", "--table-only"])  # fmt: skip
    text = ft.reference_table(args)
    assert "| held-out subject | reference: full scratch (quickstart) |" in text
    assert "| 01 | 0.500 | 0.440 | 0.460 | 0.520 | 0.490 |" in text
    assert "| 02 | 0.400 | 0.340 | 0.360 | nan | 0.360 |" in text
    assert "- full scratch (quickstart-small) - reference = -0.060 [-0.060, -0.060] (n=3)" in text
    assert "- pretrained seed 0 - reference = -0.040 [-0.040, -0.040] (n=3)" in text
    assert "- pretrained seed 1 - reference = +0.020 [nan, nan] (n=1)" in text
    # without --seeds the pretrained runs sit in WORK itself
    for fold in ("01", "02", "03"):
        _finished(tmp_path, f"full-pretrained-{fold}", 0.47)
    plain = ft.parse(["--work", str(tmp_path), "--folds", "01,02,03", "--variants", "full",
                      "--table-only"])  # fmt: skip
    assert "- pretrained - reference = +0.020 [-0.104, +0.144] (n=3)" in ft.reference_table(plain)


def test_a_table_without_reference_runs_says_how_to_get_them(ft, tmp_path, capsys):
    _finished(tmp_path, "full-scratch-01", 0.4)
    ft.main(["--work", str(tmp_path), "--folds", "01", "--variants", "full", "--table-only"])
    out = capsys.readouterr().out
    assert f"no reference run has finished in {tmp_path.resolve() / 'reference'}" in out
    assert "--reference none" in out and "reference: full scratch" not in out
    _finished(tmp_path / "reference", "full-scratch-01", 0.5)
    ft.main(["--work", str(tmp_path), "--folds", "01", "--variants", "full", "--table-only"])
    assert "| 01 | 0.500 | 0.400 | nan |" in capsys.readouterr().out
