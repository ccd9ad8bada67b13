"""LaBraM masked-modeling training step: throughput and share of an fp32 matmul.

One step = forward + backward + AdamW of the ``labram`` masked-modeling model (symmetric
masking, half the patches masked, random code targets), fp32, batch 16. Two cases: 256
tokens (16 channels x 16 s) and 416 tokens (26 channels x 16 s). Each case runs in a fresh
subprocess; after every step a 2048^3 fp32 matmul is timed in the same process, so the
printed share of the matmul is taken under the same machine load as the step. The
process keeps freed memory in its heap as ``brainxl pretrain`` does without ZeRO-3
(:func:`brainxl.heap.keep_freed_memory`); ``--heap keep libc`` adds rows with glibc's
defaults, where each step's large tensors fault in fresh pages. Timing starts after
``--warmup`` untimed steps (3): the kept heap faults the step's large blocks in over
the first steps (consecutive 256-token steps on an AVX-512 machine: 4.4, 4.1, 3.0, 2.5,
2.5 s), and a run repeats the steady step. The official LaBraM figures (``MODELS.md``,
measured side by side on a quiet machine) are printed next to it: samples/s and share of
the matmul.

``--attention fused math`` adds rows whose attention runs through SDPA's math kernel
(matmul, softmax, matmul, the probabilities kept for backward), the formula the official
code computes. With ``--heap libc`` as well this is the nearest same-run stand-in for the
official step on a machine where the official code was not measured: brainxl's model
with the official code's attention and malloc, not the official code itself (which also
keeps more memory: 4.40 GiB at 256 tokens against 3.3). On 2 AMD EPYC AVX2 cores the
256-token rows read (medians of two runs): fused/kept heap share 0.55-0.58, 3.4-3.8
samples/s; math/libc share 0.31-0.33, 2.0-2.3 samples/s; the official code measured 3.83
(share 0.50) on the AVX2 machine of ``MODELS.md``. When both kinds of row ran, a last
line gives the kept-heap fused rows' speed over the stand-in's (ratio of the shares:
every row does the same FLOPs).

``--baseline REF`` also runs the cases on the source tree of a git revision (``git
archive`` into a temporary folder), alternating current and baseline rounds, so a
change is judged before/after in one run. ``--profile`` prints the top operators of one
step after the warm-up (torch.profiler).

Usage::

    python benchmarks/bench_labram.py --rounds 3 --baseline main --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent

#: (channels, official LaBraM-base samples/s, official share of the matmul), MODELS.md.
CASES = {256: (16, 3.83, 0.50), 416: (26, 1.44, 0.34)}
#: fp32 matmul of that side-by-side run (GFLOP/s): the official work per sample is
#: ``share * REF_MATMUL / samples_per_s`` (23.9 GFLOP at 256 tokens, 43.2 at 416).
REF_MATMUL = 183.0
#: The machine of that run: the comparison at equal matmul speed assumes the official
#: code would speed up with the matmul on another kind of CPU, which is only an estimate.
REF_MACHINE = "2 AVX2 cores"


def matmul_gflops(n: int = 2048) -> float:
    """GFLOP/s of one ``n x n`` fp32 matmul (after a warm-up product)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    a @ b
    return 2 * n**3 / (time.perf_counter() - t) / 1e9


def machine() -> str:
    """The CPU's model name and the vector ISA PyTorch's kernels use on it.

    Shares of the matmul are comparable only between machines of one kind: a wider ISA
    speeds the large matmul up more than the step's small-width kernels.
    """
    import torch

    name = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"


