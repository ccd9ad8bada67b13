"""Glue between the shard reader and the training loop: LOSO folds and batch sources.

One fold: the test subject is held out entirely, ``val_subjects`` (training-fold subjects)
drive early stopping, the rest train. Normalisation statistics come from the training
subjects only, and neither the train nor the validation source ever opens the test
subject's shards. Everything reads through one ``brainxl.shards.shardset.ShardSet`` per
process (:func:`open_shards`): the manifest is parsed once per run.
:func:`recording_timeseries` reads subjects' whole-recording time series back from the
shards (what a model spec's fold hook reads of the training subjects).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import numpy as np
import torch


class BatchSource(Protocol):
    """What the loop needs from a data stream (one per rank).

    Every rank yields the same number of batches per epoch; each batch is a dict of
    collated tensors (``ephys`` (B, C, W), ``bold`` (B, R) or (B, R, n_targets), ...).
    """

    ch_names: list[str]
    roi_names: list[str]
    sfreq: float

    def set_epoch(self, epoch: int) -> None: ...

    def batches_per_epoch(self) -> int: ...

    def skip(self, n_batches: int) -> None:
        """Start the next iteration of the current epoch at batch ``n_batches``."""
        ...

    def __iter__(self) -> Iterator[dict[str, Any]]: ...


@dataclass(frozen=True)
class FoldSplit:
    """Subjects (labels without ``sub-``) of one LOSO fold."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


@dataclass
class Fold:
    """The three streams of one fold plus what they were built from."""

    split: FoldSplit
    train: BatchSource
    val: BatchSource | None
    test: BatchSource | None
    norm: Any = None  # shards.stats.NormStats of the training subjects
    info: dict[str, Any] = field(default_factory=dict)
    shards: Any = None  # the brainxl.shards.shardset.ShardSet the streams read


def _label(s: str) -> str:
    s = str(s)
    return s[4:] if s.startswith("sub-") else s


def _match(name: str, subjects: Sequence[str]) -> str:
    """``name`` as spelled in ``subjects``: ``sub-`` optional, and YAML's ``04 -> 4`` undone."""
    label = _label(name)
    if label in subjects or not label.isdigit():
        return label
    same = [s for s in subjects if s.isdigit() and int(s) == int(label)]
    return same[0] if len(same) == 1 else label


def split_fold(
    subjects: Sequence[str],
    test_subject: str = "",
    val_subjects: Sequence[str] = (),
    n_val: int = 1,
    seed: int = 0,
) -> FoldSplit:
    """Split subjects into train / validation / test for one LOSO fold.

    Parameters
    ----------
    subjects : sequence of str
        Every subject available (labels with or without ``sub-``).
    test_subject : str
        Held-out test subject ("" = none).
    val_subjects : sequence of str
        Validation subjects; when empty, ``n_val`` are drawn deterministically (from
        ``seed`` and the test subject) among the training subjects, leaving at least one
        subject to train on.
    n_val : int
        Number of validation subjects to draw.
    seed : int
        Seed of the draw.

    Returns
    -------
    split : FoldSplit
    """
    subs = sorted({_label(s) for s in subjects})
    test = _match(test_subject, subs) if test_subject else ""
    if test and test not in subs:
        raise ValueError(
            f"data.test_subject {test_subject!r} is not among the fold's subjects {subs} (the "
            "shards' subjects after data.reader.include_subjects/exclude_subjects); "
            "fix data.test_subject"
        )
    rest = [s for s in subs if s != test]
    if val_subjects:
        val = [_match(v, subs) for v in val_subjects]
        bad = [v for v in val if v not in rest]
        if bad:
            raise ValueError(
                f"data.val_subjects {bad} are not training-fold subjects (available: {rest}); "
                "fix data.val_subjects"
            )
    else:
        k = min(max(n_val, 0), len(rest) - 1)
        val = sorted(random.Random(f"{seed}-{test}").sample(rest, k)) if k > 0 else []
    train = [s for s in rest if s not in val]
    if not train:
        raise ValueError("no training subject left after the test and validation subjects")
    return FoldSplit(tuple(train), tuple(val), (test,) if test else ())


