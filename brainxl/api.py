"""The notebook API: the same steps as the ``brainxl`` commands, as Python calls.

Each function imports what it needs when it is called, so ``import brainxl`` stays light
and the science package does not import the runtime at import time.

Examples
--------
>>> import brainxl
>>> brainxl.simulate("data/sim", subjects=4, minutes=8)            # doctest: +SKIP
>>> brainxl.shard("data/sim", "data/shards")                       # doctest: +SKIP
>>> res = brainxl.train("neurobolt-debug", ["data.shards=data/shards"], nproc=2)  # doctest: +SKIP
>>> brainxl.evaluate(res["run_dir"])["mean_r"]                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def simulate(
    out: str | Path,
    subjects: int = 4,
    minutes: float = 10.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> Any:
    """Write a simulated EEG-fMRI BIDS dataset with ground truth (``brainxl simulate``).

    Parameters
    ----------
    out : str or Path
        BIDS root to create (empty or missing unless ``overwrite=True``).
    subjects, minutes, seed : int, float, int
        Number of subjects, BOLD run length in minutes, random seed.
    progress : callable, optional
        Receives one line per step.
    **options
        Any keyword of :func:`brainxl.simulator.dataset.simulate_dataset` (``montage``,
        ``n_parcels``, ``sfreq``, ``tr``, ``fmt``, ``meg``, ``overwrite``, ...).

    Returns
    -------
    summary : SimulationSummary
        What was written, with the ground-truth locations.
    """
    from brainxl.simulator.dataset import simulate_dataset

    return simulate_dataset(out, subjects, minutes, seed, progress=progress, **options)


def shard(
    bids_root: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    source_recon: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess a BIDS dataset and write per-subject shards (``brainxl shard``).

    Parameters
    ----------
    bids_root, out : str or Path
        The BIDS dataset and the shard folder (finished subjects are skipped on a rerun).
    config : str or Path, optional
        A data YAML with ``ingest:`` and ``sharding:`` blocks.
    source_recon : bool
        Also store source-reconstructed parcel time series.
    progress : bool
        Show a progress bar.

    Returns
    -------
    manifest : dict
        The written ``manifest.json``.
    """
    from brainxl.launch.cmd_shard import load_config
    from brainxl.shards.writer import shard_bids

    conf = load_config(None if config is None else Path(config))
    if source_recon:
        conf.ingest.source.enabled = True
    return shard_bids(Path(bids_root), Path(out), conf.ingest, conf.sharding, progress=progress)


def load_config(config: str | Path | None, overrides: Sequence[str] = ()) -> Any:
    """The validated run config of ``config`` (a YAML path or a shipped name) + overrides."""
    from brainxl.distrib.config import load_config as _load

    return _load(None if config is None else str(config), list(overrides))


def train(
    config: str | Path | None, overrides: Sequence[str] = (), nproc: int = 1
) -> dict[str, Any]:
    """Train (or resume) a run on ``nproc`` local DeepSpeed ranks (``brainxl train``).

    Parameters
    ----------
    config : str or Path or None
        A YAML file or a shipped config name (``"neurobolt-debug"``); None for the schema
        defaults.
    overrides : sequence of str
        Dotted overrides, ``["data.shards=data/shards", "train.steps=200"]``.
    nproc : int
        Local ranks; inside torchrun/SLURM the current process joins that job instead.

    Returns
    -------
    metrics : dict
        Rank 0's final metrics, with ``run_dir`` and, with a test subject, ``test``.
    """
    from brainxl.launch.local import launch_local

    return launch_local(load_config(config, overrides), nproc)


