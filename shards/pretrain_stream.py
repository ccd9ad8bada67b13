"""The mixed pretraining stream: windows of many EEG-only shard folders in one shuffled order.

::

    stream = PretrainStream(
        ["shards/tuh", DatasetSource("shards/sim", exclude=["07"])],
        window_s=4, token_budget=16 * 256, seed=0, rank=rank, world_size=world,
        temperature=None,
    )
    stream.batches_per_epoch(epoch)          # from the manifests, no array data read
    for batch in stream.batches(epoch, start=k):   # k: batches already done (resume)
        batch.padded.x, batch.padded.ch_idx, batch.padded.pad_mask, batch.dataset
        batch.tokens, batch.padding_fraction

Each folder is one dataset (``brainxl shard --eeg-only``). Every stored sample (a segment
of ``n_ephys`` samples at 200 Hz) is cut into ``n_ephys // (window_s * 200)``
non-overlapping windows (the remainder of a segment is not used); windows are indexed from
the manifests' per-sample descriptors only. Epoch ``e`` orders the windows of all datasets
in one shuffle seeded by ``(seed, e)`` (never dataset after dataset), or, with a
``temperature`` ``T``, fills the same number of slots by drawing each slot's dataset with
probability ``p_d ∝ n_d^(1/T)`` (``n_d`` windows; ``T = 1`` proportional, large ``T``
uniform over datasets) and taking that dataset's windows in a seeded order, repeated once
exhausted. The ordered windows are grouped into token-budget batches (``batch x max
channels x patches <= token_budget``, padding included; different montages share a batch
with :func:`~brainxl.models.labram_pretrain.pad_eeg_batch`), and the batches are dealt out
``rank, rank + world_size, ...`` after dropping the last ``n_batches % world_size``, so
every rank gets the same number (:attr:`EpochPlan.dropped_batches` reports the drop).

Montage bucketing (``bucket_batches = K > 0``, the default) cuts padding: the shuffled
order is taken in consecutive chunks of about ``K`` batches' worth of windows, each chunk
is sorted by channel count (stably, so the shuffle decides the order within a count) and
cut into token-budget batches, and the order of all the epoch's batches is then shuffled.
Every chunk is a random draw from the whole shuffle, so each stretch of the epoch still
mixes every dataset; only windows with a similar channel count share a batch. Everything
is a function of ``(seed, epoch)``, so ranks agree and resume stays exact.

A run resumed on another world size continues the epoch where the global batch sequence
stopped: ``offset`` (batches of the epoch's undealt list already consumed by all ranks)
skips them and the rest is dealt out to the new ranks (see :meth:`PretrainStream.plan`).

A window is read by random access: the member offsets of a shard file are found once by
scanning its tar headers (cached per file), and the sample's checksums (the ``meta.json``
checksum from the manifest and the member checksums inside it) are verified on every read;
altered bytes raise :class:`~brainxl.shards.errors.ShardError` naming the file and key.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from brainxl.shards import npy
from brainxl.shards.errors import ShardError
from brainxl.shards.shardset import ShardSet
from brainxl.shards.stats import CHANNEL_NORMS
from brainxl.shards.tarformat import META_CHECKSUM_KEY, check_sample, tar_member_offsets
from torch import Tensor

from brainxl.channels import channel_indices
from brainxl.models.labram import PATCH_SIZE
from brainxl.models.labram_pretrain import PaddedBatch, pad_eeg_batch, token_budget_batches


@dataclass(frozen=True)
class DatasetSource:
    """One EEG-only shard folder with an optional subject selection.

    Attributes
    ----------
    path : str or PathLike
        Folder written by ``brainxl shard --eeg-only``.
    include, exclude : sequence of str
        Subject labels (``sub-`` optional) kept / left out (see :meth:`ShardSet.select`).
    """

    path: str | os.PathLike
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()


@dataclass
class EpochPlan:
    """What one epoch holds, computed from the manifests alone.

    Attributes
    ----------
    epoch : int
    order : ndarray of int64
        Global window ids in stream order (all ranks).
    batches : list of list of int
        Positions into ``order`` of each batch kept (all ranks, before dealing out).
    dropped_batches : int
        Batches left out so every rank gets the same number (``< world_size``).
    dropped_windows : int
        Windows in those batches.
    offset : int
        Batches at the start of the epoch left out because an earlier world size consumed
        them (0 unless a run resumed on another world size).
    """

    epoch: int
    order: np.ndarray
    batches: list[list[int]]
    dropped_batches: int
    dropped_windows: int
    offset: int = 0


@dataclass
class StreamBatch:
    """One batch of the stream.

    Attributes
    ----------
    index : int
        Position of the batch in this rank's epoch (``start`` of a resumed pass counts).
    padded : PaddedBatch
        ``x`` (B, C, P * 200) microvolts (z-scores with ``channel_norm="recording"``),
        ``ch_idx`` (-1 padding), ``pad_mask``, ``shapes``.
    dataset : LongTensor, shape (B,)
        Dataset id of each sample (position in :attr:`PretrainStream.datasets`).
    windows : LongTensor, shape (B,)
        Global window id of each sample (see :meth:`PretrainStream.window_info`).
    """

    index: int
    padded: PaddedBatch
    dataset: Tensor
    windows: Tensor

    @property
    def tokens(self) -> int:
        """Tokens of the batch, padding included (``B x C x P``)."""
        return int(self.padded.pad_mask.numel())

    @property
    def real_tokens(self) -> int:
        """Tokens that are not padding."""
        return int((~self.padded.pad_mask).sum())

    @property
    def padding_fraction(self) -> float:
        """Share of the batch's tokens that are padding."""
        return self.padded.padding_fraction


