"""Glue between the shard reader and the training loop: LOSO folds and batch sources.

One fold: the test subject is held out entirely, ``val_subjects`` (training-fold subjects)
drive early stopping, the rest train. Normalisation statistics come from the training
subjects only, and neither the train nor the validation source ever opens the test
subject's shards. :func:`recording_timeseries` reads subjects' whole-recording time series
back from the shards (what a model spec's fold hook reads of the training subjects).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
            f"data.test_subject {test_subject!r} is not in the shards (subjects: {subs}); "
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
    """A :class:`BatchSource` over ``shards.reader.WindowDataset`` + ``make_loader``."""

    def __init__(
        self, dataset: Any, batch_size: int, num_workers: int = 0, tr: float | None = None
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.ch_names = list(dataset.ch_names)
        self.roi_names = list(dataset.roi_names)
        self.sfreq = float(dataset.sfreq)
        self.parcel_names = list(getattr(dataset, "parcel_names", []))
        self.tr = tr

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def batches_per_epoch(self) -> int:
        return int(self.dataset.batches_per_epoch())

    def skip(self, n_batches: int) -> None:
        self.dataset.load_state_dict({"epoch": self.dataset.epoch, "batches_consumed": n_batches})

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from brainxl.shards.reader import make_loader

        yield from make_loader(self.dataset, self.batch_size, self.num_workers)


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


def _reader_cfg(base: Any, subjects: Sequence[str], shuffle: bool, batch_size: int) -> Any:
    return dataclasses.replace(
        base,
        batch_size=batch_size,
        include_subjects=list(subjects),
        exclude_subjects=[],
        shuffle_buffer=base.shuffle_buffer if shuffle else 0,
    )


def build_fold(cfg: Any, rank: int, world_size: int) -> Fold:
    """Open the shard streams of the fold described by ``cfg`` (a ``RunConfig``).

    The manifest gives the subjects; :func:`split_fold` splits them; the normalisation
    statistics and every stream are restricted to the relevant subjects.
    """
    from brainxl.shards.manifest import read_manifest
    from brainxl.shards.reader import WindowDataset
    from brainxl.shards.stats import fold_statistics

    d = cfg.data
    manifest = read_manifest(d.shards)
    split = split_fold(
        list(manifest["subjects"]), d.test_subject, d.val_subjects, d.n_val_subjects, cfg.seed
    )
    norm = fold_statistics(manifest, split.train)
    bs = cfg.train.batch_size

    def source(subjects: Sequence[str], shuffle: bool, epoch_windows: int | None) -> ReaderSource:
        ds = WindowDataset(
            d.shards,
            _reader_cfg(d.reader, subjects, shuffle, bs),
            rank=rank,
            world_size=world_size,
            seed=cfg.seed,
            epoch_windows=epoch_windows,
            norm=norm,
        )
        return ReaderSource(ds, bs, d.num_workers, manifest.get("tr"))

    train = source(split.train, True, d.epoch_windows or None)
    val = source(split.val, False, None) if split.val else None
    test = source(split.test, False, None) if split.test else None
    return Fold(split, train, val, test, norm, {"manifest": str(d.shards)})


def subject_source(
    cfg: Any, subjects: Sequence[str], norm: Any, *, rank: int = 0, world_size: int = 1
) -> ReaderSource:
    """An unshuffled stream over ``subjects`` normalised with ``norm`` (evaluation)."""
    from brainxl.shards.manifest import read_manifest
    from brainxl.shards.reader import WindowDataset

    d = cfg.data
    manifest = read_manifest(d.shards)
    subs = sorted(manifest["subjects"])
    chosen = [_match(s, subs) for s in subjects]
    ds = WindowDataset(
        d.shards,
        _reader_cfg(d.reader, chosen, False, cfg.train.batch_size),
        rank=rank,
        world_size=world_size,
        seed=cfg.seed,
        norm=norm,
    )
    return ReaderSource(ds, cfg.train.batch_size, d.num_workers, manifest.get("tr"))


def recording_timeseries(
    root: str | os.PathLike,
    subjects: Sequence[str],
    modalities: Sequence[str],
    *,
    norm: Any = None,
    ephys_hz: float = 0.0,
    max_seconds: float = 0.0,
) -> dict[str, list[np.ndarray]]:
    """Contiguous time series of the subjects' recordings, read back from their shards.

    Segments overlap (each keeps a lead-in before its first TR); here every run sample is
    taken once, so consecutive segments of a recording are stitched into one array (a new
    array starts where the stored data has a gap). Electrophysiology is subsampled to about
    ``ephys_hz`` by keeping every ``d``-th run sample, with no low-pass filter: the
    zero-lag similarity :func:`brainxl.models.graph.fc_graph` computes is estimated without
    bias from any subset of time points, aliasing does not change it, and it costs
    ``d`` times less memory and time. Only the first ``max_seconds`` of each subject
    (in shard order) are read.

    Parameters
    ----------
    root : path
        Shard folder (holds ``manifest.json``).
    subjects : sequence of str
        Subjects to read (labels without ``sub-``): the TRAINING subjects of a fold.
    modalities : sequence of {"ephys", "parcels", "bold"}
        Which members of the segments to read (the shards are read once for all).
    norm : shards.stats.NormStats, optional
        Applied per row (``(x - mean) / std``), as the reader does for the model inputs.
    ephys_hz : float
        Target rate of the electrophysiology subsampling (``<= 0``: keep every sample).
    max_seconds : float
        Recording time read per subject (``<= 0``: everything).

    Returns
    -------
    dict of modality -> list of ndarray, each of shape (n_rows, n_times), float32
        One array per contiguous stretch of a recording, subjects in the given order.
    """
    from brainxl.shards.manifest import read_manifest
    from brainxl.shards.verify import check_sample, iter_tar_samples

    bad = [m for m in modalities if m not in ("ephys", "parcels", "bold")]
    if bad or not modalities:
        raise ValueError(f"modalities must be among 'ephys', 'parcels', 'bold', got {modalities}")
    root = Path(root)
    manifest = read_manifest(root)
    sfreq = float(manifest["sfreq"])
    step = max(1, int(sfreq // ephys_hz)) if ephys_hz > 0 else 1
    out: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for subject in subjects:
        if subject not in manifest["subjects"]:
            raise ValueError(
                f"{root / 'manifest.json'}: subject {subject!r} is not in the shards "
                f"(known: {sorted(manifest['subjects'])})"
            )
        segments: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
        seconds = 0.0
        for entry in manifest["subjects"][subject]["shards"]:
            if 0 < max_seconds <= seconds:
                break
            path = str(root / entry["path"])
            for key, members in iter_tar_samples(path):
                if 0 < max_seconds <= seconds:
                    break
                meta = check_sample(path, key, members)
                data = {m: _decode_member(members, m, path, key) for m in modalities}
                rec = meta.get("recording", key.rsplit("_seg-", 1)[0])
                segments.setdefault(rec, []).append((int(meta["segment"]), meta, data))
                seconds += float(meta["n_trs"]) * float(meta["tr"])
        for segs in segments.values():
            segs.sort(key=lambda s: s[0])
            for m in modalities:
                first = "bold_first_tr" if m == "bold" else "ephys_offset"
                parts = [(int(meta[first]), data[m]) for _, meta, data in segs]
                out[m].extend(_stitch(parts, 1 if m == "bold" else step))
    if norm is not None:
        for m in modalities:
            stats = norm.get(m)
            if stats is not None:
                mean, std = stats
                out[m] = [((x - mean[:, None]) / std[:, None]).astype(np.float32) for x in out[m]]
    return out


def _decode_member(members: dict[str, Any], modality: str, path: str, key: str) -> np.ndarray:
    from brainxl.shards import npy

    name = f"{modality}.npy"
    if name not in members:
        raise ValueError(
            f"{path}: sample {key} has no {name}; re-shard with the modality the model reads "
            "(parcels need `brainxl shard --source-recon`)"
        )
    return npy.decode(members[name])


def _stitch(parts: list[tuple[int, np.ndarray]], step: int) -> list[np.ndarray]:
    """Join the segments ``(first run sample, data (n, L))`` of one recording, in order.

    Keeps run samples ``r`` with ``r % step == 0``, each once; a gap starts a new array.
    """
    arrays: list[np.ndarray] = []
    pieces: list[np.ndarray] = []
    covered: int | None = None
    for first, data in parts:
        if covered is not None and first > covered:  # data missing in between: new stretch
            arrays.append(np.concatenate(pieces, axis=1))
            pieces, covered = [], None
        start = 0 if covered is None else covered - first
        start += (-(first + start)) % step
        pieces.append(np.asarray(data[:, start::step], dtype=np.float32))
        end = first + data.shape[1]
        covered = end if covered is None else max(covered, end)
    if pieces:
        arrays.append(np.concatenate(pieces, axis=1))
    return [a for a in arrays if a.shape[1] > 0]
