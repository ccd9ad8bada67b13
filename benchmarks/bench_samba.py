"""SAMBA training-step benchmark (fwd + bwd + Adam) at the official shapes.

Each case runs in a fresh subprocess (so its peak RSS, read from ``/proc/self/status``
VmHWM, is its own). Cases:

- ``eeg2fmri``: samba-eeg2fmri, 200 parcels x 6000 samples -> 500 parcels x 15 frames;
- ``fmri2eeg``: samba-fmri2eeg, the reverse;

The official code's figure (MODELS.md, quiet 2-core machine, batch 10) is 222 s per
eeg -> fMRI training step; its fMRI -> eeg training does not fit in 24 GiB.

Usage::

    python benchmarks/bench_samba.py                 # CPU, 2 threads, batch 10, 3 steps
    python benchmarks/bench_samba.py --device cuda   # bf16 autocast on a GPU

Other processes share the CPU: the script prints the load average and both wall-clock
and process CPU seconds per step; compare only figures taken in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

OFFICIAL_S_PER_STEP = 222.0  # MODELS.md: official eeg->fMRI train step, batch 10, 2 threads


def _vmhwm_gib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _worker(case: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    from brainxl.models.registry import build_model, count_parameters, get_model_spec

    name = f"samba-{case}"
    spec = get_model_spec(name)
    model = build_model(name, args.flavor)
    if args.graph == "fc":
        # k-NN functional-connectivity graphs from low-rank synthetic "training" series
        # (hubs make the padded neighbour table wider than the default ring graph's)
        import numpy as np

        from brainxl.models.graph import fc_graph

        rng = np.random.default_rng(0)
        graphs = []
        for n in (model.n_in_nodes, model.n_out_nodes):
            ts = rng.standard_normal((n, 20)) @ rng.standard_normal((20, 300))
            graphs.append(
                fc_graph(ts + 0.5 * rng.standard_normal((n, 300)), k=min(args.graph_k, n - 1))
            )
        model.set_graphs(*graphs)
    model = model.to(dev)
    inputs = {k: v.to(dev) for k, v in spec.example_inputs(model, args.batch).items()}
    with torch.no_grad():
        target = torch.randn_like(model(**inputs))
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    use_amp = dev.type == "cuda"

    def step() -> float:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
            pred, aux = model(**inputs, return_aux=True)
            loss, _ = model.loss(pred, target, **aux)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss)

    def sync() -> None:
        if use_amp:
            torch.cuda.synchronize()

    model.train()
    step()  # warm-up
    sync()
    wall, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    model.eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
        model(**inputs)
        sync()
        t0 = time.perf_counter()
        model(**inputs)
        sync()
        infer = time.perf_counter() - t0
    out = {
        "case": case,
        "params": count_parameters(model),
        "s_per_step": sorted(wall)[len(wall) // 2],
        "cpu_s_per_step": sorted(cpu)[len(cpu) // 2],
        "infer_s_per_step": infer,
        "peak_rss_gib": _vmhwm_gib(),
    }
    if use_amp:
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="eeg2fmri,fmri2eeg")
    p.add_argument("--flavor", default="base")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--graph", choices=("fc", "ring"), default="fc")
    p.add_argument("--graph-k", type=int, default=8)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args)))
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: run with --device cpu")
            return 1
    print(
        f"# SAMBA benchmark: flavor={args.flavor} batch={args.batch} threads={args.threads} "
        f"device={args.device} graph={args.graph} loadavg={os.getloadavg()[0]:.1f} "
        f"cores={os.cpu_count()}"
    )
    results = {}
    base = [sys.executable, os.path.abspath(__file__)]
    fwd = [
        "--flavor", args.flavor, "--batch", str(args.batch), "--steps", str(args.steps),
        "--threads", str(args.threads), "--device", args.device, "--graph", args.graph,
        "--graph-k", str(args.graph_k),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for case in args.cases.split(","):
        proc = subprocess.run(
            [*base, *fwd, "--worker", case], capture_output=True, text=True, env=env
        )
        if proc.returncode:
            print(f"{case}: FAILED\n{proc.stderr[-2000:]}")
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        results[case] = res
        line = (
            f"{case:9s} params={res['params']:,} train {res['s_per_step']:.2f} s/step "
            f"({args.batch / res['s_per_step']:.2f} samples/s, cpu {res['cpu_s_per_step']:.2f} "
            f"s) infer {res['infer_s_per_step']:.2f} s/step peak RSS {res['peak_rss_gib']:.2f} GiB"
        )
        if "peak_gpu_gib" in res:
            line += f" peak GPU {res['peak_gpu_gib']:.2f} GiB"
        print(line)
        if case == "eeg2fmri":
            wall = OFFICIAL_S_PER_STEP / res["s_per_step"]
            cpu = OFFICIAL_S_PER_STEP / (res["cpu_s_per_step"] / args.threads)
            print(
                f"          speed-up vs official {OFFICIAL_S_PER_STEP:.0f} s/step: {wall:.0f}x "
                f"wall (this load), {cpu:.0f}x from CPU time / {args.threads} threads"
            )
    print(f"# loadavg at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
