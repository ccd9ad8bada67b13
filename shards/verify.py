"""Re-read every shard against the manifest: presence, size, sha256, sample count, members."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from brainxl.shards.errors import ShardError
from brainxl.shards.tarformat import META_CHECKSUM_KEY, check_sample, iter_tar_samples


@dataclass
class Problem:
    """One bad file found by :func:`verify_shards`."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def verify_shards(
    root: str | Path, deep: bool = True, on_shard: Callable[[int, int], None] | None = None
) -> list[Problem]:
    """Check every shard listed in ``root/manifest.json``.

    Parameters
    ----------
    root : path or ShardSet
        A shard folder (or one opened as a :class:`~brainxl.shards.shardset.ShardSet`).
    deep : bool
        Also parse every sample (members present, arrays decode, shapes match metadata,
        member checksums match, keys match the manifest); otherwise only size, sha256 and
        sample count.
    on_shard : callable, optional
        Called as ``on_shard(done, total)`` after each shard file is checked (progress).

    Returns
    -------
    problems : list of Problem
        Empty when everything matches; one entry per bad file otherwise.
    """
    from brainxl.shards.shardset import ShardSet

    if isinstance(root, ShardSet):
        shards = root
    else:
        try:
            shards = ShardSet(root)
        except (FileNotFoundError, ValueError) as err:
            return [Problem(str(Path(root) / "manifest.json"), str(err))]
    problems: list[Problem] = []
    total = sum(len(shards.fragment(s)["shards"]) for s in shards.subjects)
    done = 0
    for subject in shards.subjects:
        frag = shards.fragment(subject)
        for entry in frag["shards"]:
            if on_shard is not None:  # before each shard: `done` are checked
                on_shard(done, total)
            done += 1
            path = shards.root / entry["path"]
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
            descs = entry.get("samples", [])
            try:
                keys = []
                for i, (key, members) in enumerate(iter_tar_samples(path)):
                    if deep:
                        desc = descs[i] if i < len(descs) else {}
                        check_sample(
                            str(path),
                            key,
                            members,
                            meta_checksum=desc.get(META_CHECKSUM_KEY),
                            require_checksums=shards.has_checksums,
                        )
                    keys.append(key)
            except ShardError as err:
                problems.append(Problem(str(path), f"key {err.key}: {err.reason}"))
                continue
            if len(keys) != entry["n_samples"]:
                problems.append(
                    Problem(str(path), f"{len(keys)} samples, manifest {entry['n_samples']}")
                )
            elif deep and keys != [s["key"] for s in descs]:
                problems.append(Problem(str(path), "sample keys differ from the manifest"))
        if not frag["shards"]:
            problems.append(Problem(str(shards.root / f"sub-{subject}"), "subject has no shards"))
    if on_shard is not None and total:
        on_shard(total, total)
    return problems
