"""The one ``report(metrics)`` callable: console progress, ``metrics.jsonl``, W&B.

Only rank 0 writes. W&B is offline by default; ``WANDB_MODE`` in the environment wins over
``logging.wandb``; runs are grouped by experiment (``logging.group``) with the fold as
job type and name, and the run hash as id so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from brainxl.distrib.rundir import RunDir

from brainxl.files import atomic_write_text

Report = Callable[[dict[str, Any]], None]


def format_eta(seconds: float) -> str:
    """``H:MM:SS`` of ``seconds`` (``?`` when unknown)."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ConsoleSink:
    """Progress lines: ``step 20/100 | 85.3 samples/s | loss 0.4123 | lr 3.0e-04 | ETA``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, m: dict[str, Any]) -> None:
        split = m.get("split", "train")
        parts = [
            f"[{split}] step {m.get('step', '?')}"
            + (f"/{m['total_steps']}" if "total_steps" in m else "")
        ]
        for key, fmt in (
            ("samples_per_s", "{:.1f} samples/s"),
            ("loss", "loss {:.4f}"),
            ("lr", "lr {:.2e}"),
        ):
            if key in m:
                parts.append(fmt.format(m[key]))
        if "eta_s" in m:
            parts.append(f"ETA {format_eta(m['eta_s'])}")
        rest = {
            k: v
            for k, v in m.items()
            if k
            not in {"split", "step", "total_steps", "samples_per_s", "loss", "lr", "eta_s", "time"}
            and isinstance(v, int | float)
        }
        parts.extend(f"{k} {v:.4g}" for k, v in rest.items())
        print(" | ".join(parts), file=self.stream, flush=True)


class JsonlSink:
    """Append one JSON object per report to ``path``.

    ``truncate_after(step)`` drops records past ``step`` (a resumed run rewrites the
    steps it repeats, so the file of an interrupted run equals an uninterrupted one).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= step and rec.get("split") != "test":
                keep.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def __call__(self, m: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(m, default=float) + "\n")


class WandbSink:
    """W&B run (offline unless configured); imported only when enabled."""

    def __init__(
        self,
        *,
        mode: str,
        project: str,
        group: str,
        fold: str,
        run_id: str,
        run_dir: str | os.PathLike,
        config: dict[str, Any],
    ) -> None:
        # in the environment too: wandb reads its process-wide settings (telemetry included)
        # from there, and an offline run of a process without WANDB_MODE still posts to the
        # server (wandb 0.31: /sdk/otel/v1/metrics)
        os.environ.setdefault("WANDB_MODE", mode)
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(
            project=project,
            group=group,
            job_type=fold,
            name=fold,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=config,
        )

    def __call__(self, m: dict[str, Any]) -> None:
        data = {
            f"{m.get('split', 'train')}/{k}": v
            for k, v in m.items()
            if isinstance(v, int | float) and k not in ("step", "time")
        }
        self.run.log(data, step=int(m.get("step", 0)))

    def close(self) -> None:
        self.run.finish()


def wandb_mode(configured: str) -> str:
    """The effective W&B mode: ``WANDB_MODE`` if set, else the config's."""
    mode = os.environ.get("WANDB_MODE", "").strip() or configured
    return "disabled" if mode in ("disabled", "dryrun-disabled", "off") else mode


class Reporter:
    """Fans ``report(metrics)`` out to its sinks; a no-op on ranks other than 0.

    Parameters
    ----------
    sinks : list of callables
    is_main : bool
        Only the main rank forwards anything.
    """

    def __init__(self, sinks: list[Report], *, is_main: bool = True) -> None:
        self.sinks = sinks if is_main else []
        self.is_main = is_main

    def __call__(self, metrics: dict[str, Any]) -> None:
        m = {"time": time.time(), **metrics}
        for sink in self.sinks:
            sink(m)

    def truncate_after(self, step: int) -> None:
        for sink in self.sinks:
            if isinstance(sink, JsonlSink):
                sink.truncate_after(step)

    def close(self) -> None:
        for sink in self.sinks:
            if hasattr(sink, "close"):
                sink.close()


def make_reporter(
    cfg: Any,
    run_dir: str | os.PathLike,
    *,
    is_main: bool,
    run_id: str,
    fold: str,
    extra: list[Report] | None = None,
) -> Reporter:
    """The default sinks for a ``RunConfig``: console, ``metrics.jsonl``, W&B, ``extra``."""
    if not is_main:
        return Reporter([], is_main=False)
    sinks: list[Report] = []
    if cfg.logging.console:
        sinks.append(ConsoleSink())
    sinks.append(JsonlSink(RunDir(run_dir).metrics_path))
    wandb = _wandb_sink(cfg, run_dir, run_id, fold)
    if wandb is not None:
        sinks.append(wandb)
    sinks.extend(extra or [])
    return Reporter(sinks, is_main=True)


def _wandb_sink(cfg: Any, run_dir: str | os.PathLike, run_id: str, fold: str) -> WandbSink | None:
    """The run's W&B sink (resumed when it exists), None when W&B is disabled."""
    mode = wandb_mode(cfg.logging.wandb)
    if mode == "disabled":
        return None
    from brainxl.distrib.config import to_dict

    return WandbSink(
        mode=mode,
        project=cfg.logging.project,
        group=cfg.logging.group or cfg.experiment,
        fold=fold,
        run_id=run_id,
        run_dir=run_dir,
        config=to_dict(cfg),
    )


def log_figures(
    cfg: Any, run_dir: str | os.PathLike, figures: dict[str, str | os.PathLike]
) -> bool:
    """Log report figures to the run's W&B run (same id, resumed); False when disabled.

    Parameters
    ----------
    cfg : RunConfig
    run_dir : path
        The run folder (W&B files live under it).
    figures : dict of str to path
        Figure name to its PNG file.
    """
    from brainxl.distrib.config import fold_name, run_id

    sink = _wandb_sink(cfg, run_dir, run_id(cfg), fold_name(cfg)) if figures else None
    if sink is None:
        return False
    import wandb

    sink.run.log({f"evaluation/{name}": wandb.Image(str(png)) for name, png in figures.items()})
    sink.close()
    return True
