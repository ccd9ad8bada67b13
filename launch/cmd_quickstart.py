"""``brainxl quickstart``: simulate -> shard -> train (2 local ranks, one LOSO fold) -> evaluate.

The README's main command. Every step reuses what an earlier invocation finished (the
simulated dataset, finished shards, the run folder of the same config), so re-running
it resumes instead of starting over.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = (
    "Simulate a small EEG-fMRI dataset, shard it, train NeuroBOLT (debug) on one LOSO fold "
    "with local ranks, evaluate it against a ridge baseline and write a report."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="data/quickstart", help="working folder")
    parser.add_argument("--subjects", type=int, default=12, help="simulated subjects")
    parser.add_argument("--minutes", type=float, default=8.0, help="minutes per subject")
    parser.add_argument("--parcels", type=int, default=16, help="simulated parcels (BOLD ROIs)")
    parser.add_argument("--montage", default="biosemi32", help="MNE montage of the EEG")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--nproc", type=int, default=2, help="local training ranks")
    parser.add_argument("--config", default="quickstart", help="training config")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=50")


def reuse_mismatch(bids: Path, subjects: int, minutes: float, montage: str) -> str | None:
    """Why the simulated dataset already in ``bids`` does not match the request (None: it does).

    Compares the subject count, the montage and the number of volumes with what
    ``subjects``, ``montage`` and ``minutes`` would simulate.
    """
    import json

    from brainxl.metrics import SIM_DERIVATIVES

    found = sorted(p.name for p in bids.glob("sub-*") if p.is_dir())
    if len(found) != subjects:
        return f"{len(found)} subjects, not {subjects}"
    sub = found[0]
    params = bids / "derivatives" / SIM_DERIVATIVES / sub / f"{sub}_desc-simulation_params.json"
    if not params.is_file():
        return f"no simulation parameters ({params} is missing)"
    p = json.loads(params.read_text())
    if p.get("montage") != montage:
        return f"montage {p.get('montage')}, not {montage}"
    volumes = int(round(minutes * 60.0 / p["tr"]))
    if p.get("n_volumes") != volumes:
        return f"{p.get('n_volumes')} volumes per run, not {volumes} ({minutes:g} min)"
    return None


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from brainxl.distrib.config import load_config, run_dir
    from brainxl.distrib.rundir import RunDir
    from brainxl.launch.cmd_evaluate import evaluate
    from brainxl.launch.local import launch_local
    from brainxl.shards.writer import shard_bids

    start = time.perf_counter()
    out = Path(args.out)
    bids, shards = out / "bids", out / "shards"

    t = _step(f"1/4 simulate {args.subjects} subjects x {args.minutes:g} min -> {bids}")
    if (bids / "dataset_description.json").is_file():
        why = reuse_mismatch(bids, args.subjects, args.minutes, args.montage)
        if why is not None:
            print(
                f"error: {bids} holds another simulated dataset ({why}); remove {out} or "
                "choose another --out"
            )
            return 2
        print("reusing the simulated dataset already there")
    else:
        from brainxl.simulator import simulate_dataset

        summary = simulate_dataset(
            bids,
            args.subjects,
            args.minutes,
            args.seed,
            n_parcels=args.parcels,
            montage=args.montage,
        )
        print(summary.format())
    print(f"[{time.perf_counter() - t:.1f} s]")

    t = _step(f"2/4 shard -> {shards}")
    shard_bids(bids, shards)
    print(f"[{time.perf_counter() - t:.1f} s]")

    overrides = [f"data.shards={shards}", f"run.root={out / 'runs'}", *args.overrides]
    cfg = load_config(args.config, overrides)
    t = _step(
        f"3/4 train {cfg.model.name} ({cfg.model.flavor}) on {args.nproc} local ranks, "
        f"test subject {cfg.data.test_subject}"
    )
    launch_local(cfg, args.nproc)
    print(f"[{time.perf_counter() - t:.1f} s]")

    t = _step("4/4 evaluate on the held-out subject (model vs ridge on EEG band power)")
    result = evaluate(run_dir(cfg), "test", report=True, bids_root=bids)
    print(f"[{time.perf_counter() - t:.1f} s]")

    folder = Path(result["run_dir"])
    print(f"\nheld-out subject(s): {', '.join(result['subjects'])}")
    print(f"  {cfg.model.name} mean r = {result['mean_r']:.3f}")
    baseline = result.get("baseline_mean_r")
    if baseline is not None:
        print(f"  ridge (band power) mean r = {baseline:.3f}")
        diff = result["mean_r"] - baseline
        verdict = "beats" if diff > 0 else "does NOT beat"
        print(f"  -> {cfg.model.name} {verdict} the ridge baseline on this fold (r {diff:+.3f})")
    if result.get("fraction_of_ceiling") is not None:
        print(f"  fraction of the noise ceiling reached = {result['fraction_of_ceiling']:.2f}")
    print(f"report: {RunDir(folder).report_dir / 'report.html'}")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    from brainxl.launch.wandb_sync import print_sync_hint

    print_sync_hint(folder)
    return 0