@dataclass
class _Sample:
    path: Path
    key: str
    meta_checksum: str | None
    montage: int
    recording: int  # position in PretrainStream._scales (-1: no channel normalisation)


class PretrainStream:
    """Token-budget batches of EEG windows mixed over datasets, equal on every rank.

    Parameters
    ----------
    sources : sequence of path or DatasetSource
        EEG-only shard folders, one dataset each (dataset id = position here).
    window_s : int
        Window length in whole seconds (``window_s`` patches of 200 samples).
    token_budget : int
        Most tokens (``batch x channels x patches``, padding included) per batch.
    seed : int
        Seeds every epoch's order (with the epoch number).
    rank, world_size : int
        This process's share: batches ``rank, rank + world_size, ...`` of the epoch.
    temperature : float, optional
        Dataset-weighted sampling, ``p_d ∝ n_d^(1/T)``; None: every window once per epoch.
    cache_samples : int
        Decoded shard samples kept in memory (windows of one segment share a read).
    bucket_batches : int
        Montage bucketing: sort chunks of about this many batches' worth of shuffled
        windows by channel count before cutting batches, then shuffle the batch order;
        0 turns it off (batches cut straight from the shuffle).
    channel_norm : {"none", "recording"}
        ``"none"``: windows in microvolts as stored. ``"recording"``: each channel minus
        its recording's mean, divided by its standard deviation (from the ``ephys_sums``
        the shard writer keeps per recording), the input scale of a fine-tune with
        ``data.reader.ephys_norm=subject``.

    Raises
    ------
    ValueError
        One line naming the folder for translation shards, bad arguments, a window
        longer than every stored segment or (``channel_norm="recording"``) a subject
        fragment without channel statistics; ``FileNotFoundError`` for a missing manifest.
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike | DatasetSource],
        *,
        window_s: int,
        token_budget: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        temperature: float | None = None,
        cache_samples: int = 16,
        bucket_batches: int = 32,
        channel_norm: str = "none",
    ) -> None:
        if channel_norm not in CHANNEL_NORMS:
            raise ValueError(f"channel_norm={channel_norm!r}; choose one of {CHANNEL_NORMS}")
        if not sources:
            raise ValueError("PretrainStream: no shard folders given")
        if int(window_s) != window_s or window_s < 1:
            raise ValueError(f"window_s must be a whole number of seconds >= 1, got {window_s}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if int(bucket_batches) != bucket_batches or bucket_batches < 0:
            raise ValueError(f"bucket_batches must be a whole number >= 0, got {bucket_batches}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be > 0 (or None), got {temperature}")
        self.window_s = int(window_s)
        self.patches = self.window_s
        self.window = self.patches * PATCH_SIZE
        self.token_budget = int(token_budget)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.temperature = temperature
        self.cache_samples = int(cache_samples)
        self.bucket_batches = int(bucket_batches)
        self.channel_norm = channel_norm
        self._scales: list[tuple[np.ndarray, np.ndarray]] = []  # (mean, std) per recording
        self.datasets: list[str] = []
        self.montages: list[list[str]] = []
        self._montage_idx: list[Tensor] = []
        self._samples: list[_Sample] = []
        ds_ids, sample_ids, starts = [], [], []
        for d, src in enumerate(sources):
            src = src if isinstance(src, DatasetSource) else DatasetSource(src)
            shards = ShardSet.open_eeg_only(src.path)
            if shards.sfreq != PATCH_SIZE:
                raise ValueError(
                    f"{shards.root}: stored at {shards.sfreq:g} Hz, pretraining needs "
                    f"{PATCH_SIZE} Hz; re-shard with preprocess.sfreq={PATCH_SIZE}"
                )
            names = sorted(shards.manifest.get("datasets", {})) or [shards.root.name]
            self.datasets.append("+".join(names))
            for subject in shards.select(src.include, src.exclude, where=str(src.path)):
                frag = shards.fragment(subject)
                chans = {r["recording"]: r["ch_names"] for r in frag["runs"]}
                scale = self._register_scales(shards, subject)
                for entry in frag["shards"]:
                    path = shards.root / entry["path"]
                    for desc in entry["samples"]:
                        n_win = int(desc["n_ephys"]) // self.window
                        if n_win == 0:
                            continue
                        m = self._montage(chans[desc["recording"]], str(path))
                        sid = len(self._samples)
                        rec = scale[desc["recording"]]
                        sum_key = desc.get(META_CHECKSUM_KEY)
                        self._samples.append(_Sample(path, desc["key"], sum_key, m, rec))
                        ds_ids.append(np.full(n_win, d))
                        sample_ids.append(np.full(n_win, sid))
                        starts.append(np.arange(n_win) * self.window)
        if not starts:
            raise ValueError(
                f"no stored segment holds a whole {self.window_s}-s window in "
                f"{[str(getattr(s, 'path', s)) for s in sources]}; lower window_s"
            )
        self._ds = np.concatenate(ds_ids).astype(np.int64)
        self._sample = np.concatenate(sample_ids).astype(np.int64)
        self._start = np.concatenate(starts).astype(np.int64)
        montage_of = np.array([s.montage for s in self._samples], np.int64)
        self._channels = np.array([len(m) for m in self.montages], np.int64)[
            montage_of[self._sample]
        ]
        self.windows_per_dataset = np.bincount(self._ds, minlength=len(self.datasets))
        if self.temperature is not None and (self.windows_per_dataset == 0).any():
            empty = [self.datasets[i] for i in np.flatnonzero(self.windows_per_dataset == 0)]
            raise ValueError(f"datasets {empty} hold no whole {self.window_s}-s window")
        widest = int(self._channels.max()) * self.patches
        if widest > self.token_budget:
            raise ValueError(
                f"a {self._channels.max()}-channel window of {self.patches} patches has "
                f"{widest} tokens, over token_budget={self.token_budget}; raise the budget "
                "or shorten window_s"
            )
        self._offsets: dict[Path, dict[str, dict[str, tuple[int, int]]]] = {}
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._plan: EpochPlan | None = None
        self._cut: tuple[tuple[int, int], np.ndarray, list[list[int]]] | None = None

    def _register_scales(self, shards: ShardSet, subject: str) -> dict[str, int]:
        """Each recording of ``subject`` to its index in ``_scales`` (-1: not normalised)."""
        frag = shards.fragment(subject)
        if self.channel_norm == "none":
            return {r["recording"]: -1 for r in frag["runs"]}
        try:
            scales = shards.recording_scales(subject)
        except ValueError as err:
            raise ValueError(f"{err}, or set data.channel_norm=none") from None
        out = {}
        for rec, scale in scales.items():
            self._scales.append(scale)
            out[rec] = len(self._scales) - 1
        return out

    def _montage(self, names: list[str], source: str) -> int:
        if names not in self.montages:
            self.montages.append(list(names))
            idx = channel_indices(names, source=source)
            self._montage_idx.append(torch.tensor(idx, dtype=torch.long))
        return self.montages.index(names)

    # ------------------------------------------------------------------ the plan
    @property
    def n_windows(self) -> int:
        """Windows indexed over all datasets."""
        return len(self._ds)

    @property
    def dataset_weights(self) -> np.ndarray:
        """Sampling probability of each dataset per slot (``n_d^(1/T)``, normalised)."""
        n = self.windows_per_dataset.astype(np.float64)
        w = n if self.temperature is None else n ** (1.0 / self.temperature)
        return w / w.sum()

    def _all_batches(self, epoch: int) -> tuple[np.ndarray, list[list[int]]]:
        """Stream order and every batch of epoch ``epoch`` (before dealing out)."""
        key = (self.seed, int(epoch))
        if self._cut is not None and self._cut[0] == key:
            return self._cut[1], self._cut[2]
        rng = np.random.default_rng([self.seed, int(epoch)])
        n = self.n_windows
        if self.temperature is None:
            order = rng.permutation(n)
        else:
            labels = rng.choice(len(self.datasets), size=n, p=self.dataset_weights)
            order = np.empty(n, np.int64)
            for d in range(len(self.datasets)):
                slots = np.flatnonzero(labels == d)
                own = np.flatnonzero(self._ds == d)
                reps = -(-len(slots) // len(own))
                picks = np.concatenate([own[rng.permutation(len(own))] for _ in range(reps)])
                order[slots] = picks[: len(slots)]
        if self.bucket_batches == 0:
            shapes = [(int(c), self.patches) for c in self._channels[order]]
            batches = token_budget_batches(shapes, self.token_budget)
        else:
            order, batches = self._bucketed(order, rng)
        self._cut = (key, order, batches)
        return order, batches

    def _bucketed(
        self, order: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, list[list[int]]]:
        """Sort chunks of ``order`` by channel count, cut batches, shuffle the batches."""
        per_batch = self.token_budget // (float(self._channels.mean()) * self.patches)
        chunk = max(1, int(self.bucket_batches * max(per_batch, 1.0)))
        groups: list[np.ndarray] = []
        for at in range(0, len(order), chunk):
            part = order[at : at + chunk]
            part = part[np.argsort(self._channels[part], kind="stable")]
            shapes = [(int(c), self.patches) for c in self._channels[part]]
            groups.extend(part[b] for b in token_budget_batches(shapes, self.token_budget))
        groups = [groups[i] for i in rng.permutation(len(groups))]
        order = np.concatenate(groups)
        bounds = np.cumsum([0] + [len(g) for g in groups])
        batches = [list(range(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]
        return order, batches

    def plan(self, epoch: int, offset: int = 0) -> EpochPlan:
        """The order and batches of epoch ``epoch`` (all ranks; no array data read).

        Parameters
        ----------
        epoch : int
        offset : int
            Batches of the epoch (in its undealt list) already consumed, by a run on
            another world size; the rest is dealt out to this stream's ranks.
        """
        p = self._plan
        if p is not None and p.epoch == epoch and p.offset == offset:
            return p
        order, every = self._all_batches(epoch)
        if not 0 <= offset <= len(every):
            raise ValueError(f"offset={offset} is outside epoch {epoch}'s {len(every)} batches")
        rest = every[offset:]
        keep = len(rest) - len(rest) % self.world_size
        dropped = rest[keep:]
        self._plan = EpochPlan(
            int(epoch), order, rest[:keep], len(dropped), sum(len(b) for b in dropped),
            int(offset),
        )  # fmt: skip
        return self._plan

    def batches_per_epoch(self, epoch: int = 0, offset: int = 0) -> int:
        """Batches each rank gets in epoch ``epoch`` (the same on every rank)."""
        return len(self.plan(epoch, offset).batches) // self.world_size

    def padding_fraction(self, epoch: int, offset: int = 0) -> float:
        """Share of padding tokens in epoch ``epoch``'s kept batches (from the manifests)."""
        p = self.plan(epoch, offset)
        total = real = 0
        for b in p.batches:
            c = self._channels[p.order[b]]
            total += len(b) * int(c.max()) * self.patches
            real += int(c.sum()) * self.patches
        return 1.0 - real / max(total, 1)

    def dataset_counts(self, epoch: int) -> np.ndarray:
        """Windows of each dataset in epoch ``epoch`` (all ranks, dropped batches excluded)."""
        p = self.plan(epoch)
        kept = p.order[[i for b in p.batches for i in b]]
        return np.bincount(self._ds[kept], minlength=len(self.datasets))

    def rank_windows(self, epoch: int, offset: int = 0) -> list[np.ndarray]:
        """Global window ids of each of this rank's batches in epoch ``epoch``."""
        p = self.plan(epoch, offset)
        mine = p.batches[self.rank :: self.world_size]
        return [p.order[b] for b in mine]

    def window_info(self, window: int) -> dict[str, object]:
        """Where window ``window`` lives: dataset, shard file, sample key, start, channels
        and ``recording`` (index of its recording's statistics; -1 without
        ``channel_norm``)."""
        s = self._samples[int(self._sample[window])]
        return {
            "dataset": int(self._ds[window]),
            "path": str(s.path),
            "key": s.key,
            "recording": int(s.recording),
            "start": int(self._start[window]),
            "ch_names": list(self.montages[s.montage]),
        }

    # ------------------------------------------------------------------ reading
    def _read_sample(self, sid: int) -> np.ndarray:
        hit = self._cache.get(sid)
        if hit is not None:
            self._cache.move_to_end(sid)
            return hit
        s = self._samples[sid]
        offsets = self._offsets.get(s.path)
        if offsets is None:
            offsets = self._offsets[s.path] = tar_member_offsets(s.path)
        spans = offsets.get(s.key)
        if spans is None:
            raise ShardError(
                str(s.path), s.key, "sample listed in the manifest is not in the shard; "
                "re-run `brainxl shard`"
            )  # fmt: skip
        members = {}
        try:
            with open(s.path, "rb") as f:
                for suffix, (at, size) in spans.items():
                    f.seek(at)
                    buf = bytearray(size)
                    if f.readinto(buf) != size:
                        raise ShardError(str(s.path), s.key, f"member {suffix} is truncated")
                    members[suffix] = buf
        except OSError as err:
            raise ShardError(str(s.path), s.key, f"cannot read ({err})") from None
        check_sample(
            str(s.path), s.key, members, meta_checksum=s.meta_checksum, require_checksums=True
        )
        x = npy.decode(members["ephys.npy"])
        self._cache[sid] = x
        while len(self._cache) > self.cache_samples:
            self._cache.popitem(last=False)
        return x

    def read_window(self, window: int) -> np.ndarray:
        """Window ``window`` as stored: (channels, ``window_s * 200``) microvolts, float32."""
        x = self._read_sample(int(self._sample[window]))
        start = int(self._start[window])
        return x[:, start : start + self.window]

    def scaled_window(self, window: int) -> np.ndarray:
        """Window ``window`` as batches hold it: :meth:`read_window` scaled per
        ``channel_norm`` (a new float32 array)."""
        x = np.array(self.read_window(window), np.float32)
        r = self._samples[int(self._sample[window])].recording
        if r >= 0:
            mean, std = self._scales[r]
            x = (x - mean[:, None]) / std[:, None]
        return x

    def batches(self, epoch: int, start: int = 0, offset: int = 0) -> Iterator[StreamBatch]:
        """Yield this rank's batches of epoch ``epoch`` from batch ``start`` on.

        A pass from ``start = k`` yields exactly the batches an uninterrupted pass yields
        from its ``k``-th on (exact resume).

        Parameters
        ----------
        epoch : int
        start : int
            Batches of this epoch already consumed on this rank.
        offset : int
            Batches of the epoch consumed before a change of world size (see :meth:`plan`).

        Yields
        ------
        StreamBatch
        """
        mine = self.rank_windows(epoch, offset)
        if not 0 <= start <= len(mine):
            raise ValueError(f"start={start} is outside epoch {epoch}'s {len(mine)} batches")
        for k in range(start, len(mine)):
            ids = mine[k]
            samples = []
            for w in ids:
                x = torch.from_numpy(self.scaled_window(int(w)))
                samples.append((x, self._montage_idx[self._samples[self._sample[w]].montage]))
            padded = pad_eeg_batch(samples)
            yield StreamBatch(
                k,
                padded,
                torch.from_numpy(self._ds[ids].copy()),
                torch.from_numpy(np.asarray(ids, np.int64).copy()),
            )
