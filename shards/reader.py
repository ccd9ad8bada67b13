"""Streaming window reader: training windows cut from shard segments, equal batches per rank.

Pipeline (a :class:`webdataset.DataPipeline` per DataLoader worker)::

    shard list (shuffled per epoch and pass)
      -> split by node, then by worker (webdataset semantics: ``islice(rank, None, world)``)
      -> tar samples (streamed, raw ``.npy`` bytes decoded with ``np.frombuffer``)
      -> windows: EEG ``[end - W, end)`` with ``end = round((k * tr - lag) * sfreq)``, BOLD k
      -> shuffle buffer -> exactly this worker's quota of windows

Equal batches: the number of batches per epoch is computed from the manifest alone,
``B = (epoch_windows or total_windows) // world_size // batch_size``, identically on every
rank. Each rank/worker streams its part of the data *resampled* (it starts another pass,
reshuffled, when it runs out) until it has produced exactly its quota, like webdataset's
``resampled=True`` + ``with_epoch``. The split is per shard when there are at least
``world_size * num_workers`` shards, else per sample (every worker reads every shard and
keeps every G-th sample). Everything is deterministic given ``seed`` and the epoch, and
``load_state_dict`` resumes mid-epoch at exactly the next batch (same world size and
number of workers).
"""

from __future__ import annotations

import logging
import multiprocessing
import random
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from brainxl.shards.config import ReaderConfig
from brainxl.shards.errors import ShardError
from brainxl.shards.segments import segment_windows
from brainxl.shards.shardset import ShardSet
from brainxl.shards.stats import NormStats
from brainxl.shards.tarformat import META_CHECKSUM_KEY, check_sample, iter_tar_samples
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from brainxl.heap import keep_freed_memory

