"""What the sweep machinery costs: K trials as a sweep vs the same runs as plain ``brainxl train``.

Both sides run the same inner-fold run configs one after another (``max_concurrent: 1``
and one trial of one rank at a time; plain runs in sequence), on the tiny synthetic
shards of the tests, with W&B disabled on both sides. The sweep side is one
``brainxl sweep --search-only`` command (embedded Ray start-up, trial actors, scheduling,
per-fold reports and checkpoints, trial records); the plain side is one ``brainxl
train`` command per run config. The difference per trial is the sweep's overhead, printed
against the plain wall time of one trial (target: <= 10%).

Usage::

    python benchmarks/bench_sweep.py                 # 3 trials x 2 inner folds x 40 steps
    python benchmarks/bench_sweep.py --trials 4 --steps 100 --folds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    return env


def _timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        rc = subprocess.run(cmd, env=_env(), stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="K configurations")
    parser.add_argument("--folds", type=int, default=2, help="inner folds per trial")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--out", default=None, help="working folder (default: a temp dir)")
    args = parser.parse_args()

    from brainxl.distrib.config import to_yaml
    from brainxl.launch import sweep as sw
    from brainxl.launch.sweep_trial import fold_config
    from train_fixtures import overrides, write_shards

    work = Path(args.out or tempfile.mkdtemp(prefix="bench-sweep-"))
    shards = write_shards(work / "shards", subjects=("01", "02", "03", "04", "05"))
    lrs = [round(1e-3 * (1 + i), 6) for i in range(args.trials)]
    search = work / "search.yaml"
    search.write_text(
        f"space:\n  train.lr: {{grid: {json.dumps(lrs)}}}\nnum_samples: 1\nmax_concurrent: 1\n"
        f"inner_folds: {args.folds}\nresources: {{ranks: 1, cpus: 1}}\n"
    )
    skip = ("data.test_subject", "data.val_subjects", "logging", "train.steps", "train.val_every")
    ov = [o for o in overrides(shards, work / "runs") if not o.startswith(skip)]
    ov += [f"train.steps={args.steps}", f"train.val_every={max(args.steps // 2, 1)}"]
    ov += ["logging.wandb=disabled", "logging.console=false"]
    log = work / "bench.log"
    py = [sys.executable, "-m", "brainxl.launch"]

    # the sweep: one command, embedded Ray
    out = work / "sweep"
    cmd = [*py, "sweep", "neurobolt-debug", str(search), *ov, "--outer", "05"]
    sweep_s = _timed([*cmd, "--out", str(out), "--search-only", "--cpus", "1"], log)
    plan = sw.plan("neurobolt-debug", str(search), ov, out)
    ctx = sw.trial_context(plan, "05")

    # the same run configs as plain `brainxl train` commands, in a fresh run root
    plain_s = []
    for lr in lrs:
        t = 0.0
        for k in range(len(ctx.folds)):
            cfg = fold_config(ctx, {"train.lr": lr}, k)
            cfg.run.root = str(work / "plain")
            path = work / f"plain-{lr}-{k}.yaml"
            path.write_text(to_yaml(cfg))
            t += _timed([*py, "train", str(path)], log)
        plain_s.append(t)

    per_trial = sum(plain_s) / len(plain_s)
    overhead = (sweep_s - sum(plain_s)) / len(lrs)
    print(f"\nK={len(lrs)} trials x {len(ctx.folds)} inner folds x {args.steps} steps, 1 rank")
    print(f"{'':34}{'seconds':>10}")
    print(f"{'sweep (one command, all trials)':34}{sweep_s:10.1f}")
    print(f"{'plain brainxl train (sum)':34}{sum(plain_s):10.1f}")
    print(f"{'plain wall of one trial (mean)':34}{per_trial:10.1f}")
    print(f"{'sweep overhead per trial':34}{overhead:10.1f}")
    print(f"{'overhead / trial wall':34}{100 * overhead / per_trial:9.1f}%  (target <= 10%)")


if __name__ == "__main__":
    main()
