"""Time ``brainxl simulate`` at the reference size: 4 subjects x 10 min, 64-ch 250 Hz EEG.

Usage::

    .venv/bin/python benchmarks/bench_simulate.py [--subjects 4] [--minutes 10] [--meg]

Writes into a temporary folder (removed afterwards) and prints wall-clock and CPU time
per stage; the target is about 30 s wall on an otherwise idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--format", dest="fmt", default="BrainVision")
    parser.add_argument("--meg", action="store_true")
    args = parser.parse_args()

    t_wall, t_cpu = time.perf_counter(), time.process_time()
    from brainxl.simulator import simulate_dataset

    import_s = time.perf_counter() - t_wall
    with tempfile.TemporaryDirectory() as tmp:
        summary = simulate_dataset(
            os.path.join(tmp, "bids"),
            args.subjects,
            args.minutes,
            seed=0,
            fmt=args.fmt,
            meg=args.meg,
            progress=print,
        )
    wall = time.perf_counter() - t_wall
    cpu = time.process_time() - t_cpu
    print(summary.format())
    print(
        f"bench_simulate: {args.subjects} subjects x {args.minutes:g} min: "
        f"wall {wall:.1f} s (import {import_s:.1f} s), CPU {cpu:.1f} s, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
