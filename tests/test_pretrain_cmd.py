"""`brainxl pretrain`: tokenizer and masked-modeling stages on 2 ranks, resume, NeuroBOLT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pretrain_fixtures import write_corpus
from train_fixtures import overrides, write_shards

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration
STEPS = 10


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "RANK", "SLURM"))}
    env["WANDB_MODE"] = "disabled"
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two EEG-only datasets (19- and 32-channel montages) and the stage configs."""
    train = {"steps": STEPS, "warmup_steps": 2, "ckpt_every": 3, "log_every": 2}
    return write_corpus(tmp_path_factory.mktemp("pretrain-cmd"), train)


def _cmd(config: Path, *extra: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "brainxl.launch.cli", "pretrain", str(config), *extra,
            "--nproc", str(nproc)]  # fmt: skip


def _run(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _folder(out: str) -> Path:
    return Path(json.loads(out[out.rindex("{\n") : out.rindex("}") + 1])["run_dir"])


def _records(folder: Path, split: str) -> list[dict]:
    recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["split"] == split]


@pytest.fixture(scope="module")
def tokenizer_run(corpus: Path) -> Path:
    return _folder(_run(_cmd(corpus / "tok.yaml")))


def test_tokenizer_stage_on_two_ranks(corpus: Path, tokenizer_run: Path) -> None:
    final = json.loads((tokenizer_run / "final_metrics.json").read_text())
    import brainxl

    assert brainxl.pretrain(corpus / "tok.yaml") == final  # complete: the notebook API reads it
    assert final["step"] == STEPS and final["stage"] == "tokenizer"
    assert 0.0 < final["padding_fraction"] < 1.0  # 19- and 32-channel windows share batches
    rest = final["partial_epoch"]  # 10 steps: one whole epoch and part of the next
    assert rest["epoch"] >= 1 and 0.0 < rest["codebook_usage"] <= 1.0
    weights = torch.load(tokenizer_run / "final_model.pt", weights_only=True)
    assert "quantizer.codebook" in weights and bool(weights["quantizer.initted"])
    ident = json.loads((tokenizer_run / "tokenizer.json").read_text())
    assert len(ident["hash"]) == 16 and ident["flavor"] == "debug"
    assert ident["channel_norm"] == "none"  # the input scale its codes describe
    assert [len(s["manifest_sha256"]) for s in ident["data"]["sources"]] == [64, 64]
    train = _records(tokenizer_run, "train")
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10]
    for r in train:
        assert {"loss_amp", "loss_phase", "loss_quant", "dead_codes_reseeded"} <= r.keys()
        assert r["tokens_per_s"] > 0 and 0.0 <= r["padding_fraction"] < 1.0
        assert len(r["peak_rss_gib"]) == 2 and all(0.1 < g < 64 for g in r["peak_rss_gib"])
    epochs = _records(tokenizer_run, "epoch")
    assert epochs, "10 steps cover at least one stream epoch"
    for r in epochs:
        assert 0.0 < r["codebook_usage"] <= 1.0 and 1.0 <= r["perplexity"] <= 128


