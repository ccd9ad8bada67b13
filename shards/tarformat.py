"""The shard file format: tar members of a sample, their checksums, writing and reading.

A shard is a plain tar (ustar, pax headers only where a name needs them) whose members of
one sample are adjacent and named ``<key>.<suffix>``: ``ephys.npy``, ``bold.npy``,
optional ``parcels.npy`` (raw ``np.save`` bytes) and ``meta.json``. WebDataset reads the
same files (keys end at the first dot of the member name).

Integrity, from the outside in: the manifest records each shard's sha256 (checked by
``brainxl shard --verify``) and each sample's ``meta.json`` checksum; ``meta.json`` records
the checksum of every other member of its sample (``meta["xxh3_64"]``). The reader checks
both for every sample it reads (:func:`check_sample`), so altered bytes inside a member
are named where they are read, never trained on. xxh3-64 hashes at tens of GB/s, so the
check costs little beside reading the bytes.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import xxhash
from brainxl.shards import npy
from brainxl.shards.errors import ShardError

#: Members every sample has.
REQUIRED = ("ephys.npy", "bold.npy", "meta.json")
#: Members of a sample of EEG-only shards (``meta["kind"] == "eeg-only"``).
REQUIRED_EEG_ONLY = ("ephys.npy", "meta.json")
#: Key of the per-member checksums in ``meta.json`` (and, prefixed ``meta_``, of the
#: ``meta.json`` checksum in the manifest's sample descriptor).
CHECKSUM_KEY = "xxh3_64"
META_CHECKSUM_KEY = f"meta_{CHECKSUM_KEY}"
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tar record size: the archive is padded to a multiple of it
_ZERO_BLOCK = bytes(_BLOCK)


def member_checksum(data: bytes | bytearray | memoryview | np.ndarray) -> str:
    """Checksum of a member's bytes: xxh3-64 as 16 hex digits."""
    return xxhash.xxh3_64_hexdigest(data)


def sample_members(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> tuple[dict[str, bytes], str]:
    """Encode one sample: ``.npy`` members plus a ``meta.json`` holding their checksums.

    Parameters
    ----------
    arrays : dict of str to ndarray
        ``{"ephys": ..., "bold": ..., "parcels": ...}`` (stored as ``<name>.npy``).
    meta : dict
        The sample's metadata (JSON-serialisable); must hold ``key``.

    Returns
    -------
    members : dict of str to bytes
        ``{suffix: bytes}`` in write order, ``meta.json`` last.
    meta_checksum : str
        Checksum of the ``meta.json`` member (recorded in the manifest).
    """
    members = {f"{name}.npy": npy.encode(a) for name, a in arrays.items()}
    sums = {suffix: member_checksum(data) for suffix, data in members.items()}
    members["meta.json"] = json.dumps({**meta, CHECKSUM_KEY: sums}).encode()
    return members, member_checksum(members["meta.json"])


class TarSampleWriter:
    """Write samples as adjacent tar members into a binary file object.

    Members get mtime 0, mode 0444 and no owner names, so identical input gives identical
    bytes. Call :meth:`close` to write the end-of-archive blocks (the file object stays
    open).

    Parameters
    ----------
    fileobj : binary file
        Anything with ``write(bytes)``.
    """

    def __init__(self, fileobj: IO[bytes]) -> None:
        self.f = fileobj
        self.size = 0

    def _write(self, data: bytes) -> None:
        self.f.write(data)
        self.size += len(data)

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        """Append the members ``<key>.<suffix>`` of one sample."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} must not hold '.' or '/' (WebDataset keys)")
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uname = info.gname = ""
            self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            self._write(bytes(data))
            if len(data) % _BLOCK:
                self._write(bytes(_BLOCK - len(data) % _BLOCK))

    def close(self) -> None:
        """End the archive: two zero blocks, padded to a whole tar record."""
        self._write(_ZERO_BLOCK * 2)
        if self.size % _RECORD:
            self._write(bytes(_RECORD - self.size % _RECORD))


def pax_records(data: bytes) -> dict[str, str]:
    """Parse pax extended-header records (``"<len> key=value\\n"``)."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


#: Header types whose data describes the next member (GNU long name, pax local and global).
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE)


