"""One run folder, every file name in it spelled once (dora's ``XP`` paths in spirit).

Layout of ``<run.root>/<experiment>/<fold>-<run_id>/``::

    config.yaml, version.json   the resolved config and the versions it ran with
    data.json                   the shards trained on (folder + manifest digest)
    data_info.json              data shapes, normalisation statistics and the fold split
                                (what evaluation needs instead of a training stream)
    metrics.jsonl               every reported record
    checkpoints/latest          tag of the newest complete checkpoint
    checkpoints/step00000020/   one checkpoint (see :mod:`brainxl.distrib.checkpoint`)
    best_model.pt, best_model.json     weights of the best validation step, their step
    final_model.pt, final_metrics.json weights and metrics at the end of training
    test/                       the trainer's LOSO test: predictions-<s>.npz, metrics-<s>.json
    evaluation/<weights>/       ``brainxl evaluate``: the same files per weights used
    evaluation/summary-<weights>.json
    report/                     report.md/html and figures
    logs/rank<k>.log            the local launcher's logs of ranks > 0
    slurm_job.json              the SLURM job of the run (``brainxl submit``)
    lock                        (reserved) the live writer's lock

Code elsewhere uses the properties of :class:`RunDir`, never the names.
"""

from __future__ import annotations

import os
from pathlib import Path

from brainxl.report import REPORT_DIR


class RunDir:
    """Paths of one run folder.

    Parameters
    ----------
    path : path
        The run folder (need not exist yet).
    """

    CONFIG = "config.yaml"
    VERSION = "version.json"
    DATA_ID = "data.json"
    DATA_INFO = "data_info.json"
    METRICS = "metrics.jsonl"
    CHECKPOINTS = "checkpoints"
    LATEST = "latest"
    BEST_MODEL = "best_model.pt"
    BEST_META = "best_model.json"
    FINAL_MODEL = "final_model.pt"
    FINAL_METRICS = "final_metrics.json"
    TEST = "test"
    EVALUATION = "evaluation"
    REPORT = REPORT_DIR
    LOGS = "logs"
    LOCK = "run.lock"
    JOB_RECORD = "slurm_job.json"
    RESULTS = "results.json"  # one fold's brainxl.metrics results (read by collect)
    LEGACY_TEST_METRICS = "test_metrics.json"  # older runs' single test-metrics file

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, cfg: object) -> RunDir:
        """The run folder of a ``RunConfig`` (:func:`brainxl.distrib.config.run_dir`)."""
        from brainxl.distrib.config import run_dir

        return cls(run_dir(cfg))  # type: ignore[arg-type]

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ files
    @property
    def config_path(self) -> Path:
        """The resolved config (``config.yaml``); its presence marks a run folder."""
        return self.path / self.CONFIG

    @property
    def version_path(self) -> Path:
        return self.path / self.VERSION

    @property
    def data_id_path(self) -> Path:
        """Which shards the run trains on (folder and manifest digest)."""
        return self.path / self.DATA_ID

    @property
    def data_info_path(self) -> Path:
        """Data shapes, normalisation statistics and fold split recorded at training."""
        return self.path / self.DATA_INFO

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def latest_path(self) -> Path:
        """The ``latest`` pointer of the checkpoints folder."""
        return self.checkpoints / self.LATEST

    @property
    def best_model(self) -> Path:
        return self.path / self.BEST_MODEL

    @property
    def best_meta(self) -> Path:
        return self.path / self.BEST_META

    @property
    def final_model(self) -> Path:
        return self.path / self.FINAL_MODEL

    @property
    def final_metrics(self) -> Path:
        """Written last by a finished run: its presence means the run is complete."""
        return self.path / self.FINAL_METRICS

    @property
    def test_dir(self) -> Path:
        """The trainer's LOSO test outputs."""
        return self.path / self.TEST

    @property
    def evaluation_root(self) -> Path:
        return self.path / self.EVALUATION

    def evaluation_dir(self, weights: str) -> Path:
        """``brainxl evaluate`` outputs for ``weights`` (``best``, ``final`` or a tag)."""
        return self.evaluation_root / weights

    def summary_path(self, weights: str) -> Path:
        return self.evaluation_root / f"summary-{weights}.json"

    @property
    def report_dir(self) -> Path:
        return self.path / self.REPORT

    @property
    def logs_dir(self) -> Path:
        return self.path / self.LOGS

    def rank_log(self, rank: int) -> Path:
        return self.logs_dir / f"rank{rank}.log"

    @property
    def job_record(self) -> Path:
        """The SLURM job record written by ``brainxl submit``."""
        return self.path / self.JOB_RECORD

    @property
    def lock_path(self) -> Path:
        """The run lock (taken by the launch that writes the folder)."""
        return self.path / self.LOCK

    # ------------------------------------------------------------------ per-subject files
    @staticmethod
    def predictions(folder: Path, subject: str) -> Path:
        """``predictions-<subject>.npz`` in a test or evaluation folder."""
        return Path(folder) / f"predictions-{subject}.npz"

    @staticmethod
    def subject_metrics(folder: Path, subject: str) -> Path:
        """``metrics-<subject>.json`` in a test or evaluation folder."""
        return Path(folder) / f"metrics-{subject}.json"

    SUBJECT_METRICS_GLOB = "metrics-*.json"

    # ------------------------------------------------------------------ state
    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``config.yaml``)."""
        return self.config_path.is_file()

    def is_complete(self) -> bool:
        """Whether the run finished (``final_metrics.json`` written)."""
        return self.final_metrics.is_file()
