"""Training/inference throughput, peak memory and FLOP efficiency of registered models.

Every case runs in a fresh subprocess, so its peak RSS (``getrusage``) is its own. The
parent also times a large fp32 matmul in the same run; each case's achieved FLOP/s is
printed as a fraction of it. FLOPs are counted with ``torch.utils.flop_counter`` on one
step (fused CPU attention counted with the standard SDPA formula). The fraction uses a
matmul timed between the case's own steps, so both see the same machine load.

Usage::

    python benchmarks/bench_models.py --models neurobolt labram --flavors base \
        --batch 16 --steps 5 --threads 2

On a CUDA device the step runs under bf16 autocast, the matmul it is compared with is a
bf16 8192^3 product (so "x matmul" reads as the model FLOP utilisation against what the
GPU's matmul reaches), and memory is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _cpu_attention_flops() -> dict:
    """FLOP formulas for the CPU flash-attention kernels (absent from torch's registry)."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    # torch passes shapes (not tensors) to custom formulas
    def fwd(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q_shape, k_shape, v_shape)

    def bwd(go_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(go_shape, q_shape, k_shape, v_shape)

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd,
    }


def scalar_loss(out):
    """Training loss of a model output: its ``"loss"``, else the mean square (vs zeros)."""
    if isinstance(out, dict):
        return out["loss"] if "loss" in out else sum(v.float().pow(2).mean() for v in out.values())
    if isinstance(out, (tuple, list)):
        return sum(scalar_loss(o) for o in out)
    return out.float().pow(2).mean()


def matmul_gflops(device: str, n: int = 4096, reps: int = 3, dtype: str = "float32") -> float:
    """Achieved GFLOP/s of an ``n x n`` matmul (median of ``reps``)."""
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    times = []
    for _ in range(reps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        (a @ b).sum().item()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[1:]) / 1e9


def reference_matmul(device: str, reps: int = 3) -> float:
    """GFLOP/s of the matmul a step is compared with: a bf16 8192^3 product on CUDA (the
    step's autocast precision), an fp32 4096^3 one on the CPU."""
    if device == "cuda":
        return matmul_gflops(device, n=8192, reps=reps, dtype="bfloat16")
    return matmul_gflops(device, reps=reps)


def _fewer_channels(inputs: dict, n: int) -> dict:
    """Keep the first ``n`` EEG channels (masks and code targets cut to match)."""
    import torch

    x, idx = inputs["x"], inputs["ch_idx"]
    if n > x.shape[1]:
        raise ValueError(f"--chans {n} exceeds the {x.shape[1]} channels of the example input")
    out = {**inputs, "x": x[:, :n].contiguous(), "ch_idx": idx[:n]}
    n_patches = x.shape[2] // 200
    for key in ("mask", "targets"):  # (B, C * n_patches), channel-major
        if isinstance(inputs.get(key), torch.Tensor):
            t = inputs[key].view(x.shape[0], x.shape[1], n_patches)[:, :n]
            out[key] = t.reshape(x.shape[0], n * n_patches)
    return out


def worker(args: argparse.Namespace) -> dict:
    """Run one case in this process and return its measurements."""
    import torch

    from brainxl.models.registry import count_parameters, get_model_spec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    spec = get_model_spec(args.model)
    model = spec.build(args.flavor).to(device)
    inputs = {
        k: v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in spec.example_inputs(model, args.batch).items()
    }
    if args.chans and isinstance(inputs.get("ch_idx"), torch.Tensor):
        inputs = _fewer_channels(inputs, args.chans)
    train = args.mode == "train"
    model.train(train)
    # fused AdamW: one kernel over all parameters (CPU and CUDA), instead of ~10 ops each
    opt = (
        torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05, fused=True)
        if train
        else None
    )
    use_amp = device == "cuda"

    def step() -> None:
        with (
            torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp),
            torch.set_grad_enabled(train),
        ):
            out = model(**inputs)
            loss = scalar_loss(out)
        if train:
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with counter:
        step()  # also the warm-up step
    flops = counter.get_total_flops()
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, mm = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
        # the reference matmul interleaved with the steps sees the same machine load
        mm.append(reference_matmul(device, reps=1))
    s_step = statistics.median(times)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    x = inputs.get("x")
    return {
        "model": args.model,
        "flavor": args.flavor,
        "mode": args.mode,
        "device": device,
        "batch": args.batch,
        "input": list(x.shape[1:]) if isinstance(x, torch.Tensor) else None,
        "params": count_parameters(model),
        "s_per_step": s_step,
        "samples_per_s": args.batch / s_step,
        "peak_gib": peak,
        "gflop_per_sample": flops / args.batch / 1e9,
        "gflops": flops / s_step / 1e9,
        "matmul_gflops": statistics.median(mm),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every (model, flavor) case in its own process, print a table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    p.add_argument("--flavors", nargs="*", default=["base"], help="flavors (skipped if absent)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", nargs="*", default=["train"], choices=["train", "infer"])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--chans", type=int, default=None, help="use only the first N EEG channels of the input"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--flavor", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args._worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    from brainxl.models.registry import list_models

    torch.set_num_threads(args.threads)
    registry = list_models()
    names = args.models or sorted(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        p.error(f"unknown model(s) {unknown}; registered: {sorted(registry)}")
    mm = matmul_gflops(args.device)
    print(
        f"device={args.device} threads={args.threads} fp32 matmul 4096^3: {mm:.1f} GFLOP/s "
        f"load={os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if args.device == "cuda":
        mm_bf16 = reference_matmul("cuda")
        print(f"bf16 matmul 8192^3: {mm_bf16 / 1e3:.1f} TFLOP/s", flush=True)
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    for name in names:
        for flavor in args.flavors:
            if flavor not in registry[name].flavors:
                continue
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--_worker", "--model", name, "--flavor", flavor,
                       "--mode", mode, "--batch", str(args.batch), "--steps", str(args.steps),
                       "--threads", str(args.threads), "--device", args.device]  # fmt: skip
                if args.chans:
                    cmd += ["--chans", str(args.chans)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not line:
                    print(f"{name}/{flavor}/{mode} FAILED:\n{proc.stderr[-800:]}", flush=True)
                    continue
                row = json.loads(line[0][len("RESULT ") :])
                row["frac_matmul"] = row["gflops"] / row["matmul_gflops"]
                rows.append(row)
                _print_row(row, header=len(rows) == 1)
    if args.json:
        args.json.write_text(json.dumps({"matmul_gflops": mm, "rows": rows}, indent=2))
    return 0


def _print_row(r: dict, header: bool) -> None:
    mem = "peak GiB (cuda)" if r["device"] == "cuda" else "peak RSS GiB"
    rate = "TFLOP/s" if r["device"] == "cuda" else "GFLOP/s"
    if header:
        print(
            f"{'model':<18}{'flavor':<7}{'mode':<6}{'batch':>6}{'input':>12}{'s/step':>8}"
            f"{'samples/s':>10}{mem:>16}{'GFLOP/smp':>10}{rate:>9}{'matmul':>9}{'x matmul':>9}"
        )
    inp = "x".join(map(str, r["input"])) if r["input"] else "-"
    scale = 1e3 if r["device"] == "cuda" else 1.0  # TFLOP/s on CUDA
    g, m = r["gflops"] / scale, r["matmul_gflops"] / scale
    print(
        f"{r['model']:<18}{r['flavor']:<7}{r['mode']:<6}{r['batch']:>6}{inp:>12}"
        f"{r['s_per_step']:>8.2f}{r['samples_per_s']:>10.2f}{r['peak_gib']:>16.2f}"
        f"{r['gflop_per_sample']:>10.1f}{g:>9.1f}{m:>9.1f}{r['frac_matmul']:>9.2f}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