def worker(args: argparse.Namespace) -> dict:
    """Time one case in this process (source tree ``args.src`` first on the path)."""
    if args.src:
        sys.path.insert(0, args.src)
    sys.path.insert(1, str(BENCH))
    import torch
    from bench_models import _cpu_attention_flops  # FLOP formulas of the CPU SDPA kernels
    from torch.utils.flop_counter import FlopCounterMode

    import brainxl
    from brainxl.channels import channel_indices
    from brainxl.models.neurobolt import NEUROBOLT_26  # 26 names; 16 tokens case: first 16
    from brainxl.models.registry import get_model_spec

    torch.set_num_threads(args.threads)
    if args.heap == "keep":
        try:
            from brainxl.heap import keep_freed_memory
        except ImportError:  # a baseline tree older than the policy
            sys.exit(f"{args.src}: no brainxl.heap in this tree; compare it with --heap libc")
        keep_freed_memory()
    torch.manual_seed(0)
    n_ch, n_p, B = args.chans, 16, args.batch
    model = get_model_spec("labram").build(args.flavor).train()
    gen = torch.Generator().manual_seed(0)
    L = n_ch * n_p
    inputs = {
        "x": 20.0 * torch.randn(B, n_ch, n_p * 200, generator=gen),
        "ch_idx": torch.tensor(channel_indices(NEUROBOLT_26[:n_ch]), dtype=torch.long),
        "mask": torch.rand(B, L, generator=gen).argsort(1) < L // 2,
        "targets": torch.randint(0, model.codebook_size, (B, L), generator=gen),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05, fused=True)

    def step() -> None:
        with attention_backend(args.attention):
            model(**inputs)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with counter:
        step()
    flops = counter.get_total_flops()
    # The kept heap reaches its steady state over the first steps (the step's large
    # blocks fault in until the heap holds them all); time the steps training repeats.
    for _ in range(args.warmup - 1):
        step()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20), flush=True)
    times, mm = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
        mm.append(matmul_gflops())
    # pair each step with the matmul right after it: the share is robust to load changes
    shares = [flops / t / 1e9 / m for t, m in zip(times, mm)]
    s = statistics.median(times)
    return {
        "src": str(Path(brainxl.__file__).resolve().parents[1]),
        "tokens": L,
        "batch": B,
        "s_per_step": s,
        "samples_per_s": B / s,
        "gflop_per_step": flops / 1e9,
        "gflops": flops / s / 1e9,
        "matmul_gflops": statistics.median(mm),
        "share": statistics.median(shares),
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def attention_backend(kind: str) -> contextlib.AbstractContextManager:
    """The SDPA kernel a step runs under.

    Parameters
    ----------
    kind : {"fused", "math"}
        ``fused`` leaves PyTorch's choice (its flash kernel on CPU); ``math`` is matmul,
        softmax, matmul with the probabilities kept for backward, as the official LaBraM
        computes attention.

    Returns
    -------
    contextlib.AbstractContextManager
    """
    if kind == "fused":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def _archive(ref: str, dest: Path) -> Path:
    """Extract the tree of git revision ``ref`` into ``dest`` and return it."""
    tar = dest / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(tar), ref], check=True)
    with tarfile.open(tar) as fh:
        fh.extractall(dest / "tree", filter="data")
    return dest / "tree"


def speed_vs_reference(r: dict, tokens: int) -> float:
    """Samples/s relative to the official code on a machine of the same matmul speed."""
    _, ref_rate, ref_share = CASES[tokens]
    ref_gflop_per_sample = ref_share * REF_MATMUL / ref_rate
    ours = r["share"] * r["matmul_gflops"] / (r["gflop_per_step"] / r["batch"])
    ref = ref_share * r["matmul_gflops"] / ref_gflop_per_sample
    return ours / ref