class ReaderSource:
    """A :class:`BatchSource` over ``shards.reader.WindowDataset`` + ``make_loader``.

    ``complete=True`` (evaluation) yields every window once instead, in order, in this
    process, the last batch partial (``WindowDataset.every_window``); the training stream's
    equal batches per rank drop the windows that do not fill a batch.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        num_workers: int = 0,
        tr: float | None = None,
        *,
        complete: bool = False,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.complete = complete
        self.ch_names = list(dataset.ch_names)
        self.roi_names = list(dataset.roi_names)
        self.sfreq = float(dataset.sfreq)
        self.parcel_names = list(getattr(dataset, "parcel_names", []))
        self.tr = tr

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        if self.complete:
            return -(
                -len(range(self.dataset.rank, self.dataset.n_windows, self.dataset.world_size))
                // self.batch_size
            )
        return int(self.dataset.batches_per_epoch())

    def skip(self, n_batches: int) -> None:
        if self.complete:
            raise ValueError("a complete (evaluation) stream cannot resume mid-way")
        self.dataset.load_state_dict({"epoch": self.dataset.epoch, "batches_consumed": n_batches})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from brainxl.shards.reader import collate_windows, make_loader

        if not self.complete:
            yield from make_loader(self.dataset, self.batch_size, self.num_workers)
            return
        windows = self.dataset.every_window()
        while chunk := list(islice(windows, self.batch_size)):
            yield collate_windows(chunk)


class MemorySource:
    """In-memory :class:`BatchSource` (tests, benchmarks): equal batches on every rank.

    Parameters
    ----------
    samples : list of dict
        Per-window dicts of numpy arrays / scalars, as the reader yields them.
    batch_size : int
    rank, world_size : int
    seed : int
        Shuffle seed; the order depends on ``(seed, epoch)`` only.
    shuffle : bool
    ch_names, roi_names : list of str
    sfreq : float
    """

    def __init__(
        self,
        samples: list[dict[str, Any]],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        ch_names: Sequence[str] = (),
        roi_names: Sequence[str] = (),
        sfreq: float = 200.0,
    ) -> None:
        self.samples = samples
        self.batch_size = batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.ch_names, self.roi_names, self.sfreq = list(ch_names), list(roi_names), sfreq
        self.epoch = 0
        self._skip = 0
        if self.batches_per_epoch() < 1:
            raise ValueError(
                f"{len(samples)} windows cannot fill one batch of {batch_size} on each of "
                f"{world_size} ranks; lower train.batch_size"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._skip = 0

    def skip(self, n_batches: int) -> None:
        self._skip = n_batches

    def batches_per_epoch(self) -> int:
        return len(self.samples) // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = np.arange(len(self.samples))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        n = self.batches_per_epoch() * self.batch_size
        mine = order[self.rank :: self.world_size][:n]
        start, self._skip = self._skip * self.batch_size, 0
        for i in range(start, n, self.batch_size):
            yield collate([self.samples[j] for j in mine[i : i + self.batch_size]])


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack per-window dicts into a batch (arrays -> tensors, strings -> lists)."""
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        if isinstance(vals[0], np.ndarray | torch.Tensor):
            out[k] = torch.stack([torch.as_tensor(v) for v in vals])
        elif isinstance(vals[0], int | float | np.number):
            out[k] = torch.as_tensor(vals)
        else:
            out[k] = vals
    return out


def _reader_cfg(cfg: Any, subjects: Sequence[str], shuffle: bool) -> Any:
    """The ``shards.config.ReaderConfig`` of one stream: ``data.reader`` plus the run's batch
    size and the stream's subjects."""
    from brainxl.shards.config import ReaderConfig

    base = cfg.data.reader
    return ReaderConfig.from_windows(
        base,
        batch_size=cfg.train.batch_size,
        include_subjects=list(subjects),
        exclude_subjects=[],
        shuffle_buffer=base.shuffle_buffer if shuffle else 0,
    )


def open_shards(cfg: Any) -> Any:
    """The run's :class:`~brainxl.shards.shardset.ShardSet` (parsed once per process)."""
    from brainxl.shards.shardset import ShardSet

    return ShardSet.open(cfg.data.shards)


