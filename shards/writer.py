"""Write recordings into per-subject tar shards plus the dataset manifest.

Each sample (one :class:`~shards.segments.Segment`) is stored as the members
``<key>.ephys.npy``, ``<key>.bold.npy``, optional ``<key>.parcels.npy`` and
``<key>.meta.json`` (raw ``np.save`` bytes, float32; the tar layout and the per-member
checksums are :mod:`shards.tarformat`'s). A shard is written to ``<name>.tar.tmp`` and
renamed when complete; the subject's fragment (``subject.json``) is written atomically
after all its shards, so a re-run skips finished subjects and an interrupted run never
leaves a partial ``.tar`` visible.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from brainxl.shards.config import IngestConfig, ShardingConfig
from brainxl.shards.ingest.recording import Recording
from brainxl.shards.manifest import (
    FORMAT_VERSION,
    FRAGMENT_NAME,
    MANIFEST_NAME,
    build_manifest,
    read_fragment,
    subject_dir,
    write_json_atomic,
)
from brainxl.shards.segments import segment_recording
from brainxl.shards.stats import recording_sums
from brainxl.shards.tarformat import META_CHECKSUM_KEY, TarSampleWriter, sample_members

Loader = Callable[[str], Sequence[Any]]
#: Fields of a translation sample's ``meta.json`` copied into its manifest descriptor.
SAMPLE_DESC_KEYS = (
    "key",
    "first_tr",
    "n_trs",
    "bold_first_tr",
    "tr",
    "sfreq",
    "ephys_offset",
    "n_ephys",
)
#: ``write(recordings, root, cfg, settings) -> fragment``: one subject's shards.
SubjectWriter = Callable[[Sequence[Any], str, ShardingConfig, Mapping[str, Any]], dict[str, Any]]


class _HashingFile:
    """A write-only file wrapper that hashes and counts what goes through it."""

    def __init__(self, f: io.BufferedWriter) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


class ShardSink:
    """Rolls samples into ``sub-XX-NNNNNN.tar`` files of at most ``max_bytes`` each.

    Each file is written as ``<name>.tar.tmp`` and renamed when complete; :meth:`finish`
    returns the manifest entries (path, bytes, sha256, sample descriptors) and
    :meth:`abort` deletes a half-written file.

    Parameters
    ----------
    folder : Path
        The subject's folder.
    subject : str
        Label without ``sub-`` (names the files).
    max_bytes : int
        Start a new file before one would grow past this.
    """

    def __init__(self, folder: Path, subject: str, max_bytes: int) -> None:
        self.folder, self.subject, self.max_bytes = folder, subject, max_bytes
        self.entries: list[dict[str, Any]] = []
        self._file: io.BufferedWriter | None = None
        self._hash: _HashingFile | None = None
        self._tar: Any = None
        self._samples: list[dict[str, Any]] = []
        self._bytes = 0

    def _path(self, i: int) -> Path:
        return self.folder / f"sub-{self.subject}-{i:06d}.tar"

    def _open(self) -> None:
        tmp = self._path(len(self.entries)).with_suffix(".tar.tmp")
        self._file = open(tmp, "wb")  # noqa: SIM115 - closed in _close
        self._hash = _HashingFile(self._file)
        self._tar = TarSampleWriter(self._hash)
        self._samples, self._bytes = [], 0

    def _close(self) -> None:
        assert self._tar is not None and self._file is not None and self._hash is not None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._path(len(self.entries))
        os.replace(final.with_suffix(".tar.tmp"), final)
        self.entries.append(
            {
                "path": f"sub-{self.subject}/{final.name}",
                "bytes": self._hash.size,
                "sha256": self._hash.sha.hexdigest(),
                "n_samples": len(self._samples),
                "samples": self._samples,
            }
        )
        self._tar = self._file = self._hash = None

    def write(self, key: str, members: dict[str, bytes], descriptor: dict[str, Any]) -> None:
        """Append one sample (its members) and its manifest descriptor."""
        size = sum(len(v) + 1024 for v in members.values())
        if self._tar is not None and self._samples and self._bytes + size > self.max_bytes:
            self._close()
        if self._tar is None:
            self._open()
        self._tar.write(key, members)
        self._samples.append(descriptor)
        self._bytes += size

    def finish(self) -> list[dict[str, Any]]:
        """Close the open file; return the entries of every file written."""
        if self._tar is not None:
            self._close()
        return self.entries

    def abort(self) -> None:
        """Close and delete the half-written file, if any."""
        if self._file is not None:
            self._file.close()  # the tmp file is deleted below
            self._path(len(self.entries)).with_suffix(".tar.tmp").unlink(missing_ok=True)
            self._tar = self._file = self._hash = None


def _check_consistent(recs: Sequence[Recording], subject: str) -> None:
    first = recs[0]
    for rec in recs[1:]:
        for field in ("sfreq", "ch_names", "roi_names", "parcel_names"):
            if getattr(rec, field) != getattr(first, field):
                raise ValueError(
                    f"{rec.source_files.get('ephys', rec.key)}: {field} differs from "
                    f"{first.source_files.get('ephys', first.key)} of the same subject "
                    f"sub-{subject}; preprocess both to the same {field}"
                )
        if (rec.parcels is None) != (first.parcels is None):
            raise ValueError(
                f"{rec.source_files.get('ephys', rec.key)}: some runs of sub-{subject} have "
                "parcels and others do not"
            )


def clean_stale(folder: Path) -> list[Path]:
    """Delete ``*.tar.tmp`` and half-written JSON left by an interrupted run; return them."""
    stale = [*folder.glob("*.tar.tmp"), *folder.glob(".*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_subject_recordings(recordings: Sequence[Any], root: str | Path, who: str) -> str:
    """Validate the recordings of one subject before anything is written; return the subject.

    Raises
    ------
    ValueError
        No recordings, recordings of several subjects, or a recording that fails its own
        ``validate()`` (which names its file).
    """
    if not recordings:
        raise ValueError(f"{root}: {who} got no recordings")
    subject = recordings[0].subject
    if any(r.subject != subject for r in recordings):
        raise ValueError(f"{root}: {who} got recordings of several subjects")
    for rec in recordings:
        rec.validate()
    return str(subject)


class SubjectShards:
    """Context manager that writes one subject's shard files all-or-nothing.

    On entry the subject's folder is created and debris of an interrupted run removed; on
    a clean exit the shards are finished (``shards`` holds their entries) and ``*.tar``
    files of an earlier, different run of the subject are deleted; on an exception the
    half-written shards are removed and the earlier ones are left untouched.

    Parameters
    ----------
    root : path
        The shard root.
    subject : str
        Label without ``sub-``.
    max_shard_bytes : int
    """

    def __init__(self, root: str | Path, subject: str, max_shard_bytes: int) -> None:
        self.folder = subject_dir(root, subject)
        self.subject, self.max_shard_bytes = subject, max_shard_bytes
        self.shards: list[dict[str, Any]] = []

    def __enter__(self) -> SubjectShards:
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_stale(self.folder)
        self.sink = ShardSink(self.folder, self.subject, self.max_shard_bytes)
        return self

    def write(self, key: str, members: Mapping[str, bytes], desc: Mapping[str, Any]) -> None:
        """Add one sample (see :meth:`ShardSink.write`)."""
        self.sink.write(key, members, desc)

    def write_sample(
        self,
        key: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        desc_keys: Sequence[str],
    ) -> None:
        """Encode one sample (:func:`~shards.tarformat.sample_members`) and add it.

        Parameters
        ----------
        key : str
            The sample's key (names its tar members).
        arrays : dict of str to ndarray
            Its ``.npy`` members in write order.
        meta : dict
            Its ``meta.json``.
        desc_keys : sequence of str
            The fields of ``meta`` copied into the manifest's sample descriptor (which
            also records the ``meta.json`` checksum).
        """
        members, meta_sum = sample_members(arrays, meta)
        desc = {k: meta[k] for k in desc_keys}
        desc[META_CHECKSUM_KEY] = meta_sum
        self.write(key, members, desc)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            self.sink.abort()
            return False
        try:
            self.shards = self.sink.finish()
        except BaseException:
            self.sink.abort()
            raise
        keep = {Path(s["path"]).name for s in self.shards}
        for old in self.folder.glob("*.tar"):  # shards of an earlier, different run
            if old.name not in keep:
                old.unlink()
        return False


def run_entry(rec: Any, **fields: Any) -> dict[str, Any]:
    """One recording's entry in a subject fragment's ``runs``.

    Parameters
    ----------
    rec : Recording or EEGRecording
        The recording.
    **fields
        What this kind of shard records about it (kept in the order given).

    Returns
    -------
    entry : dict
        ``recording``, ``session``, ``task`` and ``run``, then ``fields``, then
        ``source_files`` and ``assumptions``.
    """
    return {
        "recording": rec.key,
        "session": rec.session,
        "task": rec.task,
        "run": rec.run,
        **fields,
        "source_files": dict(rec.source_files),
        "assumptions": list(rec.assumptions),
    }


def write_subject(
    recordings: Sequence[Recording],
    root: str | Path,
    cfg: ShardingConfig,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one subject's shards and fragment.

    Parameters
    ----------
    recordings : sequence of Recording
        All runs of one subject (validated here).
    root : path
        The shard root; shards go to ``root/sub-<subject>/``.
    cfg : ShardingConfig
    settings : dict, optional
        Settings recorded in the fragment; a re-run redoes the subject when they differ.

    Returns
    -------
    fragment : dict
        What was written to ``root/sub-<subject>/subject.json``.
    """
    subject = check_subject_recordings(recordings, root, "write_subject")
    _check_consistent(recordings, subject)
    runs = []
    with SubjectShards(root, subject, cfg.max_shard_bytes) as out:
        for rec in recordings:
            n_seg = 0
            for seg in segment_recording(rec, cfg.segment_trs, cfg.lead_in_s, cfg.bold_lead_trs):
                arrays = {"ephys": seg.ephys, "bold": seg.bold}
                if seg.parcels is not None:
                    arrays["parcels"] = seg.parcels
                out.write_sample(seg.key, arrays, seg.meta, SAMPLE_DESC_KEYS)
                n_seg += 1
            runs.append(
                run_entry(
                    rec,
                    n_trs=int(rec.bold.shape[1]),
                    n_segments=n_seg,
                    duration_s=float(rec.bold.shape[1] * rec.tr),
                    lead_in=float(rec.lead_in),
                    tr=float(rec.tr),
                )
            )
    shards, folder = out.shards, out.folder
    first = recordings[0]
    trs = sorted({float(r.tr) for r in recordings})
    fragment = {
        "subject": subject,
        "version": FORMAT_VERSION,
        "sessions": sorted({r.session for r in recordings if r.session}),
        "tasks": sorted({r.task for r in recordings}),
        "runs": runs,
        "sfreq": float(first.sfreq),
        "tr": trs[0] if len(trs) == 1 else trs,
        "ch_names": list(first.ch_names),
        "ch_types": list(first.ch_types),
        "roi_names": list(first.roi_names),
        "parcel_names": list(first.parcel_names) if first.parcels is not None else [],
        "shards": shards,
        "n_samples": sum(s["n_samples"] for s in shards),
        "n_trs": sum(r["n_trs"] for r in runs),
        "hours": sum(r["duration_s"] for r in runs) / 3600.0,
        "stats": recording_sums(recordings),
        "settings": dict(settings or {}),
    }
    write_json_atomic(folder / FRAGMENT_NAME, fragment)
    return fragment


