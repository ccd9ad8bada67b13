"""Whole-recording time series read back from the shards (segments stitched per run).

Segments overlap (each keeps a lead-in before its first TR); here every run sample is
taken once, so consecutive segments of a recording are stitched into one array (a new
array starts where the stored data has a gap). Used for statistics over whole recordings,
such as SAMBA's functional-connectivity graphs from a fold's training subjects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from brainxl.shards import npy
from brainxl.shards.tarformat import META_CHECKSUM_KEY, check_sample, iter_tar_samples

if TYPE_CHECKING:
    from brainxl.shards.shardset import ShardSet

MODALITIES = ("ephys", "parcels", "bold")


def read_timeseries(
    shards: ShardSet,
    subjects: Sequence[str],
    modalities: Sequence[str],
    *,
    norm: Any = None,
    ephys_hz: float = 0.0,
    max_seconds: float = 0.0,
) -> dict[str, list[np.ndarray]]:
    """Contiguous time series of the subjects' recordings (``ShardSet.recording_timeseries``).

    Every sample read is checked (members, shapes, checksums); a bad one raises
    :class:`~brainxl.shards.errors.ShardError` naming the shard file and the key.
    """
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        raise ValueError(f"modalities must be among 'ephys', 'parcels', 'bold', got {modalities}")
    step = max(1, int(shards.sfreq // ephys_hz)) if ephys_hz > 0 else 1
    out: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    for subject in subjects:
        frag = shards.fragment(subject)
        segments: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
        seconds = 0.0
        for entry in frag["shards"]:
            if 0 < max_seconds <= seconds:
                break
            path = str(shards.root / entry["path"])
            descs = entry.get("samples", [])
            for i, (key, members) in enumerate(iter_tar_samples(path)):
                if 0 < max_seconds <= seconds:
                    break
                desc = descs[i] if i < len(descs) else {}
                meta = check_sample(
                    path,
                    key,
                    members,
                    meta_checksum=desc.get(META_CHECKSUM_KEY),
                    require_checksums=shards.has_checksums,
                )
                data = {m: _decode_member(members, m, path, key) for m in modalities}
                rec = meta.get("recording", key.rsplit("_seg-", 1)[0])
                segments.setdefault(rec, []).append((int(meta["segment"]), meta, data))
                seconds += float(meta["n_trs"]) * float(meta["tr"])
        for segs in segments.values():
            segs.sort(key=lambda s: s[0])
            for m in modalities:
                first = "bold_first_tr" if m == "bold" else "ephys_offset"
                parts = [(int(meta[first]), data[m]) for _, meta, data in segs]
                out[m].extend(stitch(parts, 1 if m == "bold" else step))
    if norm is not None:
        for m in modalities:
            stats = norm.get(m)
            if stats is not None:
                mean, std = stats
                out[m] = [((x - mean[:, None]) / std[:, None]).astype(np.float32) for x in out[m]]
    return out


def _decode_member(members: dict[str, Any], modality: str, path: str, key: str) -> np.ndarray:
    name = f"{modality}.npy"
    if name not in members:
        raise ValueError(
            f"{path}: sample {key} has no {name}; re-shard with the modality the model reads "
            "(parcels need `brainxl shard --source-recon`)"
        )
    return npy.decode(members[name])


def stitch(parts: list[tuple[int, np.ndarray]], step: int) -> list[np.ndarray]:
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
