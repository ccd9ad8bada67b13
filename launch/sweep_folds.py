"""Nested leave-one-subject-out folds, honest by construction.

The search of an outer fold runs on a *view* of the shard folder that holds only the
outer fold's training subjects: a ``manifest.json`` listing those subjects and one link
per subject folder (:func:`write_view`). The outer subject is not in the view, so no run
of its search can open its shards, whatever the runs' configs say. Inner folds
(:func:`inner_folds`) split the training subjects deterministically from their ids.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainxl.files import atomic_write_text


def label(subject: str) -> str:
    """Subject label without ``sub-``."""
    s = str(subject)
    return s[4:] if s.startswith("sub-") else s


def sweep_subjects(cfg: Any) -> list[str]:
    """The subjects a sweep's outer and inner folds draw from (sorted labels).

    Read through the run's :class:`~brainxl.shards.shardset.ShardSet`
    (:func:`brainxl.distrib.data.fold_subjects`): the shards' subjects after
    ``data.reader.include_subjects`` / ``exclude_subjects``, as every run sees them.

    Parameters
    ----------
    cfg : RunConfig
        The sweep's base run config (``data.shards`` and the reader's subject lists).
    """
    from brainxl.distrib.data import fold_subjects

    return sorted(label(s) for s in fold_subjects(cfg))


def outer_subjects(all_subjects: Sequence[str], chosen: Sequence[str] = ()) -> list[str]:
    """The outer test subjects: ``chosen`` (``01`` or ``sub-01``), all subjects when empty.

    Raises
    ------
    ValueError
        If a chosen subject is not in the shards.
    """
    subs = sorted(label(s) for s in all_subjects)
    if not chosen:
        return subs
    out = []
    for c in chosen:
        c = label(c)
        match = [s for s in subs if s == c or (s.isdigit() and c.isdigit() and int(s) == int(c))]
        if not match:
            raise ValueError(f"--outer: subject {c!r} is not in the shards (subjects: {subs})")
        out.append(match[0])
    return out


def inner_folds(subjects: Sequence[str], k: int = 0) -> list[tuple[str, ...]]:
    """Held-out subject groups of the inner folds over an outer fold's training subjects.

    Parameters
    ----------
    subjects : sequence of str
        The outer fold's training subjects.
    k : int
        0: one fold per subject (leave one subject out); K >= 2: K grouped folds, subject
        ``i`` of the sorted list in fold ``i % K``.

    Returns
    -------
    folds : list of tuple of str
        The validation subjects of each inner fold (the others train).
    """
    subs = sorted(label(s) for s in subjects)
    if len(subs) < 3:
        raise ValueError(
            f"an outer fold needs at least 3 training subjects for inner folds, got {subs}"
        )
    if k == 0 or k >= len(subs):
        return [(s,) for s in subs]
    if k == 1:
        raise ValueError("inner_folds must be 0 (leave one subject out) or >= 2")
    return [tuple(subs[i::k]) for i in range(k)]


def write_view(shards: str | os.PathLike[str], subjects: Sequence[str], out: Path) -> Path:
    """A shard folder at ``out`` that holds only ``subjects`` of ``shards``.

    ``out/manifest.json`` is the source manifest restricted to ``subjects`` (totals
    recomputed); each ``out/sub-XX`` links to the source subject folder. Rewriting the
    same view is a no-op, so a resumed sweep keeps the same data digest.

    Returns
    -------
    out : Path
    """
    from brainxl.shards.manifest import subject_dir
    from brainxl.shards.shardset import ShardSet

    # the links need an absolute target: the set this process opened may hold the relative
    # path it was first opened with (``data.shards`` as the config spells it)
    src = Path(shards).resolve()
    source = ShardSet.open(src)
    manifest = source.manifest
    keep = {s: source.fragment(s) for s in sorted(label(x) for x in subjects)}
    frags = list(keep.values())
    view: dict[str, Any] = dict(manifest)
    view["subjects"] = keep
    view["view_of"] = str(src)
    totals = dict(manifest.get("totals", {}))
    totals.update(
        n_subjects=len(frags),
        n_runs=sum(len(f.get("runs", [])) for f in frags),
        n_samples=sum(f.get("n_samples", 0) for f in frags),
        n_shards=sum(len(f.get("shards", [])) for f in frags),
    )
    view["totals"] = totals
    out.mkdir(parents=True, exist_ok=True)
    for s in keep:
        link = subject_dir(out, s)
        target = subject_dir(src, s)
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
    text = json.dumps(view, indent=1)
    path = out / "manifest.json"
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return out