def _run(
    args: argparse.Namespace, tokens: int, src: str | None, heap: str, attention: str
) -> dict | None:
    cmd = [sys.executable, __file__, "--_worker", "--chans", str(CASES[tokens][0]),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--threads", str(args.threads), "--flavor", args.flavor,
           "--heap", heap, "--attention", attention]  # fmt: skip
    if src:
        cmd += ["--src", src]
    if args.profile:
        cmd += ["--profile"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if args.profile:
        print("\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")))
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        print(f"{tokens} tokens ({src or 'current'}) FAILED:\n{proc.stderr[-800:]}", flush=True)
        return None
    return json.loads(line[0][len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    """Run the cases (and the baseline), print one row per run and a summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="*", default=sorted(CASES), choices=sorted(CASES))
    p.add_argument("--flavor", default="base")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (the first counts FLOPs)"
    )
    p.add_argument("--rounds", type=int, default=1, help="alternating rounds per case")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--heap", nargs="+", default=["keep"], choices=["keep", "libc"],
        help="malloc policy of the step's process: keep freed memory (as training does) "
        "or glibc's defaults; several give rows side by side",
    )  # fmt: skip
    p.add_argument(
        "--attention", nargs="+", default=["fused"], choices=["fused", "math"],
        help="SDPA kernel: fused (PyTorch's flash kernel on CPU) or math (the official "
        "code's matmul-softmax-matmul); several give rows side by side",
    )  # fmt: skip
    p.add_argument("--baseline", default=None, help="git revision to compare against")
    p.add_argument("--profile", action="store_true", help="print the top operators of a step")
    p.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--chans", type=int, default=16, help=argparse.SUPPRESS)
    p.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warmup < 1:
        p.error(f"--warmup must be >= 1 (the first step counts the FLOPs), got {args.warmup}")
    if args._worker:
        args.heap, args.attention = args.heap[0], args.attention[0]
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        base_src = str(_archive(args.baseline, Path(tmp))) if args.baseline else None
        trees = [("current", None)] + ([(args.baseline, base_src)] if base_src else [])
        variants = [
            ("/".join([name]
                      + ([heap] if len(args.heap) > 1 else [])
                      + ([attn] if len(args.attention) > 1 else [])), src, heap, attn)
            for name, src in trees
            for heap in args.heap
            for attn in args.attention
        ]  # fmt: skip
        print(f"threads={args.threads} batch={args.batch} flavor={args.flavor} fp32, "
              f"load={os.getloadavg()[0]:.1f}, {machine()}")  # fmt: skip
        print(f"{'tokens':>6} {'code':<20}{'s/step':>8}{'samples/s':>10}{'GFLOP/s':>9}"
              f"{'matmul':>8}{'share':>7}{'peak GiB':>9}{'x reference':>12}")  # fmt: skip
        results: dict[tuple[int, str], list[dict]] = {}
        for tokens in args.tokens:
            for _ in range(args.rounds):
                for name, src, heap, attn in variants:
                    r = _run(args, tokens, src, heap, attn)
                    if r is None:
                        continue
                    results.setdefault((tokens, name), []).append(r)
                    print(f"{tokens:>6} {name:<20}{r['s_per_step']:>8.2f}"
                          f"{r['samples_per_s']:>10.2f}{r['gflops']:>9.1f}"
                          f"{r['matmul_gflops']:>8.1f}{r['share']:>7.2f}{r['peak_gib']:>9.2f}"
                          f"{speed_vs_reference(r, tokens):>12.2f}", flush=True)  # fmt: skip
        print("\nmedian share of the matmul per case (reference LaBraM: 0.50 at 256, 0.34 at 416, "
              f"on {REF_MACHINE}); 'as measured': samples/s over the official code's "
              f"{CASES[256][1]} / {CASES[416][1]} on that machine")  # fmt: skip
        for (tokens, name), rs in sorted(results.items()):
            share = statistics.median(r["share"] for r in rs)
            speed = statistics.median(speed_vs_reference(r, tokens) for r in rs)
            raw = statistics.median(r["samples_per_s"] for r in rs) / CASES[tokens][1]
            print(
                f"{tokens:>6} {name:<20} share {share:.2f}  "
                f"samples/s vs the official code at equal matmul speed {speed:.2f}x  "
                f"as measured {raw:.2f}x"
            )
        if stand_in := standin_summary(results, variants):
            print(stand_in)
    return 0


def standin_summary(
    results: dict[tuple[int, str], list[dict]], variants: list[tuple[str, Any, str, str]]
) -> str:
    """Lines comparing each tree's kept-heap fused rows with its libc/math stand-in rows.

    Every row of a case does the same FLOPs, so the ratio of the median shares of the
    matmul is the speed ratio at equal machine load. Empty unless both variants ran.
    """
    kind = {name: (src, heap, attn) for name, src, heap, attn in variants}
    lines = []
    for (tokens, name), rs in sorted(results.items()):
        src, heap, attn = kind[name]
        if (heap, attn) != ("keep", "fused"):
            continue
        stand_in = next(
            (n for n, (s, h, a) in kind.items() if s == src and (h, a) == ("libc", "math")), None
        )
        if stand_in is None or (tokens, stand_in) not in results:
            continue
        ours = statistics.median(r["share"] for r in rs)
        theirs = statistics.median(r["share"] for r in results[(tokens, stand_in)])
        lines.append(
            f"{tokens:>6} {name} over the official-like stand-in {stand_in} "
            f"(same run, share ratio): {ours / theirs:.2f}x"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
