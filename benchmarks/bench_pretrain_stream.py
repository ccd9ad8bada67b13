"""Tokens per second per rank on the mixed pretraining stream, montage bucketing off vs on.

Builds (or reuses, ``--data``) a corpus of four EEG-only datasets, one per montage
(clinical19, biosemi32, biosemi64, easycap-M1: 19 / 32 / 64 / 74 channels), and measures
on rank 0 of ``--world-size`` ranks, for ``data.bucket_batches = 0`` and ``= K``, in one run:

* **stream**: one whole epoch of this rank's batches read and padded
  (:class:`~brainxl.shards.pretrain_stream.PretrainStream`, checksums verified);
* **MEM step**: the masked-modeling step of the pretraining loop (frozen tokenizer codes,
  symmetric mask, forward + backward + AdamW) on the first ``--steps`` batches, fp32.

Tokens per second are printed padded (what the model computes) and real (EEG patches,
what pretraining learns from), with the padding fraction of the epoch.

Usage::

    .venv/bin/python benchmarks/bench_pretrain_stream.py --flavor base --steps 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

MONTAGES = ("clinical19", "biosemi32", "biosemi64", "easycap-M1")


def build_corpus(root: Path, subjects: int, minutes: float) -> list[Path]:
    """One EEG-only shard folder per montage under ``root`` (reused when present)."""
    from brainxl.shards.config import ShardingConfig
    from brainxl.shards.eeg_writer import shard_eeg

    from brainxl.simulator.eeg_corpus import simulate_eeg_corpus

    out = []
    for i, montage in enumerate(MONTAGES):
        shards = root / f"shards-{montage}"
        if not (shards / "manifest.json").is_file():
            bids = root / f"bids-{montage}"
            simulate_eeg_corpus(
                bids, subjects, minutes, seed=i, montages=montage, rates=[200], overwrite=True
            )
            shard_eeg(
                bids,
                shards,
                cfg=ShardingConfig(segment_s=30.0, workers=1),
                progress=False,
                report=lambda line: None,
            )
        out.append(shards)
    return out


def time_stream(stream, epoch: int) -> dict[str, float]:
    """Read one epoch of the stream's batches; tokens, real tokens and seconds."""
    t = time.perf_counter()
    tokens = real = n = 0
    for b in stream.batches(epoch):
        tokens += b.tokens
        real += b.real_tokens
        n += 1
    return {"s": time.perf_counter() - t, "tokens": tokens, "real": real, "batches": n}


def time_mem(stream, epoch: int, flavor: str, steps: int) -> dict[str, float]:
    """``steps`` masked-modeling steps (after one warm-up) on the stream's first batches."""
    import torch

    from brainxl.models.labram_tasks import MEMTask
    from brainxl.models.registry import build_model

    torch.manual_seed(0)
    tokenizer = build_model("labram-tokenizer", flavor).eval()
    for p in tokenizer.parameters():
        p.requires_grad_(False)
    task = MEMTask(flavor, {}, tokenizer, stream.datasets, 0.5, seed=0)
    model = task.build_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    batches = list(stream.batches(epoch))[: steps + 1]

    def step(i: int) -> None:
        loss, _ = task.step(lambda **kw: model(**kw), batches[i], i, 0, "cpu")
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)  # warm-up
    t = time.perf_counter()
    for i in range(1, len(batches)):
        step(i)
    timed = batches[1:]
    return {
        "s": time.perf_counter() - t,
        "tokens": sum(b.tokens for b in timed),
        "real": sum(b.real_tokens for b in timed),
        "batches": len(timed),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the stream and MEM-step tables, bucketing off and on side by side."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="corpus folder (built there once; default tmp)")
    p.add_argument("--subjects", type=int, default=3, help="subjects per montage")
    p.add_argument("--minutes", type=float, default=2.0, help="minutes per subject")
    p.add_argument("--window-s", type=int, default=4)
    p.add_argument("--token-budget", type=int, default=4096)
    p.add_argument("--bucket-batches", type=int, default=32, help="K of the 'on' case")
    p.add_argument("--world-size", type=int, default=2)
    p.add_argument("--flavor", default="base")
    p.add_argument("--steps", type=int, default=4, help="timed MEM steps per case (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch
    from brainxl.shards.pretrain_stream import PretrainStream

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        folders = build_corpus(root, args.subjects, args.minutes)
        print(
            f"corpus: {len(folders)} datasets ({', '.join(MONTAGES)}), {args.subjects} "
            f"subjects x {args.minutes:g} min each, ready in {time.perf_counter() - t:.0f} s; "
            f"window {args.window_s} s, token budget {args.token_budget}, rank 0 of "
            f"{args.world_size}, threads={args.threads}, load={os.getloadavg()[0]:.1f}"
        )
        rows = []
        for k in (0, args.bucket_batches):
            stream = PretrainStream(
                folders,
                window_s=args.window_s,
                token_budget=args.token_budget,
                seed=0,
                rank=0,
                world_size=args.world_size,
                bucket_batches=k,
            )
            pad = sum(stream.padding_fraction(e) for e in range(3)) / 3
            s = time_stream(stream, 0)
            m = time_mem(stream, 1, args.flavor, args.steps) if args.steps else None
            rows.append((k, stream.batches_per_epoch(0), pad, s, m))
        print(
            f"\n{'bucketing':<12}{'batches/rank':>13}{'padding':>9}{'stream tok/s':>14}"
            f"{'real tok/s':>12}{'MEM tok/s':>11}{'MEM real tok/s':>16}{'s/step':>8}"
        )
        for k, n, pad, s, m in rows:
            name = "off" if k == 0 else f"on (K={k})"
            mem = (
                (
                    f"{m['tokens'] / m['s']:>11.0f}{m['real'] / m['s']:>16.0f}"
                    f"{m['s'] / m['batches']:>8.2f}"
                )
                if m
                else f"{'-':>11}{'-':>16}{'-':>8}"
            )
            print(
                f"{name:<12}{n:>13}{pad:>9.3f}{s['tokens'] / s['s']:>14.0f}"
                f"{s['real'] / s['s']:>12.0f}{mem}"
            )
        (_, _, pad0, _, m0), (_, _, pad1, _, m1) = rows
        print(f"\npadding fraction (mean of epochs 0-2): {pad0:.3f} -> {pad1:.3f}")
        if m0 and m1:
            gain = (m1["real"] / m1["s"]) / (m0["real"] / m0["s"])
            print(f"real tokens/s per rank of the MEM step, bucketing on / off: {gain:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