def pretrain(
    config: str | Path | None, overrides: Sequence[str] = (), nproc: int = 1
) -> dict[str, Any]:
    """Pretrain the EEG tokenizer or encoder (``brainxl pretrain``); resumes when repeated.

    Parameters
    ----------
    config : str or Path or None
        A YAML file or a shipped name (``"pretrain/tokenizer-debug"``,
        ``"pretrain/mem-debug"``); None for the schema defaults.
    overrides : sequence of str
        Dotted overrides, ``["data.sources=[{path: data/pre-shards}]",
        "pretrain.tokenizer=RUN_DIR"]``.
    nproc : int
        Local ranks; inside torchrun/SLURM the current process joins that job instead.

    Returns
    -------
    metrics : dict
        Rank 0's final metrics (``step``, ``tokens``, ``padding_fraction``, ``run_dir``).
    """
    from brainxl.distrib.pretrain_config import load_pretrain_config
    from brainxl.launch.local import launch_local, pretrain_target

    return launch_local(load_pretrain_config(config, list(overrides)), nproc, pretrain_target())


def evaluate(
    run: str | Path,
    subjects: str = "test",
    bids_root: str | Path | None = None,
    report: bool = True,
    weights: str = "best",
) -> dict[str, Any]:
    """Score a run's model on held-out subjects and write its report (``brainxl evaluate``).

    Parameters
    ----------
    run : str or Path
        A run folder or a checkpoint folder.
    subjects : str
        ``"test"``, ``"val"`` or a comma list of subject ids.
    bids_root : str or Path, optional
        The simulated BIDS dataset, for noise ceilings and true HRFs.
    report : bool
        Write ``<run>/report/`` with its figures.
    weights : {"best", "final"}
        The best-validation or the final weights of a finished run.

    Returns
    -------
    result : dict
        ``mean_r``, ``per_subject``, ``baseline_mean_r``, ``fraction_of_ceiling``, ...
    """
    from brainxl.launch.cmd_evaluate import evaluate as _evaluate

    return _evaluate(run, subjects, report=report, bids_root=bids_root, weights=weights)


def predict(
    run: str | Path, inputs: str | Path, out: str | Path | None = None, **options: Any
) -> list[Any]:
    """Predict BOLD from EEG/MEG (or back) for new recordings (``brainxl predict``).

    Parameters
    ----------
    run : str or Path
        Run folder (best-validation weights; ``weights="final"``) or checkpoint folder.
    inputs : str or Path
        A BIDS dataset, an EEG/MEG file (EDF, BDF, BrainVision, EEGLAB, FIF), a 4D BOLD
        NIfTI (with ``atlas=``) or an ROI TSV.
    out : str or Path, optional
        Write a BIDS derivatives dataset there (ROI TSVs, NIfTI in the atlas space, MNE
        raw files); nothing is written when None.
    **options
        Any keyword of :func:`brainxl.launch.cmd_predict.predict` (``subjects``,
        ``weights``, ``bold``, ``atlas``, ``atlas_labels``, ``tr``, ``volume_marker``,
        ``raw_format``, ``report``, ``batch_size``, ``allow_missing_channels``,
        ``progress``).

    Returns
    -------
    list of brainxl.distrib.prediction.Prediction
        Per recording: ``data`` (n_times, n_series), ``names``, ``times`` (s from volume
        0), ``units``; ``true`` when the input holds the target.
    """
    from brainxl.launch.cmd_predict import predict as _predict

    return _predict(run, inputs, out, **options)


def sweep(
    config: str | Path,
    search: str | Path,
    overrides: Sequence[str] = (),
    outer: Sequence[str] = (),
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Nested leave-one-subject-out hyperparameter sweep on an embedded Ray (``brainxl sweep``).

    Parameters
    ----------
    config : str or Path
        The run config (a YAML file or a shipped name such as ``"quickstart"``).
    search : str or Path
        The search file (a YAML file or a name in ``configs/sweep/``).
    overrides : sequence of str
        Dotted run-config overrides.
    outer : sequence of str
        Outer (held-out) subjects; empty for every subject.
    out : str or Path, optional
        The sweep folder (default ``<run.root>/sweeps/<name>``); repeating the call resumes.

    Returns
    -------
    result : dict
        ``sweep`` (folder), ``outer`` (per outer subject: chosen parameters, inner score,
        tuned/default/ridge held-out r), ``report`` and ``summary`` (intervals).
    """
    from brainxl.launch import sweep as _sweep

    return _sweep.run_sweep(_sweep.plan(str(config), str(search), overrides, out), outer)
