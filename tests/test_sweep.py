"""Unit tests of the sweep's pieces: search files, nested folds, shard views, the table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from brainxl.launch.sweep_folds import inner_folds, outer_subjects, write_view
from brainxl.launch.sweep_report import read_trials, trial_table
from brainxl.launch.sweep_space import SWEEP_DIR, SearchError, load_search
from brainxl.launch.sweep_trial import fold_score, objective_of, param_overrides
from train_fixtures import write_shards


def _search(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "search.yaml"
    p.write_text(text)
    return p


def test_shipped_search_files_load_and_build_a_ray_space() -> None:
    names = sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))
    assert "neurobolt-debug" in names and "samba-eeg2fmri-debug" in names
    for name in names:
        spec = load_search(name)
        space = spec.param_space()
        assert set(space) == set(spec.space)
    assert load_search("samba-eeg2fmri-debug").searcher == "optuna"


def test_search_file_distributions_and_defaults(tmp_path: Path) -> None:
    spec = load_search(
        _search(
            tmp_path,
            "space:\n"
            "  train.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
            "  train.batch_size: {grid: [4, 8]}\n"
            "  train.weight_decay: {uniform: [0.0, 0.1]}\n"
            "  model.overrides.readout_rank: {randint: [2, 5]}\n"
            "  train.schedule: {choice: [cosine, constant]}\n"
            "  train.eps: {choice: [1e-8, 1e-6]}\n"
            "resources: {ranks: 2, cpus: 1.5}\n",
        )
    )
    assert spec.searcher == "random" and spec.scheduler == "none" and spec.mode == "max"
    assert spec.resources.total_cpus == 3.0 and spec.resources.total_gpus == 0.0
    space = spec.param_space()
    assert space["train.batch_size"] == {"grid_search": [4, 8]}
    assert 1e-4 <= space["train.lr"].sample() <= 1e-2
    assert space["model.overrides.readout_rank"].sample() in (2, 3, 4)
    assert space["train.schedule"].sample() in ("cosine", "constant")
    assert spec.space["train.eps"] == {"choice": [1e-8, 1e-6]}  # YAML 1.1 reads strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("space: {train.lr: {choice: [0.1]}}\nsearchr: random\n", "searchr: unknown key"),
        ("space: {train.lr: {logunifrom: [1, 2]}}\n", "did you mean 'loguniform'"),
        ("space: {train.lrr: {choice: [0.1]}}\n", "space.train.lrr"),
        ("space: {train.lr: {uniform: [2.0, 1.0]}}\n", "low < high"),
        ("space: {train.lr: {choice: [0.1]}}\nscheduler: hyperband\n", "scheduler"),
        ("space: {train.lr: {grid: [0.1, 0.2]}}\nsearcher: optuna\n", "grid cannot be used"),
        ("space: {train.lr: {choice: [0.1]}}\nresources: {ranks: 0}\n", "ranks"),
        ("space: {train.steps: {choice: [ten]}}\n", "space.train.steps"),
        ("space: {}\n", "space"),
    ],
)
def test_search_file_mistakes_are_one_line_errors_naming_file_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = _search(tmp_path, text)
    with pytest.raises(SearchError) as err:
        load_search(path)
    msg = str(err.value)
    assert expected in msg and str(path) in msg and "\n" not in msg


def test_missing_search_file_lists_the_shipped_ones() -> None:
    with pytest.raises(SearchError, match="neurobolt-debug"):
        load_search("no-such-search")


def test_inner_folds_are_deterministic_from_subject_ids() -> None:
    subs = ["04", "sub-01", "03", "02", "05"]
    assert inner_folds(subs, 0) == [("01",), ("02",), ("03",), ("04",), ("05",)]
    assert inner_folds(subs, 2) == [("01", "03", "05"), ("02", "04")]
    assert inner_folds(list(reversed(subs)), 2) == inner_folds(subs, 2)
    assert inner_folds(subs, 9) == inner_folds(subs, 0)
    with pytest.raises(ValueError, match="at least 3"):
        inner_folds(["01", "02"], 0)


def test_outer_subjects_accept_either_spelling_and_reject_unknown() -> None:
    subs = ["01", "02", "10"]
    assert outer_subjects(subs) == subs
    assert outer_subjects(subs, ["sub-02", "1"]) == ["02", "01"]
    with pytest.raises(ValueError, match="'07' is not in the shards"):
        outer_subjects(subs, ["07"])


def test_a_named_run_is_refused_before_every_trial_shares_its_folder() -> None:
    from brainxl.launch.sweep import plan

    with pytest.raises(ValueError, match="run.name=mine: a sweep names each trial's runs"):
        plan("neurobolt-debug", "neurobolt-debug", ["run.name=mine"])


def test_view_holds_only_the_training_subjects(tmp_path: Path) -> None:
    from brainxl.shards.manifest import read_manifest

    shards = write_shards(tmp_path / "shards", subjects=("01", "02", "03"), n_trs=16)
    view = write_view(shards, ["01", "03"], tmp_path / "view")
    m = read_manifest(view)
    assert sorted(m["subjects"]) == ["01", "03"]
    assert m["totals"]["n_subjects"] == 2
    assert sorted(p.name for p in view.glob("sub-*")) == ["sub-01", "sub-03"]
    for sub in m["subjects"].values():
        for entry in sub["shards"]:
            assert (view / entry["path"]).is_file()
    before = (view / "manifest.json").stat().st_mtime_ns
    write_view(shards, ["03", "01"], tmp_path / "view")  # same view: untouched
    assert (view / "manifest.json").stat().st_mtime_ns == before


def test_sweep_subjects_follow_the_readers_subject_lists(tmp_path: Path) -> None:
    from brainxl.distrib.data import fold_subjects
    from brainxl.launch.sweep import plan, trial_context
    from brainxl.launch.sweep_trial import fold_config
    from train_fixtures import overrides

    shards = write_shards(tmp_path / "shards", subjects=("01", "02", "03", "04", "05"), n_trs=16)
    ov = [o for o in overrides(shards, tmp_path / "runs") if not o.startswith("data.")]
    search = _search(tmp_path, "space: {train.lr: {choice: [0.001]}}\ninner_folds: 0\n")
    sweep = plan(
        "neurobolt-debug",
        str(search),
        [*ov, f"data.shards={shards}", "data.reader.exclude_subjects=[sub-02]"],
        tmp_path / "sweep",
    )
    assert sweep.subjects == ("01", "03", "04", "05")
    ctx = trial_context(sweep, "05")
    assert ctx.folds == (("01",), ("03",), ("04",))
    for k in range(len(ctx.folds)):  # every inner run sees the view's subjects, no others
        cfg = fold_config(ctx, {"train.lr": 0.001}, k)
        assert fold_subjects(cfg) == ["01", "03", "04"]
        assert cfg.data.val_subjects == list(ctx.folds[k])


def test_view_links_hold_when_the_shards_were_opened_by_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from brainxl.shards.shardset import ShardSet

    write_shards(tmp_path / "data" / "shards", subjects=("01", "02", "03"), n_trs=16)
    monkeypatch.chdir(tmp_path)
    ShardSet.open("data/shards")  # as a config's relative data.shards opens it first
    view = write_view("data/shards", ["01", "02"], tmp_path / "sweep" / "view")
    monkeypatch.chdir(tmp_path / "sweep")  # the runs of the sweep start anywhere
    for sub in ("sub-01", "sub-02"):
        assert Path(os.readlink(view / sub)).is_absolute()
        assert list((view / sub).glob("*.tar"))


def test_fold_score_reads_the_validation_record_at_the_best_step(tmp_path: Path) -> None:
    (tmp_path / "final_metrics.json").write_text(json.dumps({"best_step": 4}))
    lines = [
        {"split": "train", "step": 2, "loss": 9.0},
        {"split": "val", "step": 2, "loss": 0.8, "pearson_r": 0.1},
        {"split": "val", "step": 4, "loss": 0.5, "pearson_r": 0.3},
        {"split": "val", "step": 6, "loss": 0.6, "pearson_r": 0.4},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = fold_score(tmp_path)
    assert s["val_pearson_r"] == 0.3 and s["val_loss"] == 0.5 and s["step"] == 4
    assert objective_of([{"val_pearson_r": 0.3}, {"val_pearson_r": 0.5}], "val_pearson_r") == 0.4
    assert math.isnan(objective_of([], "val_pearson_r"))


def test_param_overrides_load_as_run_config_overrides() -> None:
    from brainxl.distrib.config import load_config

    ov = param_overrides(
        {"train.lr": 0.002, "train.schedule": "constant", "model.overrides.readout_rank": 3}
    )
    cfg = load_config("neurobolt-debug", ov)
    assert cfg.train.lr == 0.002 and cfg.train.schedule == "constant"
    assert cfg.model.overrides["readout_rank"] == 3


def test_trial_table_states_from_records(tmp_path: Path) -> None:
    folds = [{"fold": 0, "val_pearson_r": 0.2}, {"fold": 1, "val_pearson_r": 0.4}]
    recs = {
        "t_00000": ({"folds": folds}, {"state": "terminated"}),
        "t_00001": ({"folds": folds[:1]}, {"state": "terminated"}),
        "t_00002": ({"folds": []}, {"state": "error", "error": "RuntimeError: boom"}),
    }
    for tid, (rec, state) in recs.items():
        params = {"train.lr": 0.1}
        (tmp_path / f"{tid}.json").write_text(json.dumps({**rec, "params": params}))
        (tmp_path / f"{tid}.state.json").write_text(json.dumps({**state, "params": params}))
    trials = read_trials(tmp_path, 2)
    assert [t["state"] for t in trials] == ["done", "stopped", "error"]
    assert trials[0]["objective"] == pytest.approx(0.3)
    table = trial_table(trials, 2, "val_pearson_r")
    assert "2/2" in table and "1/2" in table and "boom" in table and "train.lr" in table


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from brainxl.launch.cli import main

    assert main(["sweep", "neurobolt-debug", "no-such-search"]) == 2
    assert main(["sweep", "--status", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("brainxl sweep: error: ") for line in err)
    assert "not a sweep folder" in err[1]


def test_an_offline_wandb_run_makes_no_network_call(tmp_path: Path) -> None:
    """brainxl's W&B sink (training runs) and the sweep's runs: offline means no request.

    wandb 0.31 posts telemetry to the server from an offline run unless ``WANDB_MODE``
    says offline process-wide; a local listener stands in for the server.
    """
    import os
    import socket
    import subprocess
    import sys

    child = (
        "from brainxl.distrib.reporting import WandbSink\n"
        f"s = WandbSink(mode='offline', project='p', group='g', fold='f', run_id='abc123',"
        f" run_dir={str(tmp_path)!r}, config={{'a': 1}})\n"
        "import wandb\n"
        "s.run.log({'t': wandb.Table(columns=['a'], data=[[1]])})\n"
        "s({'split': 'val', 'step': 1, 'loss': 0.5})\n"
        "s.close()\n"
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.settimeout(3.0)
        env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
        env["WANDB_BASE_URL"] = f"http://127.0.0.1:{server.getsockname()[1]}"
        proc = subprocess.run([sys.executable, "-c", child], env=env, timeout=300)
        assert proc.returncode == 0
        with pytest.raises(TimeoutError):
            conn, _ = server.accept()
            conn.close()
    assert list(tmp_path.glob("wandb/offline-run-*"))


def test_optuna_searcher_suggests_from_the_shipped_samba_space() -> None:
    from ray.tune.search.optuna import OptunaSearch

    spec = load_search("samba-eeg2fmri-debug")
    searcher = OptunaSearch(seed=spec.seed)
    assert searcher.set_search_properties("objective", spec.mode, spec.param_space())
    params = searcher.suggest("t1")
    assert set(params) == set(spec.space)
    assert 3e-4 <= params["train.lr"] <= 1e-2
    assert params["train.loss.pearson_weight"] in (0.5, 1.0, 2.0)
    searcher.on_trial_complete("t1", {"objective": 0.3, "training_iteration": 2})