log = logging.getLogger(__name__)
NORM_SCOPES = ("fold", "subject", "none")


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class WindowDataset(IterableDataset):
    """Training windows from a shard folder, an equal number of batches on every rank.

    Parameters
    ----------
    root : path or ShardSet
        Folder written by ``brainxl shard`` (holds ``manifest.json``), or that folder
        already opened (its manifest is not parsed again).
    cfg : ReaderConfig
        Window length, lag, targets, modality, shuffle buffer, batch size, error policy,
        include/exclude subject lists (LOSO).
    rank, world_size : int
        This process's data-parallel rank and the number of ranks.
    seed : int
        Base seed of every shuffle.
    epoch_windows : int, optional
        Windows per epoch over all ranks; default: every window of the selected subjects.
    norm : NormStats, optional
        Applied per row (``(x - mean) / std``) to ephys, BOLD and parcels.

    Attributes
    ----------
    ch_names, roi_names, parcel_names : list of str
        Row names of ``ephys``, ``bold`` and ``parcels`` (per dataset, not per sample).
    subjects : list of str
    sfreq : float
    window : int
        Window length in samples.
    n_windows : int
        Windows available in the selected subjects.
    skipped_trs : int
        TRs without a full window (at the start of a run, or without earlier BOLD frames).

    Notes
    -----
    Each item is a dict: ``ephys`` float32 tensor (C, W); ``bold`` (R,) or
    (R, n_targets) holding frames ``k - n_targets + 1 .. k``; ``parcels`` (P, W) when
    ``cfg.modality == "parcels"``; ``subject`` str; ``tr_index`` int; ``key`` str.
    """

    def __init__(
        self,
        root: str | Path | ShardSet,
        cfg: ReaderConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch_windows: int | None = None,
        norm: NormStats | None = None,
    ) -> None:
        super().__init__()
        shards = root if isinstance(root, ShardSet) else ShardSet(root)
        shards.require_translation()
        self.root = shards.root
        where = str(shards.manifest_path)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if cfg.on_error not in ("fail", "skip"):
            raise ValueError(f"reader.on_error must be 'fail' or 'skip', got {cfg.on_error!r}")
        if cfg.modality not in ("sensors", "parcels"):
            raise ValueError(
                f"reader.modality must be 'sensors' or 'parcels', got {cfg.modality!r}"
            )
        if cfg.n_targets < 1 or cfg.window_s <= 0 or cfg.batch_size < 1:
            raise ValueError("reader.n_targets, reader.window_s and reader.batch_size must be > 0")
        self.cfg, self.rank, self.world_size, self.seed = cfg, rank, world_size, seed
        self.subjects = shards.select(cfg.include_subjects, cfg.exclude_subjects)
        frags = [shards.fragment(s) for s in self.subjects]
        montages = {tuple(f["ch_names"]) for f in frags}
        if len(montages) > 1:
            raise ValueError(
                f"{where}: the selected subjects have {len(montages)} different channel lists; "
                "a batch needs one montage: select subjects with the same channels "
                "(include_subjects) or re-shard with preprocess.rename_channels/drop_channels"
            )
        self.ch_names = list(frags[0]["ch_names"])
        self.roi_names = list(frags[0]["roi_names"])
        self.parcel_names = list(frags[0]["parcel_names"])
        self.sfreq = shards.sfreq
        if cfg.modality == "parcels" and not self.parcel_names:
            raise ValueError(
                f"{where}: reader.modality='parcels' but the shards hold no parcels; re-run "
                "`brainxl shard --source-recon` or use modality='sensors'"
            )
        if cfg.modality == "sensors" and not self.ch_names:
            raise ValueError(f"{where}: the shards hold no sensor channels; use modality='parcels'")
        sharding = shards.settings.get("sharding", {})
        need = cfg.window_s + max(cfg.lag_s, 0.0)
        if sharding.get("lead_in_s", need) + 1e-9 < need:
            raise ValueError(
                f"{where}: segments keep {sharding['lead_in_s']} s of lead-in but windows need "
                f"{need} s (window_s + lag_s); re-shard with sharding.lead_in_s >= {need}"
            )
        if sharding.get("bold_lead_trs", cfg.n_targets) < cfg.n_targets - 1:
            raise ValueError(
                f"{where}: segments keep {sharding['bold_lead_trs']} earlier BOLD frames but "
                f"n_targets={cfg.n_targets} needs {cfg.n_targets - 1}; re-shard with "
                f"sharding.bold_lead_trs >= {cfg.n_targets - 1}"
            )
        self.window = int(round(cfg.window_s * self.sfreq))
        self.norm = norm
        for name in ("ephys_norm", "bold_norm"):
            if getattr(cfg, name) not in NORM_SCOPES:
                raise ValueError(
                    f"reader.{name}={getattr(cfg, name)!r}; choose one of {', '.join(NORM_SCOPES)}"
                )
        scoped = cfg.ephys_norm == "subject" or cfg.bold_norm == "subject"
        # Per-subject statistics come from the manifest: each subject only its own.
        self._own_norm = {s: shards.fold_statistics([s]) for s in self.subjects if scoped}
        if norm is not None:
            for name, rows in (("ephys", self.ch_names), ("bold", self.roi_names)):
                if len(getattr(norm, f"{name}_mean")) != len(rows):
                    raise ValueError(
                        f"norm {name} statistics have {len(getattr(norm, f'{name}_mean'))} rows "
                        f"but {where} has {len(rows)}; compute them with "
                        "ShardSet.fold_statistics(training subjects)"
                    )
        self.shards: list[dict[str, Any]] = []
        self.n_windows, self.skipped_trs = 0, 0
        for s, frag in zip(self.subjects, frags):
            for entry in frag["shards"]:
                counts = []
                for desc in entry["samples"]:
                    wins, skipped = segment_windows(desc, self.window, cfg.lag_s, cfg.n_targets)
                    counts.append(len(wins))
                    self.skipped_trs += skipped
                if sum(counts) == 0:  # never hand a worker a shard without windows
                    continue
                self.shards.append(
                    {
                        "path": str(self.root / entry["path"]),
                        "subject": s,
                        "n_samples": entry["n_samples"],
                        "useful": [c > 0 for c in counts],  # samples that yield windows
                        "keys": [d["key"] for d in entry["samples"]],
                        "meta_sums": [d.get(META_CHECKSUM_KEY) for d in entry["samples"]],
                        "n_windows": sum(counts),
                    }
                )
                self.n_windows += sum(counts)
        if self.n_windows == 0:
            raise ValueError(f"{where}: no complete windows for subjects {self.subjects}")
        self.epoch_windows = epoch_windows
        self.batch_size = cfg.batch_size
        self.num_workers = 0
        self.epoch = 0
        self._skip_batches = 0
        self._errors = multiprocessing.get_context().Value("i", 0)
        self.checksums = shards.has_checksums
        shards.warn_if_unchecked()

    # ---------------------------------------------------------------- bookkeeping
    def batches_per_epoch(self) -> int:
        """Batches each rank yields per epoch (the same on every rank)."""
        total = self.epoch_windows if self.epoch_windows is not None else self.n_windows
        n = total // self.world_size // self.batch_size
        if n < 1:
            raise ValueError(
                f"{self.root}: {total} windows cannot fill one batch of {self.batch_size} on "
                f"each of {self.world_size} ranks; lower the batch size or add subjects"
            )
        return n

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reshuffles deterministically); resets any mid-epoch resume."""
        self.epoch = int(epoch)
        self._skip_batches = 0

    @property
    def skipped_errors(self) -> int:
        """Corrupt samples or shards skipped so far (``on_error='skip'``), over all workers."""
        return int(self._errors.value)

    def state_dict(self, batches_consumed: int = 0) -> dict[str, int]:
        """The data position: epoch and batches already consumed in it."""
        return {
            "epoch": self.epoch,
            "batches_consumed": int(batches_consumed),
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state['batches_consumed']`` of ``state['epoch']``.

        The resumed stream is identical to the uninterrupted one when world size, number
        of workers, seed and batch size are unchanged; otherwise a ValueError.
        """
        for k in ("world_size", "num_workers", "seed"):
            if k in state and state[k] != getattr(self, k):
                raise ValueError(
                    f"data state was saved with {k}={state[k]} but this run has "
                    f"{getattr(self, k)}; resume with the same {k} (or start the epoch afresh)"
                )
        self.epoch = int(state["epoch"])
        self._skip_batches = int(state.get("batches_consumed", 0))

    # ---------------------------------------------------------------- streaming
    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.cfg.heap_reuse:
            keep_freed_memory()
        info = get_worker_info()
        nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        B, S = self.batches_per_epoch(), self._skip_batches
        v = (wid + S) % nw  # virtual worker: DataLoader round-robin continues at batch S
        mine = len(range(v, B, nw))
        done = len(range(v, min(S, B), nw))
        bs = self.batch_size
        rng = random.Random(_seed(self.seed, self.epoch, self.rank, v, 1))
        pipe = wds.DataPipeline(
            lambda: self._windows(v, nw),
            wds.shuffle(
                max(self.cfg.shuffle_buffer, 1), initial=max(self.cfg.shuffle_buffer, 1), rng=rng
            ),
        )
        yield from islice(iter(pipe), done * bs, mine * bs)

    def every_window(self) -> Iterator[dict[str, Any]]:
        """Every window of the selected subjects once, in manifest order, in this process.

        For evaluation: no shuffling, no DataLoader workers and no batch-size rounding (the
        training stream's ``batches_per_epoch`` drops the windows that do not fill a batch).
        With ``world_size > 1`` rank ``r`` gets the windows ``i`` with ``i % world_size == r``
        (counts may differ by one); the union over ranks is every window once.

        Yields
        ------
        dict
            One window, as the training stream yields it (``ephys``, ``bold``, optional
            ``parcels``, ``subject``, ``tr_index``, ``key``).
        """
        i = 0
        for shard in self.shards:
            for item in self._shard_samples(shard, 1, 0, 0):
                if i % self.world_size == self.rank:
                    yield item
                i += 1

    def _units(self, pass_: int, v: int, nw: int) -> tuple[list[dict[str, Any]], int, int]:
        """This worker's shards of one pass; (shards, sample stride, sample phase)."""
        order = list(self.shards)
        random.Random(_seed(self.seed, self.epoch, pass_, 2)).shuffle(order)
        if len(order) >= self.world_size * nw:  # shard-level: split_by_node, split_by_worker
            part = list(islice(islice(order, self.rank, None, self.world_size), v, None, nw))
            return part, 1, 0
        return order, self.world_size * nw, self.rank * nw + v  # sample-level

    def _windows(self, v: int, nw: int) -> Iterator[dict[str, Any]]:
        pass_ = 0
        while True:
            shards, stride, phase = self._units(pass_, v, nw)
            produced = 0
            index = 0  # global sample index of the pass (sample-level split)
            for shard in shards:
                for item in self._shard_samples(shard, stride, phase, index):
                    produced += 1
                    yield item
                index += sum(shard["useful"])
            if produced == 0:
                raise ShardError(
                    str(self.root),
                    "",
                    f"rank {self.rank} worker {v}: a full pass over its data gave no windows "
                    f"({self.skipped_errors} corrupt samples/shards skipped); run "
                    "`brainxl shard --verify` and re-shard, or use fewer DataLoader workers",
                )
            pass_ += 1

    def _fail(self, err: ShardError) -> None:
        if self.cfg.on_error == "fail":
            raise err
        with self._errors.get_lock():
            self._errors.value += 1
        log.warning("skipping corrupt shard data: %s", err)

    def _shard_samples(
        self, shard: dict[str, Any], stride: int, phase: int, first: int
    ) -> Iterator[dict[str, Any]]:
        path = shard["path"]
        n, j = 0, first  # samples read; global index of the next useful sample
        useful = shard["useful"]
        try:
            for key, members in iter_tar_samples(path):
                n += 1
                if n > len(useful) or not useful[n - 1]:
                    continue
                j += 1
                if stride > 1 and (j - 1) % stride != phase:
                    continue
                try:
                    if key != shard["keys"][n - 1]:
                        raise ShardError(
                            path,
                            key,
                            f"sample {n} should be {shard['keys'][n - 1]} by the manifest "
                            "(altered shard); run `brainxl shard --verify` and re-shard",
                        )
                    meta = check_sample(
                        path,
                        key,
                        members,
                        meta_checksum=shard["meta_sums"][n - 1],
                        require_checksums=self.checksums,
                    )
                except ShardError as err:
                    self._fail(err)
                    continue
                yield from self._cut(meta, members, shard["subject"])
        except ShardError as err:
            self._fail(err)
            return
        if n != shard["n_samples"]:
            self._fail(
                ShardError(
                    path,
                    "",
                    f"{n} samples but the manifest lists {shard['n_samples']} "
                    "(truncated shard); run `brainxl shard --verify`",
                )
            )

    def _stats(self, scope: str, subject: str) -> NormStats | None:
        if scope == "subject":
            return self._own_norm[subject]
        return self.norm if scope == "fold" else None

    def _cut(self, meta: dict[str, Any], members: dict[str, bytes], subject: str):
        from brainxl.shards import npy

        cfg, W, nt = self.cfg, self.window, self.cfg.n_targets
        bold = npy.decode(members["bold.npy"])
        if cfg.modality == "parcels":
            sig = npy.decode(members["parcels.npy"])
        ephys = npy.decode(members["ephys.npy"])
        ephys_stats = self._stats(cfg.ephys_norm, subject)
        if ephys_stats is not None:
            ephys = (ephys - ephys_stats.ephys_mean[:, None]) / ephys_stats.ephys_std[:, None]
            if cfg.modality == "parcels" and ephys_stats.parcels_mean is not None:
                sig = (sig - ephys_stats.parcels_mean[:, None]) / ephys_stats.parcels_std[:, None]
        bold_stats = self._stats(cfg.bold_norm, subject)
        if bold_stats is not None:
            bold = (bold - bold_stats.bold_mean[:, None]) / bold_stats.bold_std[:, None]
        ephys_t = torch.from_numpy(ephys)
        bold_t = torch.from_numpy(bold)
        sig_t = torch.from_numpy(sig) if cfg.modality == "parcels" else None
        windows, _ = segment_windows(meta, W, cfg.lag_s, nt)
        key = meta["key"]
        for k, a, b in windows:
            item = {
                "ephys": ephys_t[:, a : a + W],
                "bold": bold_t[:, b + nt - 1] if nt == 1 else bold_t[:, b : b + nt],
                "subject": subject,
                "tr_index": k,
                "key": key,
            }
            if sig_t is not None:
                item["parcels"] = sig_t[:, a : a + W]
            yield item