def fold_subjects(cfg: Any, shards: Any = None) -> list[str]:
    """The subjects a run's folds draw from: the shards' subjects after
    ``data.reader.include_subjects`` / ``exclude_subjects``."""
    shards = shards if shards is not None else open_shards(cfg)
    r = cfg.data.reader
    return shards.select(
        r.include_subjects,
        r.exclude_subjects,
        where=f"data.reader.include_subjects/exclude_subjects ({cfg.data.shards})",
    )


def config_split(cfg: Any, shards: Any = None) -> FoldSplit:
    """The fold split of ``cfg`` (a ``RunConfig``): :func:`split_fold` of its subjects.

    Validation subjects are drawn with ``data.split_seed``, or the run's ``seed`` when that
    is unset, so runs that differ only in ``seed`` can keep one split.
    """
    d = cfg.data
    seed = cfg.seed if d.split_seed is None else d.split_seed
    return split_fold(
        fold_subjects(cfg, shards), d.test_subject, d.val_subjects, d.n_val_subjects, seed
    )


def build_fold(cfg: Any, rank: int, world_size: int) -> Fold:
    """Open the shard streams of the fold described by ``cfg`` (a ``RunConfig``).

    The shard set gives the subjects (narrowed by ``data.reader.include_subjects`` /
    ``exclude_subjects``); :func:`split_fold` splits them; the normalisation statistics
    and every stream are restricted to the relevant subjects.
    """
    d = cfg.data
    shards = open_shards(cfg)
    split = config_split(cfg, shards)
    norm = shards.fold_statistics(split.train)

    def source(subjects: Sequence[str], shuffle: bool, epoch_windows: int | None) -> ReaderSource:
        ds = shards.windows(
            _reader_cfg(cfg, subjects, shuffle),
            rank=rank,
            world_size=world_size,
            seed=cfg.seed,
            epoch_windows=epoch_windows,
            norm=norm,
        )
        return ReaderSource(ds, cfg.train.batch_size, d.num_workers, shards.tr)

    train = source(split.train, True, d.epoch_windows or None)
    val = source(split.val, False, None) if split.val else None
    test = source(split.test, False, None) if split.test else None
    return Fold(split, train, val, test, norm, {"manifest": str(d.shards)}, shards)


def subject_source(
    cfg: Any, subjects: Sequence[str], norm: Any, *, rank: int = 0, world_size: int = 1
) -> ReaderSource:
    """Every window of ``subjects`` once, normalised with ``norm`` (evaluation, baselines).

    Unshuffled, the last batch partial (``ReaderSource(complete=True)``); with
    ``world_size > 1`` each rank gets every ``world_size``-th window.
    """
    shards = open_shards(cfg)
    chosen = [_match(s, shards.subjects) for s in subjects]
    ds = shards.windows(
        _reader_cfg(cfg, chosen, False),
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        norm=norm,
    )
    return ReaderSource(ds, cfg.train.batch_size, cfg.data.num_workers, shards.tr, complete=True)


def recording_timeseries(
    root: Any,
    subjects: Sequence[str],
    modalities: Sequence[str],
    *,
    norm: Any = None,
    ephys_hz: float = 0.0,
    max_seconds: float = 0.0,
) -> dict[str, list[np.ndarray]]:
    """Whole-recording time series of ``subjects``: ``ShardSet.recording_timeseries``.

    What a model spec's fold hook reads (through :func:`distrib.tasks.fold_context`).

    Parameters
    ----------
    root : path or ShardSet
        Shard folder (holds ``manifest.json``).
    subjects, modalities, norm
        See :meth:`brainxl.shards.shardset.ShardSet.recording_timeseries`.
    ephys_hz : float
        Target rate of the electrophysiology subsampling (``<= 0``: keep every sample).
    max_seconds : float
        Recording time read per subject (``<= 0``: everything).
    """
    from brainxl.shards.shardset import ShardSet

    return ShardSet.open(root).recording_timeseries(
        subjects, modalities, norm=norm, ephys_hz=ephys_hz, max_seconds=max_seconds
    )