class _ShardFile:
    """A shard opened for reading and the key being read, both named in its errors.

    As a context manager it closes the file on exit and turns an ``OSError`` or
    ``ValueError`` (a garbled pax record) into a :class:`ShardError`.

    Parameters
    ----------
    path : path
        The shard; one that cannot be opened raises :class:`ShardError` here.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path, self.key = str(path), ""
        try:
            self.f = open(path, "rb")  # noqa: SIM115 - closed in __exit__
        except OSError as err:
            raise ShardError(
                self.path, "", f"cannot open ({err.strerror}); re-run `brainxl shard`"
            ) from None

    def __enter__(self) -> _ShardFile:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.f.close()
        if isinstance(exc, (OSError, ValueError)) and not isinstance(exc, ShardError):
            raise ShardError(self.path, self.key, f"cannot read ({exc})") from None
        return False

    def error(self, reason: str) -> ShardError:
        """A :class:`ShardError` naming the file and the key being read."""
        return ShardError(self.path, self.key, reason)

    def header(self) -> tarfile.TarInfo | None:
        """Parse the tar header at the file's position; None at the end of the archive."""
        header = self.f.read(_BLOCK)
        if not header or header == _ZERO_BLOCK:  # end of archive
            return None
        if len(header) < _BLOCK:
            raise self.error("truncated tar header")
        try:
            return tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as err:
            raise self.error(f"corrupt tar header ({err})") from None


def _next_override(info: tarfile.TarInfo, ext: bytes, override: dict[str, str]) -> dict[str, str]:
    """The values an extended header ``info`` (data ``ext``) sets for the next member.

    A GNU long name sets ``path``, a pax header its records; a global pax header is
    ignored (``override`` is returned unchanged).
    """
    if info.type == tarfile.GNUTYPE_LONGNAME:
        return {"path": ext.rstrip(b"\0").decode("utf-8", "surrogateescape")}
    if info.type == tarfile.XHDTYPE:
        return pax_records(ext)
    return override


def _apply_override(info: tarfile.TarInfo, override: Mapping[str, str]) -> None:
    """Give ``info`` the name and size an extended header set for it."""
    info.name = override.get("path", info.name)
    if "size" in override:
        info.size = int(override["size"])


def iter_tar_samples(path: str | Path) -> Iterator[tuple[str, dict[str, np.ndarray | bytearray]]]:
    """Yield ``(key, {suffix: data})`` per sample of a shard, streaming.

    A minimal ustar reader: each header is parsed by :meth:`tarfile.TarInfo.frombuf`
    (checksum verified) and each member is read with one ``readinto`` into a writable
    buffer (``tarfile``'s stream mode reads 10 KiB chunks and joins them, several
    times slower). Members of one key must be adjacent, as :class:`TarSampleWriter`
    (and :class:`webdataset.TarWriter`) write them.

    Raises
    ------
    ShardError
        Naming the file and the key being read when the tar is truncated or corrupt, a
        key repeats, or a member type is unsupported (GNU/pax extensions).
    """
    members: dict[str, np.ndarray | bytearray] = {}
    seen: set[str] = set()
    override: dict[str, str] = {}  # pax / GNU long-name values for the next member
    with _ShardFile(path) as shard:
        f = shard.f
        while True:
            info = shard.header()
            if info is None:
                break
            if info.type in _EXTENDED:
                ext = f.read(info.size + (-info.size % _BLOCK))[: info.size]
                if len(ext) != info.size:
                    raise shard.error("truncated extended tar header")
                override = _next_override(info, ext, override)
                continue
            if override:
                _apply_override(info, override)
                override = {}
            pad = -info.size % _BLOCK
            name = info.name.rsplit("/", 1)[-1]
            base, dot, suffix = name.partition(".")
            if not info.isreg() or not dot:
                f.seek(info.size + pad, 1)
                continue
            if base != shard.key:
                if members:
                    yield shard.key, members
                if base in seen:
                    raise ShardError(shard.path, base, "key occurs twice (members not adjacent)")
                seen.add(base)
                shard.key, members = base, {}
            # writable buffers (so are arrays decoded from them); big ones not zero-filled
            data = np.empty(info.size, np.uint8) if info.size > 65536 else bytearray(info.size)
            if f.readinto(data) != info.size:
                raise shard.error(f"member {name} is truncated")
            if pad:
                f.seek(pad, 1)
            members[suffix] = data
        if members:
            yield shard.key, members


_ALTERED = (
    "(altered bytes); run `brainxl shard --verify` and re-shard, or skip such samples "
    "with data.reader.on_error=skip"
)


