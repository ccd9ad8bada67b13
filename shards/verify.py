"""Re-read every shard against the manifest: presence, size, sha256, sample count, members."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from brainxl.shards import npy
from brainxl.shards.errors import ShardError
from brainxl.shards.manifest import read_manifest

REQUIRED = ("ephys.npy", "bold.npy", "meta.json")
_ZERO_BLOCK = bytes(512)


@dataclass
class Problem:
    """One bad file found by :func:`verify_shards`."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _pax_records(data: bytes) -> dict[str, str]:
    """Parse pax extended-header records (``"<len> key=value\\n"``)."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, np.ndarray | bytearray]]]:
    """Yield ``(key, {suffix: data})`` per sample of a shard, streaming.

    A minimal ustar reader: each header is parsed by :meth:`tarfile.TarInfo.frombuf`
    (checksum verified) and each member is read with one ``readinto`` into a writable
    buffer (``tarfile``'s stream mode reads 10 KiB chunks and joins them, several
    times slower). Members of one key must be adjacent, as :class:`webdataset.TarWriter`
    writes them.

    Raises
    ------
    ShardError
        Naming the file and the key being read when the tar is truncated or corrupt, a
        key repeats, or a member type is unsupported (GNU/pax extensions).
    """
    import tarfile

    key, members = "", {}
    seen: set[str] = set()
    override: dict[str, str] = {}  # pax / GNU long-name values for the next member
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError as err:
        raise ShardError(
            str(path), "", f"cannot open ({err.strerror}); re-run `brainxl shard`"
        ) from None
    try:
        while True:
            header = f.read(512)
            if not header or header == _ZERO_BLOCK:  # end of archive
                break
            if len(header) < 512:
                raise ShardError(str(path), key, "truncated tar header")
            try:
                info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            except tarfile.HeaderError as err:
                raise ShardError(str(path), key, f"corrupt tar header ({err})") from None
            if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE):
                ext = f.read(info.size + (-info.size % 512))[: info.size]
                if len(ext) != info.size:
                    raise ShardError(str(path), key, "truncated extended tar header")
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    override = {"path": ext.rstrip(b"\0").decode("utf-8", "surrogateescape")}
                elif info.type == tarfile.XHDTYPE:
                    override = _pax_records(ext)
                continue
            if override:
                info.name = override.get("path", info.name)
                if "size" in override:
                    info.size = int(override["size"])
                override = {}
            pad = -info.size % 512
            name = info.name.rsplit("/", 1)[-1]
            base, dot, suffix = name.partition(".")
            if not info.isreg() or not dot:
                f.seek(info.size + pad, 1)
                continue
            if base != key:
                if members:
                    yield key, members
                if base in seen:
                    raise ShardError(str(path), base, "key occurs twice (members not adjacent)")
                seen.add(base)
                key, members = base, {}
            # writable buffers (so are arrays decoded from them); big ones not zero-filled
            data = np.empty(info.size, np.uint8) if info.size > 65536 else bytearray(info.size)
            if f.readinto(data) != info.size:
                raise ShardError(str(path), key, f"member {name} is truncated")
            if pad:
                f.seek(pad, 1)
            members[suffix] = data
        if members:
            yield key, members
    except ShardError:
        raise
    except (OSError, ValueError) as err:  # ValueError: garbled pax record
        raise ShardError(str(path), key, f"cannot read ({err})") from None
    finally:
        f.close()


def check_sample(path: str, key: str, members: dict[str, Any]) -> dict[str, Any]:
    """Decode a sample's members and check shapes against its metadata; return the meta.

    Raises
    ------
    ShardError
        If a member is missing, does not decode, or disagrees with the metadata.
    """
    missing = [m for m in REQUIRED if m not in members]
    if missing:
        raise ShardError(path, key, f"missing members {missing} (truncated shard?)")
    try:
        meta = json.loads(members["meta.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(path, key, f"meta.json does not parse ({err})") from None
    try:
        ephys = npy.decode(members["ephys.npy"])
        bold = npy.decode(members["bold.npy"])
        parcels = npy.decode(members["parcels.npy"]) if "parcels.npy" in members else None
    except ValueError as err:
        raise ShardError(path, key, str(err)) from None
    n_bold = meta["first_tr"] + meta["n_trs"] - meta["bold_first_tr"]
    if ephys.shape != (len(meta["ch_names"]), meta["n_ephys"]):
        raise ShardError(path, key, f"ephys shape {ephys.shape} disagrees with meta.json")
    if bold.shape != (len(meta["roi_names"]), n_bold):
        raise ShardError(path, key, f"bold shape {bold.shape} disagrees with meta.json")
    if parcels is not None and parcels.shape != (len(meta["parcel_names"]), meta["n_ephys"]):
        raise ShardError(path, key, f"parcels shape {parcels.shape} disagrees with meta.json")
    return meta


def verify_shards(root: str | Path, deep: bool = True) -> list[Problem]:
    """Check every shard listed in ``root/manifest.json``.

    Parameters
    ----------
    root : path
        A shard folder.
    deep : bool
        Also parse every sample (members present, arrays decode, shapes match metadata,
        keys match the manifest); otherwise only size, checksum and sample count.

    Returns
    -------
    problems : list of Problem
        Empty when everything matches; one entry per bad file otherwise.
    """
    root = Path(root)
    try:
        manifest = read_manifest(root)
    except (FileNotFoundError, ValueError) as err:
        return [Problem(str(root / "manifest.json"), str(err))]
    problems: list[Problem] = []
    for subject, frag in sorted(manifest["subjects"].items()):
        for entry in frag["shards"]:
            path = root / entry["path"]
            if not path.is_file():
                problems.append(Problem(str(path), "missing"))
                continue
            size = path.stat().st_size
            if size != entry["bytes"]:
                problems.append(Problem(str(path), f"size {size} bytes, manifest {entry['bytes']}"))
                continue
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    sha.update(block)
            if sha.hexdigest() != entry["sha256"]:
                problems.append(Problem(str(path), "sha256 checksum differs from the manifest"))
                continue
            try:
                keys = []
                for key, members in iter_tar_samples(path):
                    if deep:
                        check_sample(str(path), key, members)
                    keys.append(key)
            except ShardError as err:
                problems.append(Problem(str(path), f"key {err.key}: {err.reason}"))
                continue
            if len(keys) != entry["n_samples"]:
                problems.append(
                    Problem(str(path), f"{len(keys)} samples, manifest {entry['n_samples']}")
                )
            elif deep and keys != [s["key"] for s in entry.get("samples", [])]:
                problems.append(Problem(str(path), "sample keys differ from the manifest"))
        if not frag["shards"]:
            problems.append(Problem(str(root / f"sub-{subject}"), "subject has no shards"))
    return problems