def collate_windows(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch window dicts: tensors stacked, ints to a tensor, strings to lists.

    Windows are strided views into their segment; numpy's row copy stacks them about
    three times faster than ``torch.stack`` on such views. In a DataLoader worker the
    batch is written straight into shared memory, as ``default_collate`` does.
    """
    in_worker = get_worker_info() is not None
    out: dict[str, Any] = {}
    for k, v0 in items[0].items():
        if isinstance(v0, torch.Tensor):
            shape = (len(items), *v0.shape)
            if in_worker:
                storage = v0._typed_storage()._new_shared(int(np.prod(shape)), device=v0.device)
                t = v0.new(storage).resize_(*shape)
            else:
                t = torch.empty(shape, dtype=v0.dtype)
            a = t.numpy()
            for i, item in enumerate(items):
                a[i] = item[k].numpy()
            out[k] = t
        elif isinstance(v0, int):
            out[k] = torch.tensor([item[k] for item in items])
        else:
            out[k] = [item[k] for item in items]
    return out


class WindowLoader:
    """A DataLoader over a :class:`WindowDataset` that knows its position in the epoch.

    Iterating yields exactly ``len(loader)`` batches (the same on every rank); ``state_dict``
    records the epoch and the batches consumed so far, ``load_state_dict`` resumes there.
    """

    def __init__(
        self, dataset: WindowDataset, batch_size: int, num_workers: int, pin_memory: bool = False
    ) -> None:
        self.dataset = dataset
        dataset.batch_size = int(batch_size)
        dataset.num_workers = int(num_workers)
        self._consumed = 0
        self._loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=collate_windows,
            drop_last=False,  # every worker yields whole batches only
            persistent_workers=False,  # workers see the current epoch and resume point
            pin_memory=pin_memory,
        )

    def __len__(self) -> int:
        return self.dataset.batches_per_epoch() - self.dataset._skip_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._consumed = self.dataset._skip_batches
        for batch in self._loader:
            self._consumed += 1
            yield batch
        self.dataset._skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate next (deterministic reshuffle)."""
        self.dataset.set_epoch(epoch)
        self._consumed = 0

    def state_dict(self) -> dict[str, int]:
        """Epoch, batches consumed in it, and the settings an exact resume needs."""
        return self.dataset.state_dict(self._consumed)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at the batch after the last consumed one of the saved epoch."""
        self.dataset.load_state_dict(state)
        self._consumed = self.dataset._skip_batches


def make_loader(
    dataset: WindowDataset,
    batch_size: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> WindowLoader:
    """Batch a :class:`WindowDataset`: ``dataset.batches_per_epoch()`` batches on every rank.

    Parameters
    ----------
    dataset : WindowDataset
    batch_size : int, optional
        Default ``dataset.cfg.batch_size``.
    num_workers : int
        DataLoader worker processes (on 2 cores, 0 or 1 is often fastest).
    pin_memory : bool
        Page-locked batches for faster host-to-GPU copies.

    Returns
    -------
    loader : WindowLoader
        Batches are dicts: ``ephys`` (B, C, W), ``bold`` (B, R) or (B, R, n_targets),
        optional ``parcels`` (B, P, W), ``tr_index`` (B,), ``subject``/``key`` lists of str.
    """
    return WindowLoader(dataset, batch_size or dataset.cfg.batch_size, num_workers, pin_memory)
