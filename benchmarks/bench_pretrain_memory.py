"""Per-rank peak memory of one masked-modeling step: ZeRO-3 against ZeRO-0, 2 CPU ranks.

Each case is one ``brainxl pretrain`` MEM run of ``train.steps=1`` on 2 local ranks
(gloo, DeepSpeed's CPU accelerator) with activation checkpointing, on a tiny corpus
(19- and 32-channel windows of 4 s, ``data.token_budget=512``) against a debug tokenizer
with LaBraM's 8192 codes; the per-rank peak resident memory is what the run's step-1
record reports (``peak_rss_gib``, ``ru_maxrss`` of each rank process).

Before a case runs, its memory per rank is estimated: fp32 AdamW's 4 B weights + 4 B
gradients + 8 B moments per parameter, all of it on every rank with ZeRO-0; with ZeRO-3
also DeepSpeed's fp32 master copy of the weights (20 B), split over the ranks (the model
is built inside ``deepspeed.zero.Init``, so no rank ever holds all of it); plus 1 GiB per
rank for the process and the step's activations. A case whose two ranks would need more
than ``--budget-gib`` (24) is printed as an estimate only; one that would not fit the
memory free right now is skipped (the machine is shared). bf16 is autocast on fp32
weights (as ``train.precision=bf16`` runs): the same model states, smaller activations.
Optimizer offload is not measured: on a CPU-only machine it moves the optimizer from RAM
to RAM.

What the numbers mean: ZeRO-3 pays off once the partitioned model states outweigh what
every rank holds anyway (gathered parameters of the layers in flight, ZeRO's buffers,
sized from the parameter count by ``brainxl.distrib.engine.zero_buffers``, and the
process itself). Measured on 2 ranks with ``zero.Init``, glibc's mmap threshold fixed
(``brainxl/heap.py``) and AdamW fused (``distrib/engine.py``): ``large`` (50M) 1.07 GiB
per rank with ZeRO-3 against 1.22 with ZeRO-0, ``huge`` (376M) 4.82 against 6.2 (before
those three: 1.67 and 8.4, more than ZeRO-0). A case that runs out of time reports
``timed out``; the machine's other work decides how long one step takes.

Usage::

    .venv/bin/python benchmarks/bench_pretrain_memory.py \\
        --cases large:0:fp32,large:3:fp32,huge:0:fp32,huge:3:fp32,huge:3:bf16,xl:0:fp32,xl:3:fp32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from brainxl.distrib.env import clear_launcher_env

ROOT = Path(__file__).resolve().parents[1]
NPROC = 2
DEFAULT_CASES = "large:0:fp32,large:3:fp32,huge:0:fp32,huge:3:fp32,huge:3:bf16,xl:0:fp32,xl:3:fp32"


def mem_available_gib() -> float:
    """``MemAvailable`` of ``/proc/meminfo`` in GiB (inf where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def estimate_gib(params: int, zero_stage: int, nproc: int = NPROC) -> float:
    """Model states per rank (GiB) of fp32 AdamW at ``zero_stage`` (see the module doc)."""
    states = 20 * params / nproc if zero_stage == 3 else 16 * params
    return states / 2**30 + 1.0


def write_setup(root: Path) -> Path:
    """Corpus, a finished 8192-code debug tokenizer run and ``mem.yaml``; returns it."""
    from brainxl.shards.config import ShardingConfig
    from brainxl.shards.eeg_writer import shard_eeg

    from brainxl.simulator.eeg_corpus import simulate_eeg_corpus

    sources = []
    for i, montage in enumerate(("clinical19", "biosemi32")):
        simulate_eeg_corpus(root / f"bids{i}", 2, 0.5, seed=i, montages=montage, rates=[200])
        shard_eeg(
            root / f"bids{i}",
            root / f"shards{i}",
            cfg=ShardingConfig(segment_s=10.0, workers=1),
            progress=False,
            report=lambda line: None,
        )
        sources.append({"path": str(root / f"shards{i}")})
    base = {
        "data": {"sources": sources, "window_s": 4, "token_budget": 512},
        "train": {
            "steps": 1,
            "warmup_steps": 0,
            "log_every": 1,
            "ckpt_every": 0,
            "keep_last": 1,
            "activation_checkpointing": True,
        },
        "run": {"root": str(root / "runs")},
        "logging": {"wandb": "disabled"},
    }
    tok = {
        **base,
        "base": str(ROOT / "configs/pretrain/tokenizer-debug.yaml"),
        "model": {"flavor": "debug", "overrides": {"codebook_size": 8192}},
        "run": {**base["run"], "name": "tokenizer"},
    }
    (root / "tok.yaml").write_text(yaml.safe_dump(tok))
    _pretrain(root / "tok.yaml", [], timeout=600)
    mem = {
        **base,
        "base": str(ROOT / "configs/pretrain/mem-debug.yaml"),
        "pretrain": {"stage": "mem", "tokenizer": str(root / "runs/pretrain-debug/tokenizer")},
    }
    (root / "mem.yaml").write_text(yaml.safe_dump(mem))
    return root / "mem.yaml"


def _pretrain(config: Path, overrides: list[str], timeout: float) -> tuple[int, str]:
    cmd = [
        sys.executable,
        "-m",
        "brainxl.launch.cli",
        "pretrain",
        str(config),
        *overrides,
        "--nproc",
        str(NPROC),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    clear_launcher_env(env)  # this benchmark starts its own 2-rank job
    env["WANDB_MODE"] = "disabled"
    # DeepSpeed's JIT-built CPU ops go under the venv (as in the Makefile and the tests)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        return -9, out
    return proc.returncode, out


def run_case(mem_yaml: Path, flavor: str, zero: int, precision: str, timeout: float) -> dict:
    """One step of ``flavor`` at ZeRO ``zero``; the step-1 record and the wall time."""
    name = f"{flavor}-z{zero}-{precision}"
    folder = mem_yaml.parent / "runs" / "pretrain-debug" / name
    t = time.perf_counter()
    code, out = _pretrain(
        mem_yaml,
        [
            f"model.flavor={flavor}",
            f"train.zero_stage={zero}",
            f"train.precision={precision}",
            f"run.name={name}",
        ],
        timeout,
    )
    wall = time.perf_counter() - t
    try:
        recs = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        (rec,) = [r for r in recs if r["split"] == "train" and r["step"] == 1]
    except (OSError, ValueError):
        rec = None
    shutil.rmtree(folder, ignore_errors=True)  # checkpoints of large models fill the disk
    if rec is None:
        why = "timed out" if code == -9 else f"failed (exit {code})"
        return {"status": why, "wall_s": wall, "tail": out[-1500:]}
    return {"status": "ok", "wall_s": wall, "peak": rec["peak_rss_gib"], "loss": rec["loss"]}


def main(argv: list[str] | None = None) -> int:
    """Run the cases and print per-rank peak RSS side by side."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help="flavor:zero_stage:precision,...")
    p.add_argument("--budget-gib", type=float, default=24.0, help="memory of the target machine")
    p.add_argument("--margin-gib", type=float, default=3.0, help="left free for the machine")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds per case")
    args = p.parse_args(argv)

    from brainxl.models.labram import MEM_FLAVORS

    cases = [c.split(":") for c in args.cases.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        mem_yaml = write_setup(Path(tmp))
        print(
            f"{NPROC} CPU ranks (gloo), MEM stage, one step, activation checkpointing, "
            f"token budget 512, budget {args.budget_gib:g} GiB, "
            f"load={os.getloadavg()[0]:.1f}"
        )
        print(
            f"{'flavor':<7}{'params':>8}{'ZeRO':>5}{'prec':>6}{'est/rank':>9}"
            f"{'rank0 GiB':>10}{'rank1 GiB':>10}{'wall s':>8}  status"
        )
        for flavor, zero, precision in cases:
            params = int(MEM_FLAVORS[flavor]["expected_params"])
            est = estimate_gib(params, int(zero))
            head = f"{flavor:<7}{params / 1e6:>7.0f}M{zero:>5}{precision:>6}{est:>9.1f}"
            free = mem_available_gib()
            if NPROC * est > args.budget_gib:
                print(
                    f"{head}{'-':>10}{'-':>10}{'-':>8}  does not fit {args.budget_gib:g} GiB "
                    f"({NPROC} x {est:.1f} GiB model states): not run",
                    flush=True,
                )
                continue
            if NPROC * est > free - args.margin_gib:
                print(
                    f"{head}{'-':>10}{'-':>10}{'-':>8}  skipped: {free:.1f} GiB free now",
                    flush=True,
                )
                continue
            r = run_case(mem_yaml, flavor, int(zero), precision, args.timeout)
            if r["status"] != "ok":
                print(f"{head}{'-':>10}{'-':>10}{r['wall_s']:>8.0f}  {r['status']}", flush=True)
                print("    " + r["tail"].replace("\n", "\n    ")[-1200:], flush=True)
                continue
            r0, r1 = r["peak"]
            print(
                f"{head}{r0:>10.2f}{r1:>10.2f}{r['wall_s']:>8.0f}  ok (loss {r['loss']:.2f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