def check_sample(
    path: str,
    key: str,
    members: dict[str, Any],
    *,
    meta_checksum: str | None = None,
    require_checksums: bool = False,
) -> dict[str, Any]:
    """Decode a sample's members, check shapes and checksums; return its metadata.

    Parameters
    ----------
    path, key : str
        The shard file and the sample key (named in errors).
    members : dict
        ``{suffix: bytes}`` from :func:`iter_tar_samples`.
    meta_checksum : str, optional
        The ``meta.json`` checksum recorded in the manifest (checked when given).
    require_checksums : bool
        The sample must carry member checksums (shards written with them); when False a
        sample without them is accepted unchecked (older shards).

    Raises
    ------
    ShardError
        If a member is missing, does not decode, disagrees with the metadata, or its
        bytes differ from its checksum.
    """
    if "meta.json" not in members:
        missing = [m for m in REQUIRED if m not in members]
        raise ShardError(path, key, f"missing members {missing} (truncated shard?)")
    if meta_checksum is not None and member_checksum(members["meta.json"]) != meta_checksum:
        raise ShardError(path, key, f"meta.json differs from the manifest's checksum {_ALTERED}")
    try:
        meta = json.loads(members["meta.json"])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ShardError(path, key, f"meta.json does not parse ({err})") from None
    eeg_only = meta.get("kind") == "eeg-only"
    missing = [m for m in (REQUIRED_EEG_ONLY if eeg_only else REQUIRED) if m not in members]
    if missing:
        raise ShardError(path, key, f"missing members {missing} (truncated shard?)")
    try:
        ephys = npy.decode(members["ephys.npy"])
        bold = None if eeg_only else npy.decode(members["bold.npy"])
        parcels = npy.decode(members["parcels.npy"]) if "parcels.npy" in members else None
    except ValueError as err:
        raise ShardError(path, key, str(err)) from None
    if ephys.shape != (len(meta["ch_names"]), meta["n_ephys"]):
        raise ShardError(path, key, f"ephys shape {ephys.shape} disagrees with meta.json")
    if bold is not None:
        n_bold = meta["first_tr"] + meta["n_trs"] - meta["bold_first_tr"]
        if bold.shape != (len(meta["roi_names"]), n_bold):
            raise ShardError(path, key, f"bold shape {bold.shape} disagrees with meta.json")
    if parcels is not None and parcels.shape != (len(meta["parcel_names"]), meta["n_ephys"]):
        raise ShardError(path, key, f"parcels shape {parcels.shape} disagrees with meta.json")
    sums = meta.get(CHECKSUM_KEY)
    if sums is None:
        if require_checksums:
            raise ShardError(path, key, f"meta.json holds no member checksums {_ALTERED}")
        return meta
    for suffix, data in members.items():
        if suffix == "meta.json":
            continue
        if suffix not in sums:
            raise ShardError(path, key, f"member {suffix} has no checksum in meta.json {_ALTERED}")
        if member_checksum(data) != sums[suffix]:
            raise ShardError(path, key, f"member {suffix} differs from its checksum {_ALTERED}")
    return meta


def tar_member_offsets(path: str | os.PathLike) -> dict[str, dict[str, tuple[int, int]]]:
    """Data offsets of every member of a shard, from its headers alone.

    Parameters
    ----------
    path : path
        A shard tar (``shards.tarformat`` layout; pax headers allowed).

    Returns
    -------
    dict of key -> {suffix: (offset, size)}
        Byte offset and size of each member's data, keyed like WebDataset.

    Raises
    ------
    ShardError
        Naming the file when it cannot be opened or a header is truncated or corrupt.
    """
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with _ShardFile(path) as shard:
        pos, override = 0, {}
        while True:
            shard.f.seek(pos)
            info = shard.header()
            if info is None:
                break
            data_at = pos + _BLOCK
            pos = data_at + info.size + (-info.size % _BLOCK)
            if info.type in _EXTENDED:
                override = _next_override(info, shard.f.read(info.size), override)
                continue
            _apply_override(info, override)
            override = {}
            pos = data_at + info.size + (-info.size % _BLOCK)
            base, dot, suffix = info.name.rsplit("/", 1)[-1].partition(".")
            if info.isreg() and dot:
                shard.key = base
                out.setdefault(base, {})[suffix] = (data_at, info.size)
    return out