def test_mem_stage_identity_and_neurobolt(corpus: Path, tokenizer_run: Path, tmp_path) -> None:
    out = _run(_cmd(corpus / "mem.yaml", f"pretrain.tokenizer={tokenizer_run}"))
    mem = _folder(out)
    # the tokenizer's identity (its hash), not its path, is part of the run's
    from brainxl.distrib.pretrain_config import load_pretrain_config, pretrain_run_id

    cfg = load_pretrain_config(corpus / "mem.yaml", [f"pretrain.tokenizer={tokenizer_run}"])
    assert mem.name == f"mem-{pretrain_run_id(cfg)}"
    copy = corpus / "tokenizer-copy"
    copy.mkdir(exist_ok=True)
    (copy / "tokenizer.json").write_bytes((tokenizer_run / "tokenizer.json").read_bytes())
    moved = load_pretrain_config(corpus / "mem.yaml", [f"pretrain.tokenizer={copy}"])
    assert pretrain_run_id(moved) == pretrain_run_id(cfg)
    ident = tokenizer_run / "tokenizer.json"
    saved = ident.read_text()
    try:
        ident.write_text(json.dumps({**json.loads(saved), "hash": "0" * 16}))
        assert pretrain_run_id(cfg) != mem.name.removeprefix("mem-")
    finally:
        ident.write_text(saved)
    train = _records(mem, "train")
    assert train[-1]["step"] == STEPS
    names = json.loads((mem / "final_metrics.json").read_text())["datasets"]
    assert names == ["bids0", "bids1"]
    for r in train:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert {f"accuracy/{n}" for n in names} <= r.keys()
    # exact resume of the mem stage: as if the job had died after the step-9 checkpoint
    done = torch.load(mem / "final_model.pt", weights_only=True)
    (mem / "final_metrics.json").unlink()
    (mem / "checkpoints" / "latest").write_text("step00000009")
    _run(_cmd(corpus / "mem.yaml", f"pretrain.tokenizer={tokenizer_run}"))
    assert [r["step"] for r in _records(mem, "resume")] == [9]
    again = torch.load(mem / "final_model.pt", weights_only=True)
    assert done.keys() == again.keys()
    for k in done:
        assert torch.equal(done[k], again[k]), k
    # model.pretrained=<mem run>: every encoder tensor into NeuroBOLT (lr 0 keeps them)
    shards = write_shards(tmp_path / "shards")
    cmd = [sys.executable, "-m", "brainxl.launch.cli", "train",
           *overrides(shards, tmp_path / "runs", model__pretrained=str(mem), train__steps=2,
                      train__warmup_steps=0, train__lr=0.0, train__schedule="constant"),
           "--nproc", "1"]  # fmt: skip
    out = _run(cmd)
    assert "model.pretrained: loaded 51 encoder tensors" in out, out[-3000:]
    pre = torch.load(mem / "final_model.pt", weights_only=True)
    (run,) = [p for p in (tmp_path / "runs" / "default").iterdir() if p.is_dir()]
    final = torch.load(run / "final_model.pt", weights_only=True)
    enc = [k for k in pre if k.startswith("encoder.") and k != "encoder.mask_token"]
    assert len(enc) == 51
    for k in enc:
        torch.testing.assert_close(final[k], pre[k], msg=k)


