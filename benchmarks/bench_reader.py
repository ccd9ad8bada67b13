"""Windows/s of the shard reader against per-subject ``.npy`` memmaps, on the same windows.

Usage::

    python benchmarks/bench_reader.py [--workdir DIR] [--subjects 4] [--minutes 10]
        [--batch-size 32] [--num-workers 0] [--epochs 3] [--warmup 1] [--bids BIDS_DIR]

Without ``--bids`` it simulates a BIDS dataset (``brainxl.simulator``: 64 channels,
200 Hz, 64 ROIs) into ``DIR/bids`` and shards it into ``DIR/shards`` (both reused when
present). The baseline rebuilds each run's full arrays from the shards, saves them as
``DIR/npy/<run>_ephys.npy`` / ``_bold.npy`` and reads every window through a map-style
``Dataset`` over ``np.load(mmap_mode="r")`` with a shuffling DataLoader; the shard reader
is :class:`shards.reader.WindowDataset` + :func:`shards.reader.make_loader`. Both yield
the same windows (one epoch of every window) as batches of float32 tensors.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from brainxl.shards import npy  # noqa: E402
from brainxl.shards.config import IngestConfig, ReaderConfig, ShardingConfig  # noqa: E402
from brainxl.shards.reader import make_loader  # noqa: E402
from brainxl.shards.segments import segment_windows  # noqa: E402
from brainxl.shards.shardset import ShardSet  # noqa: E402


def build_shards(workdir: Path, bids: Path | None, subjects: int, minutes: float) -> Path:
    """Simulate (unless ``bids`` is given) and shard; return the shard folder."""
    from brainxl.shards.writer import shard_bids

    if bids is None:
        bids = workdir / "bids"
        if not (bids / "dataset_description.json").exists():
            from brainxl.simulator.dataset import simulate_dataset

            t = time.perf_counter()
            simulate_dataset(bids, n_subjects=subjects, minutes=minutes, seed=0, sfreq=200.0)
            print(f"simulated {subjects} x {minutes} min in {time.perf_counter() - t:.1f} s")
    out = workdir / "shards"
    t = time.perf_counter()
    shard_bids(bids, out, IngestConfig(), ShardingConfig(workers=2), progress=False)
    print(f"sharded (or found) {out} in {time.perf_counter() - t:.1f} s")
    return out


def build_npy(shards: Path, out: Path) -> list[dict]:
    """Rebuild every run's arrays from the shards into per-run ``.npy`` files."""
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    m = ShardSet(shards).manifest
    for frag in m["subjects"].values():
        for entry in frag["shards"]:
            with tarfile.open(shards / entry["path"]) as tar:
                members = {n: tar.extractfile(n).read() for n in tar.getnames()}
            for d in entry["samples"]:
                k = d["key"]
                meta = json.loads(members[f"{k}.meta.json"])
                run = runs.setdefault(meta["recording"], {"segs": [], "meta": meta})
                run["segs"].append(
                    (
                        meta,
                        npy.decode(members[f"{k}.ephys.npy"]),
                        npy.decode(members[f"{k}.bold.npy"]),
                    )
                )
    index = []
    for name, run in sorted(runs.items()):
        segs = run["segs"]
        r0 = min(s[0]["ephys_offset"] for s in segs)
        r1 = max(s[0]["ephys_offset"] + s[0]["n_ephys"] for s in segs)
        n_trs = max(s[0]["first_tr"] + s[0]["n_trs"] for s in segs)
        ephys = np.zeros((segs[0][1].shape[0], r1 - r0), dtype=np.float32)
        bold = np.zeros((segs[0][2].shape[0], n_trs), dtype=np.float32)
        for meta, e, b in segs:
            ephys[:, meta["ephys_offset"] - r0 : meta["ephys_offset"] - r0 + e.shape[1]] = e
            bold[:, meta["bold_first_tr"] : meta["first_tr"] + meta["n_trs"]] = b
        np.save(out / f"{name}_ephys.npy", ephys)
        np.save(out / f"{name}_bold.npy", bold)
        index.append(
            {"name": name, "r0": r0, "n_ephys": r1 - r0, "n_trs": n_trs, "meta": run["meta"]}
        )
    return index


