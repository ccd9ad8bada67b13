"""EEG-only shards: recordings without BOLD cut into segments for pretraining.

Same container as translation shards (:mod:`shards.writer`): per-subject tar files written
as ``.tar.tmp`` and renamed, per-member xxh3 checksums in each ``meta.json``
(:mod:`shards.tarformat`), a subject fragment written atomically after its shards and a
``manifest.json`` written last. A sample is ``<key>.ephys.npy`` (float32, channels x
samples, microvolts at ``preprocess.sfreq``) plus ``<key>.meta.json``; recordings are cut
end to end into ``sharding.segment_s`` pieces (the last may be shorter), so every
preprocessed sample is stored once. Each recording's entry in the subject fragment's
``runs`` keeps its per-channel ``ephys_sums`` (:func:`shards.stats.row_sums`), so a
pretraining stream can z-score it channel by channel. The manifest says ``"kind": "eeg-only"``
(:data:`shards.manifest.KIND_EEG_ONLY`); see :func:`shards.manifest.build_eeg_manifest`
for the fields it adds (montages, native rates, sample counts per subject and dataset).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from brainxl.shards.config import IngestConfig, ShardingConfig
from brainxl.shards.ingest.eeg_only import EEGSource, load_subject, resolve_source, unmapped_report
from brainxl.shards.ingest.recording import EEGRecording
from brainxl.shards.manifest import (
    FORMAT_VERSION,
    FRAGMENT_NAME,
    KIND_EEG_ONLY,
    write_json_atomic,
)
from brainxl.shards.stats import row_sums
from brainxl.shards.writer import SubjectShards, check_subject_recordings, run_entry, shard_dataset

#: ``ShardingConfig`` fields of translation shards that EEG-only shards ignore.
TRANSLATION_ONLY = ("segment_trs", "lead_in_s", "bold_lead_trs")
#: Statistics each recording's ``runs`` entry keeps (see :func:`shards.stats.row_sums`).
RUN_STATS = ("ephys_sums",)
#: Fields of an EEG-only sample's ``meta.json`` copied into its manifest descriptor.
EEG_DESC_KEYS = ("key", "recording", "offset", "n_ephys", "sfreq")


def _distinct(lists: Sequence[list[str]]) -> list[list[str]]:
    out: list[list[str]] = []
    for names in lists:
        if list(names) not in out:
            out.append(list(names))
    return out


def write_eeg_subject(
    recordings: Sequence[EEGRecording],
    root: str | Path,
    cfg: ShardingConfig,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one subject's EEG-only shards and fragment.

    Parameters
    ----------
    recordings : sequence of EEGRecording
        All recordings of one subject (validated here); they may differ in montage and
        native rate but share the stored rate.
    root : path
        The shard root; shards go to ``root/sub-<subject>/``.
    cfg : ShardingConfig
        ``segment_s`` and ``max_shard_bytes``.
    settings : dict, optional
        Recorded in the fragment; a re-run redoes the subject when they differ.

    Returns
    -------
    fragment : dict
        What was written to ``root/sub-<subject>/subject.json``.
    """
    if cfg.segment_s <= 0:
        raise ValueError(f"sharding.segment_s={cfg.segment_s}: must be positive (seconds)")
    subject = check_subject_recordings(recordings, root, "write_eeg_subject")
    first = recordings[0]
    for rec in recordings:
        src = rec.source_files.get("ephys", rec.key)
        if rec.sfreq != first.sfreq:
            raise ValueError(
                f"{src}: stored at {rec.sfreq:g} Hz but {first.source_files.get('ephys')} at "
                f"{first.sfreq:g} Hz (same subject sub-{subject}); resample both to one rate"
            )
    keys = [r.key for r in recordings]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"sub-{subject}: several recordings share the key(s) {dup}; rename them")
    step = max(1, int(round(cfg.segment_s * first.sfreq)))
    runs = []
    with SubjectShards(root, subject, cfg.max_shard_bytes) as out:
        for rec in recordings:
            n = rec.ephys.shape[1]
            n_seg = 0
            for i, start in enumerate(range(0, n, step)):
                seg = rec.ephys[:, start : start + step]
                key = f"{rec.key}_seg-{i:04d}"
                meta = {
                    "key": key,
                    "kind": KIND_EEG_ONLY,
                    "recording": rec.key,
                    "subject": subject,
                    "session": rec.session,
                    "task": rec.task,
                    "run": rec.run,
                    "dataset": rec.dataset,
                    "sfreq": float(rec.sfreq),
                    "native_sfreq": float(rec.native_sfreq),
                    "ch_names": list(rec.ch_names),
                    "ch_types": list(rec.ch_types),
                    "offset": int(start),
                    "n_ephys": int(seg.shape[1]),
                }
                out.write_sample(key, {"ephys": seg}, meta, EEG_DESC_KEYS)
                n_seg += 1
            runs.append(
                run_entry(
                    rec,
                    n_segments=n_seg,
                    n_ephys=int(n),
                    duration_s=float(n / rec.sfreq),
                    native_sfreq=float(rec.native_sfreq),
                    native_n_samples=int(rec.native_n_times),
                    ch_names=list(rec.ch_names),
                    dropped_channels=list(rec.dropped_channels),
                    ephys_sums=row_sums(rec.ephys),
                )
            )
    shards, folder = out.shards, out.folder
    montages = _distinct([r.ch_names for r in recordings])
    fragment = {
        "subject": subject,
        "version": FORMAT_VERSION,
        "kind": KIND_EEG_ONLY,
        "dataset": first.dataset,
        "sessions": sorted({r.session for r in recordings if r.session}),
        "tasks": sorted({r.task for r in recordings if r.task}),
        "runs": runs,
        "sfreq": float(first.sfreq),
        "native_sfreqs": sorted({float(r.native_sfreq) for r in recordings}),
        "montages": montages,
        "ch_names": montages[0] if len(montages) == 1 else None,
        "ch_types": list(first.ch_types) if len(montages) == 1 else None,
        "roi_names": [],
        "parcel_names": [],
        "tr": None,
        "shards": shards,
        "n_samples": sum(s["n_samples"] for s in shards),
        "n_ephys": sum(r["n_ephys"] for r in runs),
        "n_trs": 0,
        "hours": sum(r["duration_s"] for r in runs) / 3600.0,
        "settings": dict(settings or {}),
    }
    write_json_atomic(folder / FRAGMENT_NAME, fragment)
    return fragment


