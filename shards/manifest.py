"""The dataset manifest: per-subject fragments combined into ``OUT/manifest.json``.

Layout of a shard folder::

    OUT/manifest.json                    the whole dataset (written last, atomically)
    OUT/sub-01/sub-01-000000.tar         shards of one subject
    OUT/sub-01/subject.json              that subject's fragment (written after its shards)

A fragment records the subject's runs, shards (path relative to OUT, bytes, sha256, sample
count and a descriptor per sample so a reader can count windows without opening a tar,
with the checksum of the sample's ``meta.json``),
channel/ROI/parcel names, sampling rate, TR and normalisation sums
(:mod:`shards.stats`). The manifest holds every fragment under ``subjects`` plus the
dataset-wide values; subjects must agree on sfreq, ROI and parcel names. Readers open a
shard folder as one :class:`shards.shardset.ShardSet`, which parses the manifest once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from brainxl.files import atomic_write_text

MANIFEST_NAME = "manifest.json"
FRAGMENT_NAME = "subject.json"
FORMAT_NAME = "brainxl-shards"
#: 2: every sample carries checksums of its members (``shards.tarformat``); 1: none.
FORMAT_VERSION = 2
#: ``manifest["kind"]`` of shards holding electrophysiology only (``brainxl shard
#: --eeg-only``, for pretraining); a manifest without ``kind`` holds translation shards.
KIND_EEG_ONLY = "eeg-only"
KIND_TRANSLATION = "translation"


def manifest_kind(manifest: Mapping[str, Any]) -> str:
    """:data:`KIND_EEG_ONLY` or :data:`KIND_TRANSLATION` (a manifest without ``kind``)."""
    return str(manifest.get("kind", KIND_TRANSLATION))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1))


def subject_dir(root: str | Path, subject: str) -> Path:
    """Folder of one subject's shards: ``root/sub-<subject>``."""
    return Path(root) / f"sub-{subject}"


def read_fragment(root: str | Path, subject: str) -> dict[str, Any] | None:
    """Return a subject's fragment if it exists and parses, else None."""
    path = subject_dir(root, subject) / FRAGMENT_NAME
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Load ``root/manifest.json``.

    Parameters
    ----------
    root : path
        A folder written by ``brainxl shard`` (or the manifest file itself).

    Returns
    -------
    manifest : dict
        See the module docstring.
    """
    path = Path(root)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no shard manifest; run `brainxl shard BIDS_DIR {path.parent}` first"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); re-run `brainxl shard`") from None
    if manifest.get("format") != FORMAT_NAME or "subjects" not in manifest:
        raise ValueError(f"{path}: not a brainxl shard manifest; re-run `brainxl shard`")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: manifest version {manifest['version']} is newer than this brainxl "
            f"understands ({FORMAT_VERSION}); upgrade brainxl"
        )
    return manifest


def _agree(fragments: Sequence[Mapping[str, Any]], field: str) -> tuple[bool, Any]:
    values = [f[field] for f in fragments]
    return all(v == values[0] for v in values), values[0] if values else None


def build_manifest(
    fragments: Iterable[Mapping[str, Any]],
    *,
    source: str = "",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Combine subject fragments into a manifest, checking that they can train together.

    Parameters
    ----------
    fragments : iterable of dict
        One per subject (from :func:`shards.writer.write_subject`).
    source : str
        The BIDS folder the shards came from.
    settings : dict, optional
        The sharding and ingest settings, stored for provenance.

    Returns
    -------
    manifest : dict

    Raises
    ------
    ValueError
        If subjects disagree on the sampling rate or the ROI/parcel names.
    """
    frags = sorted(fragments, key=lambda f: f["subject"])
    if not frags:
        raise ValueError(f"{source}: no subjects were sharded; check the BIDS folder and filters")
    kinds = {manifest_kind(f) for f in frags}
    if len(kinds) > 1:
        raise ValueError(
            f"{source}: EEG-only and translation subjects in one shard folder; shard them "
            "into separate folders"
        )
    if kinds == {KIND_EEG_ONLY}:
        return build_eeg_manifest(frags, source=source, settings=settings)
    for field, fix in (
        ("sfreq", "set preprocess.sfreq so every subject is resampled to one rate"),
        ("roi_names", "use one atlas (bold.atlas / bold.desc) for every subject"),
        ("parcel_names", "use one parcellation (source.parcellation) for every subject"),
    ):
        same, _ = _agree(frags, field)
        if not same:
            groups: dict[str, list[str]] = {}
            for f in frags:
                groups.setdefault(json.dumps(f[field])[:60], []).append(f["subject"])
            raise ValueError(
                f"{source}: subjects disagree on {field} ({list(groups.values())}); {fix}"
            )
    same_ch, ch_names = _agree(frags, "ch_names")
    trs = sorted({float(f["tr"]) for f in frags})
    total = {
        "n_subjects": len(frags),
        "n_runs": sum(len(f["runs"]) for f in frags),
        "n_samples": sum(f["n_samples"] for f in frags),
        "n_trs": sum(f["n_trs"] for f in frags),
        "hours": sum(f["hours"] for f in frags),
        "bytes": sum(s["bytes"] for f in frags for s in f["shards"]),
        "n_shards": sum(len(f["shards"]) for f in frags),
    }
    return {
        "format": FORMAT_NAME,
        # a fragment from before member checksums keeps the whole set at version 1
        "version": min(int(f.get("version", 1)) for f in frags),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "settings": dict(settings or {}),
        "sfreq": frags[0]["sfreq"],
        "tr": trs[0] if len(trs) == 1 else None,
        "trs": trs,
        "ch_names": ch_names if same_ch else None,
        "roi_names": frags[0]["roi_names"],
        "parcel_names": frags[0]["parcel_names"],
        "totals": total,
        "subjects": {f["subject"]: dict(f) for f in frags},
    }