class MemmapWindows(Dataset):
    """Map-style baseline: window i read from per-run ``.npy`` memmaps."""

    def __init__(self, folder: Path, index: list[dict], cfg: ReaderConfig, sfreq: float) -> None:
        self.folder, self.W = folder, int(round(cfg.window_s * sfreq))
        self.items: list[tuple[str, int, int]] = []
        for run in index:
            meta = dict(run["meta"], first_tr=0, n_trs=run["n_trs"], bold_first_tr=0)
            meta.update(ephys_offset=run["r0"], n_ephys=run["n_ephys"])
            wins, _ = segment_windows(meta, self.W, cfg.lag_s, 1)
            self.items += [(run["name"], k, a) for k, a, _ in wins]
        self._open: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        name, k, a = self.items[i]
        if name not in self._open:
            self._open[name] = (
                np.load(self.folder / f"{name}_ephys.npy", mmap_mode="r"),
                np.load(self.folder / f"{name}_bold.npy", mmap_mode="r"),
            )
        ephys, bold = self._open[name]
        return {
            "ephys": torch.from_numpy(np.ascontiguousarray(ephys[:, a : a + self.W])),
            "bold": torch.from_numpy(np.ascontiguousarray(bold[:, k])),
            "tr_index": k,
        }


def _time(loader, n_expected: int) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for batch in loader:
        n += batch["ephys"].shape[0]
    dt = time.perf_counter() - t
    assert n > 0 and n <= n_expected, (n, n_expected)
    return n / dt, n


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print windows/s of both readers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("runs/bench_reader"))
    p.add_argument("--bids", type=Path, default=None)
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (best is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs of each reader first")
    p.add_argument("--window-s", type=float, default=16.0)
    p.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads of the main process"
    )
    args = p.parse_args(argv)
    # on a few shared cores, multi-threaded collate (torch.stack) is many times slower
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shards = build_shards(args.workdir, args.bids, args.subjects, args.minutes)
    index = build_npy(shards, args.workdir / "npy")
    cfg = ReaderConfig(window_s=args.window_s, batch_size=args.batch_size, shuffle_buffer=256)
    opened = ShardSet(shards)
    ds = opened.windows(cfg, seed=0)
    base = MemmapWindows(args.workdir / "npy", index, cfg, ds.sfreq)
    assert len(base) == ds.n_windows, (len(base), ds.n_windows)
    m = opened.manifest
    print(
        f"data: {m['totals']['n_subjects']} subjects, {len(ds.ch_names)} ch @ {ds.sfreq:g} Hz, "
        f"{len(ds.roi_names)} ROIs, {ds.n_windows} windows of {ds.window} samples, "
        f"{m['totals']['bytes'] / 1e6:.0f} MB of shards; batch {args.batch_size}, "
        f"num_workers {args.num_workers}"
    )
    best = {"shards": 0.0, "memmap": 0.0}
    for epoch in range(-args.warmup, args.epochs):  # negative epochs: untimed warm-up
        loader = make_loader(ds, args.batch_size, args.num_workers)
        loader.set_epoch(epoch + args.warmup)
        rate, _ = _time(loader, ds.n_windows)
        if epoch >= 0:
            best["shards"] = max(best["shards"], rate)
        print(f"epoch {epoch}: shard reader  {rate:9.0f} windows/s")
        g = torch.Generator().manual_seed(epoch + args.warmup)
        bl = DataLoader(
            base,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.num_workers,
            generator=g,
        )
        rate, _ = _time(bl, len(base))
        if epoch >= 0:
            best["memmap"] = max(best["memmap"], rate)
        print(f"epoch {epoch}: npy memmap    {rate:9.0f} windows/s")
    ratio = best["shards"] / best["memmap"]
    print(
        f"best: shard reader {best['shards']:.0f} windows/s, memmap {best['memmap']:.0f} "
        f"windows/s, ratio {ratio:.2f} ({'meets' if ratio >= 1 else 'below'} target >= 1)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