def test_resume_after_kill_matches_uninterrupted(corpus: Path, tokenizer_run: Path) -> None:
    cmd = _cmd(corpus / "tok.yaml", "run.name=killed")
    folder = corpus / "runs" / "pretrain-debug" / "killed"
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    latest = folder / "checkpoints" / "latest"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not latest.is_file():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    proc.wait()
    assert latest.is_file(), "no checkpoint appeared within the limit"
    assert not (folder / "final_metrics.json").exists(), "the run ended before the kill"
    step = int(latest.read_text().strip().removeprefix("step"))
    assert 0 < step < STEPS

    _run(cmd)  # the same command resumes
    assert [r["step"] for r in _records(folder, "resume")] == [step]
    a = torch.load(tokenizer_run / "final_model.pt", weights_only=True)
    b = torch.load(folder / "final_model.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = ("time", "tokens_per_s", "tokens_per_s_per_rank", "eta_s", "peak_rss_gib")

    def after(run: Path, split: str, first: int) -> list[dict]:
        recs = [r for r in _records(run, split) if r["step"] >= first]
        return [{k: v for k, v in r.items() if k not in strip} for r in recs]

    # log windows (2 steps) that start after the resumed step, and every later epoch, match
    assert after(tokenizer_run, "train", step + 2) == after(folder, "train", step + 2)
    assert after(tokenizer_run, "epoch", step + 1) == after(folder, "epoch", step + 1)


def test_zero3_builds_the_model_partitioned_with_the_plain_initial_weights(corpus: Path) -> None:
    """ZeRO-3 builds inside deepspeed.zero.Init (no rank holds the whole model), and the
    LaBraM initialisation still reaches the partitioned children: with lr 0 the final
    weights are those of a plain build with the same seed."""
    extra = ["train.zero_stage=3", "train.lr=0.0", "train.steps=2", "run.name=zero-init"]
    out = _run(_cmd(corpus / "tok.yaml", *extra))
    assert "[zero.Init]" in out and "partitioned over 2 ranks" in out, out[-3000:]
    from brainxl.distrib.pretrain_config import load_pretrain_config

    from brainxl.models.labram_tasks import TokenizerTask

    cfg = load_pretrain_config(corpus / "tok.yaml", extra)
    torch.manual_seed(cfg.seed)
    plain = TokenizerTask(cfg.model.flavor, dict(cfg.model.overrides)).build_model()
    final = torch.load(_folder(out) / "final_model.pt", weights_only=True)
    names = [n for n, _ in plain.named_parameters()]
    assert len(names) > 50
    for n, p in plain.named_parameters():
        torch.testing.assert_close(final[n], p.detach(), msg=n)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.windw_s=2", "unknown pretraining config key 'data.windw_s' (did you mean "
                           "'data.window_s'?)"),
        ("pretrain.stage=tok", "config key 'pretrain.stage' is 'tok'"),
        ("data.sources=[]", "data.sources is empty"),
        ("data.sources=[{path: a, includ: [x]}]", "did you mean 'data.sources.include'?"),
        ("data.token_budget=many", "wrong type for pretraining config key 'data.token_budget'"),
        ("pretrain.mask_ratio=1.5", "pretrain.mask_ratio must be in (0, 1)"),
        ("data.bucket_batches=-1", "data.bucket_batches must be >= 0"),
        ("data.channel_norm=subject", "'data.channel_norm' is 'subject'"),
        ("pretrain.mask_unit=token", "'pretrain.mask_unit' is 'token'"),
    ],
)  # fmt: skip
def test_config_mistakes_are_one_line_errors(override: str, message: str, capsys) -> None:
    from brainxl.launch import cli

    assert cli.main(["pretrain", "pretrain/tokenizer-debug", override, "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("brainxl pretrain: error: ") and len(err.splitlines()) == 1
    assert message in err, err


def test_mem_needs_a_finished_tokenizer(tmp_path: Path, capsys) -> None:
    from brainxl.launch import cli

    assert cli.main(["pretrain", "pretrain/mem-debug", "--print-config"]) == 2
    assert "needs pretrain.tokenizer=" in capsys.readouterr().err
    args = ["pretrain", "pretrain/mem-debug", f"pretrain.tokenizer={tmp_path}", "--print-config"]
    assert cli.main(args) == 2
    assert f"pretrain.tokenizer={tmp_path}: no tokenizer.json" in capsys.readouterr().err
    # masked modeling reads windows at the scale its tokenizer was trained on
    (tmp_path / "tokenizer.json").write_text(json.dumps({"hash": "a" * 16, "flavor": "debug"}))
    assert cli.main([*args[:-1], "data.channel_norm=recording", "--print-config"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("brainxl pretrain: error: ")
    assert (
        f"pretrain.tokenizer={tmp_path} was trained with data.channel_norm=none, this run "
        "reads data.channel_norm=recording" in err
    )
    assert cli.main(args) == 0  # a tokenizer from before the option read microvolts
    assert "channel_norm: none" in capsys.readouterr().out
    (tmp_path / "tokenizer.json").write_text(
        json.dumps({"hash": "a" * 16, "flavor": "debug", "channel_norm": "recording"})
    )
    assert cli.main([*args[:-1], "data.channel_norm=recording", "--print-config"]) == 0
    assert cli.main(args) == 2
    assert "trained with data.channel_norm=recording, this run reads" in capsys.readouterr().err


def test_print_config_and_cluster_dry_run(corpus: Path, capsys) -> None:
    from brainxl.launch import cli

    assert cli.main(["pretrain", str(corpus / "tok.yaml"), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "stage: tokenizer" in out and "token_budget: 256" in out
    assert "# run folder: " in out and "pretrain-debug/tokenizer-" in out
    args = ["pretrain", str(corpus / "tok.yaml"), "--cluster", "local", "--dry-run"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "#SBATCH" in out and "nothing submitted" in out


def test_stream_and_resume_guard_follow_the_data_section(corpus: Path, tmp_path: Path) -> None:
    from brainxl.distrib.pretrain_config import data_identity, load_pretrain_config
    from brainxl.distrib.pretrain_entry import build_stream, check_same_data

    src = [f"{{path: {corpus / 'shards0'}, include: ['01']}}", f"{{path: {corpus / 'shards1'}}}"]
    cfg = load_pretrain_config(
        corpus / "tok.yaml", [f"data.sources=[{', '.join(src)}]", "data.temperature=2.0"]
    )
    stream = build_stream(cfg, rank=1, world_size=2)
    assert stream.windows_per_dataset.tolist() == [15, 30]  # one of two subjects in dataset 0
    assert stream.temperature == 2.0 and (stream.rank, stream.world_size) == (1, 2)
    ident = data_identity(cfg)
    run = tmp_path / "run"
    run.mkdir()
    (run / "data.json").write_text(json.dumps(ident))
    check_same_data(run, ident)  # unchanged: resumes
    other = data_identity(load_pretrain_config(corpus / "tok.yaml"))
    with pytest.raises(ValueError, match="changed since it started"):
        check_same_data(run, other)

    # masked modeling: the tokenizer whose codes it learns is part of its data
    def mem_identity(tokenizer_hash: str) -> dict:
        tok = tmp_path / f"tok-{tokenizer_hash}"
        tok.mkdir(exist_ok=True)
        (tok / "tokenizer.json").write_text(json.dumps({"hash": tokenizer_hash}))
        return data_identity(
            load_pretrain_config(corpus / "mem.yaml", [f"pretrain.tokenizer={tok}"])
        )

    mem_run = tmp_path / "mem-run"
    mem_run.mkdir()
    (mem_run / "data.json").write_text(json.dumps(mem_identity("aaaa")))
    check_same_data(mem_run, mem_identity("aaaa"))  # the same tokenizer: resumes
    with pytest.raises(ValueError, match="learned the codes of tokenizer aaaa; .* now is bbbb"):
        check_same_data(mem_run, mem_identity("bbbb"))


def _batch_tokens(stream, epoch: int, offset: int = 0, first: int | None = None) -> int:
    """Tokens (padding included) of this stream rank's batches of ``epoch``."""
    out = 0
    for ids in stream.rank_windows(epoch, offset)[:first]:
        widest = max(len(stream.window_info(int(w))["ch_names"]) for w in ids)
        out += len(ids) * widest * stream.patches
    return out


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_resume_on_another_world_size_continues_the_epoch(corpus: Path, before, after) -> None:
    """Checkpoint of step 3 (epoch 0) of a 2-epoch run on ``before`` ranks, resumed on
    ``after``: the epoch goes on after the batches the old ranks consumed, none twice."""
    from brainxl.distrib import checkpoint as ckpt
    from brainxl.distrib.pretrain_config import load_pretrain_config
    from brainxl.distrib.pretrain_entry import build_stream

    extra = [f"run.name=ws{before}{after}", "train.epochs=2", "train.log_every=1",
             "train.ckpt_every=3", "train.keep_last=100", "data.bucket_batches=8"]  # fmt: skip
    folder = corpus / "runs" / "pretrain-debug" / f"ws{before}{after}"
    _run(_cmd(corpus / "tok.yaml", *extra, nproc=before))
    meta = ckpt.read_meta(folder / "checkpoints", "step00000003")["trainer"]
    assert (meta["epoch"], meta["batch_in_epoch"]) == (0, 3)
    (folder / "final_metrics.json").unlink()
    (folder / "checkpoints" / "latest").write_text("step00000003")
    _run(_cmd(corpus / "tok.yaml", *extra, nproc=after))

    (resume,) = _records(folder, "resume")
    offset = 3 * before
    assert resume["from_world_size"] == before and resume["world_size"] == after
    assert (resume["step"], resume["epoch"], resume["epoch_offset"]) == (3, 0, offset)
    cfg = load_pretrain_config(corpus / "tok.yaml", extra)
    old = [build_stream(cfg, r, before) for r in range(before)]
    new = [build_stream(cfg, r, after) for r in range(after)]
    final = json.loads((folder / "final_metrics.json").read_text())
    rest = new[0].batches_per_epoch(0, offset) + new[0].batches_per_epoch(1)
    assert final["step"] == 3 + rest and final["epoch"] == 2
    # tokens: the old ranks' first 3 batches, the rest of epoch 0 and epoch 1 on the new ranks
    tokens = sum(_batch_tokens(s, 0, first=3) for s in old)
    tokens += sum(_batch_tokens(s, 0, offset) + _batch_tokens(s, 1) for s in new)
    assert final["tokens"] == tokens
    epochs = _records(folder, "epoch")
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(0.0 < r["codebook_usage"] <= 1.0 for r in epochs)


@pytest.mark.parametrize(
    "name",
    sorted(p.stem for p in (REPO / "configs" / "pretrain").glob("*.yaml")),
)
def test_shipped_pretraining_configs_load_and_build_their_model(name: str, tmp_path) -> None:
    """Every ``configs/pretrain`` file passes the schema and its flavor and overrides build."""
    from brainxl.distrib.pretrain_config import load_pretrain_config

    from brainxl.models.registry import build_model, count_parameters

    cfg = load_pretrain_config(f"pretrain/{name}", [f"pretrain.tokenizer={tmp_path}"])
    assert name.startswith(cfg.pretrain.stage) and name.endswith(cfg.model.flavor)
    with torch.device("meta"):
        model = build_model(cfg.model_name, cfg.model.flavor, **cfg.model.overrides)
    assert count_parameters(model) > 0