def _is_complete(root: Path, subject: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    frag = read_fragment(root, subject)
    if frag is None or frag.get("settings") != json.loads(json.dumps(dict(settings))):
        return None
    if frag.get("version", 1) != FORMAT_VERSION:  # written by another brainxl: redo
        return None
    for s in frag["shards"]:
        p = root / s["path"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            return None
    return frag


def _shard_one(
    loader: Loader,
    write: SubjectWriter,
    subject: str,
    root: str,
    cfg: ShardingConfig,
    settings: dict[str, Any],
) -> dict[str, Any]:
    recs = list(loader(subject))
    if not recs:
        raise ValueError(f"sub-{subject}: no usable runs were found")
    return write(recs, root, cfg, settings)


def shard_dataset(
    root: str | Path,
    subjects: Iterable[str],
    loader: Loader,
    cfg: ShardingConfig,
    *,
    source: str = "",
    settings: Mapping[str, Any] | None = None,
    progress: bool = True,
    write: SubjectWriter | None = None,
    unused: Sequence[str] = ("segment_s",),
) -> dict[str, Any]:
    """Shard every subject (in parallel) and write ``root/manifest.json``.

    Parameters
    ----------
    root : path
        Output folder.
    subjects : iterable of str
        Subject labels without ``sub-``.
    loader : callable
        ``loader(subject) -> list[Recording]``; must be picklable when ``cfg.workers > 1``
        (a module-level function or a ``functools.partial`` of one).
    cfg : ShardingConfig
    source : str
        Recorded in the manifest (the BIDS folder).
    settings : dict, optional
        Extra settings (e.g. the ingest config) recorded in fragments and manifest; a
        subject whose fragment has other settings is re-done.
    progress : bool
        Show a tqdm progress bar on stderr.
    write : callable, optional
        Writes one subject (default :func:`write_subject`, translation shards; EEG-only
        shards pass :func:`shards.eeg_writer.write_eeg_subject`); picklable.
    unused : sequence of str
        ``ShardingConfig`` fields this kind of shard does not depend on (left out of the
        recorded settings, so changing them does not redo subjects).

    Returns
    -------
    manifest : dict

    Raises
    ------
    ValueError
        Naming every subject that failed; finished subjects stay and are skipped next time.
    """
    from tqdm import tqdm

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for folder in [root, *root.glob("sub-*/")]:  # leftovers of an interrupted run
        clean_stale(folder)
    subjects = list(dict.fromkeys(subjects))
    if not subjects:
        raise ValueError(f"{source or root}: no subjects to shard")
    full_settings = {"sharding": asdict(cfg), **dict(settings or {})}
    for name in ("workers", *unused):  # parallelism (and these) do not change the data
        full_settings["sharding"].pop(name, None)
    write = write or write_subject
    fragments: dict[str, dict[str, Any]] = {}
    todo = []
    for s in subjects:
        done = _is_complete(root, s, full_settings)
        if done is not None:
            fragments[s] = done
        else:
            todo.append(s)
    errors: dict[str, str] = {}
    bar = tqdm(
        total=len(subjects),
        initial=len(fragments),
        desc="sharding",
        unit="subject",
        disable=not progress,
        file=sys.stderr,
    )
    if cfg.workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=min(cfg.workers, len(todo))) as pool:
            futures = {
                pool.submit(_shard_one, loader, write, s, str(root), cfg, full_settings): s
                for s in todo
            }
            for fut in as_completed(futures):
                s = futures[fut]
                try:
                    fragments[s] = fut.result()
                except Exception as err:  # collected and reported together below
                    errors[s] = f"{type(err).__name__}: {err}"
                bar.update(1)
    else:
        for s in todo:
            try:
                fragments[s] = _shard_one(loader, write, s, str(root), cfg, full_settings)
            except Exception as err:
                errors[s] = f"{type(err).__name__}: {err}"
            bar.update(1)
    bar.close()
    if errors:
        lines = "\n".join(f"  sub-{s}: {m}" for s, m in sorted(errors.items()))
        raise ValueError(
            f"{source or root}: {len(errors)} subject(s) failed (finished subjects are kept "
            f"and skipped on re-run; fix these and run again):\n{lines}"
        )
    manifest = build_manifest(
        [fragments[s] for s in subjects], source=source, settings=full_settings
    )
    write_json_atomic(root / MANIFEST_NAME, manifest)
    from brainxl.shards.shardset import ShardSet

    ShardSet.forget(root)  # a set opened before in this process is stale now
    return manifest


def shard_bids(
    bids_root: str | Path,
    out: str | Path,
    ingest: IngestConfig | None = None,
    cfg: ShardingConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Shard a BIDS dataset (``shards.ingest`` reads it) into ``out``; see :func:`shard_dataset`."""
    from functools import partial

    from brainxl.shards.ingest.bids import list_subjects, load_subject

    ingest = ingest or IngestConfig()
    cfg = cfg or ShardingConfig()
    subjects = list_subjects(Path(bids_root), ingest)
    return shard_dataset(
        out,
        subjects,
        partial(_load_bids_subject, str(bids_root), ingest, load_subject),
        cfg,
        source=str(bids_root),
        settings={"ingest": asdict(ingest)},
        progress=progress,
    )


def _load_bids_subject(
    bids_root: str, ingest: IngestConfig, load: Callable[..., Sequence[Recording]], subject: str
) -> Sequence[Recording]:
    return load(Path(bids_root), subject, ingest)