def build_eeg_manifest(
    fragments: Iterable[Mapping[str, Any]],
    *,
    source: str = "",
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Combine EEG-only subject fragments (``shards.eeg_writer``) into a manifest.

    Beside the fields every manifest has (``format``, ``version``, ``sfreq``,
    ``subjects``, ``totals``; ``roi_names``/``parcel_names`` empty, ``tr`` None) it holds
    ``kind`` (:data:`KIND_EEG_ONLY`), ``montages`` (each distinct channel list with its
    subjects), ``native_sfreqs`` and ``datasets``: per dataset its subjects, montages,
    native sampling rates, stored samples (``n_ephys``) and hours. Each subject fragment
    holds ``dataset``, ``montages``, ``native_sfreqs``, ``n_ephys`` and per run the
    channels, the dropped unmappable channels, native rate and sample counts.

    Raises
    ------
    ValueError
        If subjects were stored at different sampling rates.
    """
    frags = sorted(fragments, key=lambda f: f["subject"])
    if not frags:
        raise ValueError(f"{source}: no subjects were sharded; check the input and filters")
    rates = sorted({float(f["sfreq"]) for f in frags})
    if len(rates) > 1:
        raise ValueError(
            f"{source}: subjects stored at different rates {rates}; set preprocess.sfreq so "
            "every recording is resampled to one rate"
        )
    montages: list[dict[str, Any]] = []
    datasets: dict[str, dict[str, Any]] = {}
    for f in frags:
        d = datasets.setdefault(
            f["dataset"],
            {"subjects": [], "montages": [], "native_sfreqs": [], "n_ephys": 0, "hours": 0.0},
        )
        d["subjects"].append(f["subject"])
        d["n_ephys"] += int(f["n_ephys"])
        d["hours"] += float(f["hours"])
        d["native_sfreqs"] = sorted(set(d["native_sfreqs"]) | set(f["native_sfreqs"]))
        for names in f["montages"]:
            if names not in d["montages"]:
                d["montages"].append(names)
            entry = next((m for m in montages if m["ch_names"] == names), None)
            if entry is None:
                entry = {"ch_names": list(names), "subjects": []}
                montages.append(entry)
            if f["subject"] not in entry["subjects"]:
                entry["subjects"].append(f["subject"])
    total = {
        "n_subjects": len(frags),
        "n_runs": sum(len(f["runs"]) for f in frags),
        "n_samples": sum(f["n_samples"] for f in frags),
        "n_ephys": sum(int(f["n_ephys"]) for f in frags),
        "n_trs": 0,
        "hours": sum(f["hours"] for f in frags),
        "bytes": sum(s["bytes"] for f in frags for s in f["shards"]),
        "n_shards": sum(len(f["shards"]) for f in frags),
    }
    return {
        "format": FORMAT_NAME,
        "version": min(int(f.get("version", 1)) for f in frags),
        "kind": KIND_EEG_ONLY,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "settings": dict(settings or {}),
        "sfreq": rates[0],
        "tr": None,
        "trs": [],
        "ch_names": montages[0]["ch_names"] if len(montages) == 1 else None,
        "roi_names": [],
        "parcel_names": [],
        "montages": montages,
        "native_sfreqs": sorted({r for f in frags for r in f["native_sfreqs"]}),
        "datasets": datasets,
        "totals": total,
        "subjects": {f["subject"]: dict(f) for f in frags},
    }


def select_subjects(
    manifest: Mapping[str, Any],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    where: str = "the manifest",
) -> list[str]:
    """Subjects of the manifest after include/exclude lists (labels with or without ``sub-``).

    Raises
    ------
    ValueError
        If a listed subject is unknown or nothing is left.
    """
    known = sorted(manifest["subjects"])

    def norm(names: Sequence[str]) -> list[str]:
        out = [n[4:] if n.startswith("sub-") else n for n in names]
        bad = [n for n in out if n not in manifest["subjects"]]
        if bad:
            raise ValueError(
                f"{where}: subjects {bad} are not in the shards (known: {known}); "
                "fix include_subjects/exclude_subjects"
            )
        return out

    inc, exc = norm(include), set(norm(exclude))
    chosen = [s for s in (inc or known) if s not in exc]
    if not chosen:
        raise ValueError(f"{where}: include/exclude lists leave no subjects")
    return chosen
