"""Training throughput and peak memory per model flavor, world size and ZeRO stage.

Each configuration runs in its own ``nproc`` processes (gloo on CPU, NCCL on GPUs) with
the real DeepSpeed engine of ``distrib.engine`` on the registry's example inputs (no data
loading), times ``--steps`` optimizer steps after ``--warmup`` and reports, per rank, the
peak memory: CUDA ``max_memory_allocated`` on GPUs, peak RSS of the process on CPU (which
includes the Python/DeepSpeed runtime, ~0.5 GB).

Usage::

    python benchmarks/bench_train.py                       # debug+base, 1 vs 2 ranks, ZeRO 0/2/3
    python benchmarks/bench_train.py --models neurobolt --flavors base --nproc 2 --zero 0,3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _worker(args: argparse.Namespace) -> None:
    import resource

    import torch
    import torch.distributed as dist
    from brainxl.distrib.config import TrainConfig
    from brainxl.distrib.engine import create_engine, init_distributed, module_dtype
    from brainxl.distrib.env import detect_env

    from brainxl.models.registry import build_model, count_parameters, get_model_spec

    env = detect_env()
    init_distributed(env)
    torch.manual_seed(0)
    spec = get_model_spec(args.model)
    model = build_model(args.model, args.flavor)
    n_params = count_parameters(model)
    inputs = spec.example_inputs(model, args.batch)
    train = replace(
        TrainConfig(),
        batch_size=args.batch,
        zero_stage=args.zero_stage,
        precision=args.precision,
        warmup_steps=0,
        clip=1.0,
    )
    engine = create_engine(model, train, env.world_size, args.steps + args.warmup)
    dtype = module_dtype(engine)
    kw = {
        k: (v.to(engine.device, dtype) if v.is_floating_point() else v.to(engine.device))
        for k, v in inputs.items()
    }
    with torch.no_grad():
        target = torch.zeros_like(engine(**kw).float())

    def step() -> None:
        loss = torch.nn.functional.mse_loss(engine(**kw).float(), target)
        engine.backward(loss)
        engine.step()

    for _ in range(args.warmup):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dist.barrier()
    dt = time.perf_counter() - t0
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    rows = [None] * env.world_size
    dist.all_gather_object(rows, peak)
    if env.rank == 0:
        Path(args.out).write_text(
            json.dumps(
                {
                    "model": args.model,
                    "flavor": args.flavor,
                    "params": n_params,
                    "nproc": env.world_size,
                    "zero": args.zero_stage,
                    "precision": args.precision,
                    "samples_per_s": args.steps * args.batch * env.world_size / dt,
                    "peak_mib_per_rank": rows,
                }
            )
        )
    dist.destroy_process_group()


def _run_one(model: str, flavor: str, nproc: int, zero: int, a: argparse.Namespace) -> dict:
    from brainxl.launch.local import free_port, rank_env

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        port = free_port()
        procs = []
        for rank in range(nproc):
            env = rank_env(rank, nproc, port)
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--model",
                model,
                "--flavor",
                flavor,
                "--zero-stage",
                str(zero),
                "--batch",
                str(a.batch),
                "--steps",
                str(a.steps),
                "--warmup",
                str(a.warmup),
                "--precision",
                a.precision,
                "--out",
                str(out),
            ]
            procs.append(
                subprocess.Popen(
                    cmd,
                    env=env,
                    cwd=REPO,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        errs = [p.communicate()[1] for p in procs]
        if any(p.returncode for p in procs) or not out.exists():
            tail = next((e for p, e in zip(procs, errs) if p.returncode), errs[0])
            last = [ln for ln in tail.splitlines() if ln.strip()][-1:] or ["?"]
            return {
                "model": model,
                "flavor": flavor,
                "nproc": nproc,
                "zero": zero,
                "error": last[0][:120],
            }
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="neurobolt,samba-eeg2fmri,samba-fmri2eeg")
    p.add_argument("--flavors", default="debug,base")
    p.add_argument("--nproc", default="1,2")
    p.add_argument("--zero", default="0,2,3")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--flavor", help=argparse.SUPPRESS)
    p.add_argument("--zero-stage", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker(a)
        return 0
    from brainxl.models.registry import format_count, list_models

    registered = list_models()
    rows = []
    header = (
        f"{'model':<16} {'flavor':<6} {'params':>7} {'ranks':>5} {'zero':>4} "
        f"{'samples/s':>10}  peak MiB per rank"
    )
    print(header)
    print("-" * len(header))
    for model in a.models.split(","):
        for flavor in a.flavors.split(","):
            if model not in registered or flavor not in registered[model].flavors:
                continue
            for nproc in map(int, a.nproc.split(",")):
                stages = [int(z) for z in a.zero.split(",")]
                for zero in stages if nproc > 1 else stages[:1]:
                    r = _run_one(model, flavor, nproc, zero, a)
                    rows.append(r)
                    if "error" in r:
                        print(
                            f"{model:<16} {flavor:<6} {'':>7} {nproc:>5} {zero:>4} "
                            f"FAILED: {r['error']}"
                        )
                        continue
                    peaks = ", ".join(f"{m:.0f}" for m in r["peak_mib_per_rank"])
                    print(
                        f"{model:<16} {flavor:<6} {format_count(r['params']):>7} {nproc:>5} "
                        f"{zero:>4} {r['samples_per_s']:>10.1f}  {peaks}",
                        flush=True,
                    )
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