def _load(source: EEGSource, ingest: IngestConfig, subject: str) -> list[EEGRecording]:
    return load_subject(source, subject, ingest)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def shard_eeg(
    src: str | Path,
    out: str | Path,
    ingest: IngestConfig | None = None,
    cfg: ShardingConfig | None = None,
    *,
    dataset: str = "",
    progress: bool = True,
    report: Callable[[str], None] | None = _stderr,
) -> dict[str, Any]:
    """Shard EEG without BOLD (a BIDS folder or a glob of recordings) into ``out``.

    Parameters
    ----------
    src : str or Path
        BIDS dataset folder, one recording, or a glob (``'recs/**/*.edf'``); see
        :mod:`shards.ingest.eeg_only`.
    out : path
        Output folder (``manifest.json`` with ``"kind": "eeg-only"``).
    ingest : IngestConfig, optional
        Preprocessing (BOLD, sync and source settings are not used).
    cfg : ShardingConfig, optional
        ``segment_s``, ``max_shard_bytes``, ``workers``.
    dataset : str
        Dataset name in the manifest (default: the folder's name).
    progress : bool
        Show a progress bar.
    report : callable or None
        Receives one line per file and channel dropped for having no vocabulary entry
        (default: printed to stderr).

    Returns
    -------
    manifest : dict

    Raises
    ------
    ValueError
        (``IngestError`` and subclasses) for bad input, naming the file or pattern; a
        failing subject is named with its reason (see :func:`shards.writer.shard_dataset`).
    """
    ingest = ingest or IngestConfig()
    cfg = cfg or ShardingConfig()
    if ingest.source.enabled:
        raise ValueError(
            "source reconstruction (--source-recon / ingest.source.enabled) is not available "
            "for EEG-only shards; drop it"
        )
    source = resolve_source(src, ingest, dataset)
    settings = {
        "kind": KIND_EEG_ONLY,
        "dataset": source.dataset,
        "ingest": {"preprocess": asdict(ingest.preprocess), "tasks": list(ingest.tasks)},
        "run_stats": list(RUN_STATS),  # folders written without them redo their subjects
    }
    manifest = shard_dataset(
        out,
        source.subjects,
        partial(_load, source, ingest),
        cfg,
        source=str(src),
        settings=settings,
        progress=progress,
        write=write_eeg_subject,
        unused=TRANSLATION_ONLY,
    )
    if report is not None:
        for line in unmapped_report(list(manifest["subjects"].values())):
            report(line)
    return manifest
