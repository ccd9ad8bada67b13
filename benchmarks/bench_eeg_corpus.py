"""Time the EEG-only pretraining corpus: ``simulate --eeg-only`` and ``shard --eeg-only``.

Usage::

    .venv/bin/python benchmarks/bench_eeg_corpus.py [--minutes 5] [--subjects 8]

Prints, per montage and native rate, the seconds to simulate one subject's signal and to
write it (mne-bids), as multiples of real time; then the wall time of a whole corpus of
``--subjects`` subjects and of sharding it (2 workers). Writes into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--subjects", type=int, default=8)
    args = parser.parse_args()

    import mne
    import numpy as np
    from brainxl.shards.config import ShardingConfig
    from brainxl.shards.eeg_writer import shard_eeg

    from brainxl.simulator import bids_io
    from brainxl.simulator.eeg_corpus import (
        DEFAULT_MONTAGES,
        DEFAULT_RATES,
        montage_model,
        simulate_eeg_corpus,
        simulate_eeg_subject,
    )

    print(f"{'montage':<12}{'ch':>4}{'Hz':>6}{'simulate s':>12}{'write s':>9}{'x real time':>13}")
    seconds = args.minutes * 60.0
    with tempfile.TemporaryDirectory() as tmp:
        for k, name in enumerate(DEFAULT_MONTAGES):
            model = montage_model(name, 32, np.random.default_rng(k))
            for rate in (DEFAULT_RATES[0], DEFAULT_RATES[-1]):
                t0 = time.perf_counter()
                eeg = simulate_eeg_subject(
                    model, rate, int(seconds * rate), np.random.default_rng(1), 50.0
                )
                t1 = time.perf_counter()
                info = mne.create_info(model.ch_names, rate, "eeg")
                info.set_montage(model.montage)
                raw = mne.io.RawArray(eeg, info, verbose=False)
                raw.info["line_freq"] = 50.0
                bids_io.write_raw(raw, Path(tmp) / name, "01", "rest", "1", model.fmt, "eeg")
                t2 = time.perf_counter()
                print(
                    f"{name:<12}{len(model.ch_names):>4}{rate:>6g}{t1 - t0:>12.2f}"
                    f"{t2 - t1:>9.2f}{seconds / (t2 - t0):>13.0f}"
                )
        t0 = time.perf_counter()
        summary = simulate_eeg_corpus(Path(tmp) / "bids", args.subjects, args.minutes)
        t1 = time.perf_counter()
        m = shard_eeg(
            Path(tmp) / "bids", Path(tmp) / "shards", cfg=ShardingConfig(workers=2), progress=False
        )
        t2 = time.perf_counter()
    hours = summary.minutes * len(summary.subjects) / 60.0
    print(
        f"bench_eeg_corpus: {args.subjects} subjects x {args.minutes:g} min ({hours:.2f} h): "
        f"simulate {t1 - t0:.1f} s (head models {summary.timings['models']:.1f} s), "
        f"shard {t2 - t1:.1f} s ({m['totals']['bytes'] / 1e6:.0f} MB), "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
