"""One shard folder, opened once: subjects, fold statistics, digest, windows, recordings.

A :class:`ShardSet` parses ``manifest.json`` once and serves everything a run needs from
the shards::

    shards = ShardSet.open("data/shards")
    shards.subjects                       # ["01", "02", ...]
    shards.select(exclude=["sub-03"])     # include/exclude lists, sub- optional
    norm = shards.fold_statistics(["01", "02"])      # training subjects only
    shards.digest()                       # identity of the data (manifest sans its date)
    ds = shards.windows(ReaderConfig(...), rank=0, world_size=1, norm=norm)
    shards.recording_timeseries(["01"], ("ephys", "bold"))     # whole recordings, stitched

``ShardSet(root)`` always reads the manifest; ``ShardSet.open(root)`` returns the set this
process already opened from that folder while ``manifest.json`` is unchanged on disk (same
inode, size and times), so the data digest, the fold, its streams and the evaluation of a
run share one parse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from brainxl.shards.manifest import (
    KIND_EEG_ONLY,
    MANIFEST_NAME,
    manifest_kind,
    read_manifest,
    select_subjects,
)
from brainxl.shards.stats import NormStats, fold_statistics

if TYPE_CHECKING:
    from brainxl.shards.config import ReaderConfig
    from brainxl.shards.reader import WindowDataset
    from brainxl.shards.verify import Problem

log = logging.getLogger(__name__)

#: Manifest version from which every sample carries member checksums.
CHECKSUMS_SINCE = 2

_OPENED: dict[Path, tuple[tuple[int, ...], ShardSet]] = {}


def _manifest_path(root: str | os.PathLike) -> Path:
    path = Path(root)
    return path if path.name == MANIFEST_NAME and path.is_file() else path / MANIFEST_NAME


def _signature(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ShardSet:
    """A shard folder written by ``brainxl shard``, its manifest parsed once.

    Parameters
    ----------
    root : path
        The folder holding ``manifest.json`` (or the manifest file itself).

    Attributes
    ----------
    root : Path
        The shard folder; shard paths in the manifest are relative to it.
    manifest_path : Path
    manifest : dict
        The parsed manifest (see :mod:`shards.manifest`); treat it as read-only.

    Raises
    ------
    FileNotFoundError
        When the folder has no manifest (the message names the fix).
    ValueError
        When the manifest does not parse or is not a brainxl manifest.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.manifest_path = _manifest_path(root)
        self.root = self.manifest_path.parent
        self.manifest: dict[str, Any] = read_manifest(self.manifest_path)
        self._warned_unchecked = False

    @classmethod
    def open(cls, root: str | os.PathLike | ShardSet) -> ShardSet:
        """The set this process opened from ``root``, re-read when the manifest changed."""
        if isinstance(root, ShardSet):
            return root
        key = _manifest_path(root).resolve()
        try:
            sig = _signature(key)
        except OSError:
            return cls(root)  # raises the manifest's own error
        hit = _OPENED.get(key)
        if hit is not None and hit[0] == sig:
            return hit[1]
        shards = cls(root)
        _OPENED[key] = (sig, shards)
        return shards

    @classmethod
    def open_eeg_only(cls, root: str | os.PathLike) -> ShardSet:
        """``ShardSet(root)`` for pretraining: fail in one line unless it holds EEG-only shards.

        The counterpart of :meth:`require_translation`.

        Raises
        ------
        FileNotFoundError
            No manifest (names ``brainxl shard --eeg-only``, which writes one).
        ValueError
            Translation shards (with BOLD).
        """
        if not _manifest_path(root).is_file():
            raise FileNotFoundError(
                f"{root}: no shard manifest; pretraining reads EEG-only shards: run "
                f"`brainxl shard --eeg-only SRC {root}` first (SRC: a BIDS folder or a "
                "quoted glob of recordings)"
            )
        shards = cls(root)
        if not shards.eeg_only:
            raise ValueError(
                f"{shards.root}: translation shards (with BOLD) cannot feed pretraining; "
                "give folders written by `brainxl shard --eeg-only`"
            )
        return shards

    @classmethod
    def forget(cls, root: str | os.PathLike) -> None:
        """Drop ``root`` from the sets :meth:`open` remembers (after rewriting it)."""
        _OPENED.pop(_manifest_path(root).resolve(), None)

    def __repr__(self) -> str:
        return f"ShardSet({str(self.root)!r}, {len(self.subjects)} subjects)"

    # ------------------------------------------------------------------ dataset facts
    @property
    def kind(self) -> str:
        """``"translation"`` (EEG/MEG + BOLD) or ``"eeg-only"`` (``brainxl shard --eeg-only``)."""
        return manifest_kind(self.manifest)

    @property
    def eeg_only(self) -> bool:
        """True for EEG-only shards (no BOLD: pretraining data)."""
        return self.kind == KIND_EEG_ONLY

    def require_translation(self) -> None:
        """Fail in one line when these shards hold no BOLD (a translation run needs it).

        Raises
        ------
        ValueError
            Naming the shard folder and the fix.
        """
        if self.eeg_only:
            raise ValueError(
                f"{self.root}: EEG-only shards (no BOLD, written by `brainxl shard --eeg-only`) "
                "cannot train or evaluate EEG->fMRI translation; point data.shards at shards "
                "written without --eeg-only, or use these for pretraining"
            )

    @property
    def subjects(self) -> list[str]:
        """Every subject label (without ``sub-``), sorted."""
        return sorted(self.manifest["subjects"])

    @property
    def sfreq(self) -> float:
        """Sampling rate of the electrophysiology (and parcels), Hz."""
        return float(self.manifest["sfreq"])

    @property
    def tr(self) -> float | None:
        """The repetition time in seconds (None when subjects differ, see ``trs``)."""
        return self.manifest.get("tr")

    @property
    def roi_names(self) -> list[str]:
        """Row names of the BOLD target."""
        return list(self.manifest["roi_names"])

    @property
    def parcel_names(self) -> list[str]:
        """Row names of the source-space parcels (empty without source reconstruction)."""
        return list(self.manifest["parcel_names"])

    @property
    def settings(self) -> dict[str, Any]:
        """The sharding and ingest settings the shards were written with."""
        return dict(self.manifest.get("settings", {}))

    @property
    def version(self) -> int:
        """Format version of the manifest (:data:`shards.manifest.FORMAT_VERSION`)."""
        return int(self.manifest.get("version", 1))

    @property
    def has_checksums(self) -> bool:
        """True when every sample carries checksums of its members (checked on read)."""
        return self.version >= CHECKSUMS_SINCE

    def warn_if_unchecked(self) -> None:
        """Warn once that these shards predate per-sample checksums (they stay readable)."""
        if not self.has_checksums and not self._warned_unchecked:
            self._warned_unchecked = True
            log.warning(
                "%s: shards written before per-sample checksums (manifest version %d): altered "
                "bytes inside a sample are not detected while reading (`brainxl shard --verify` "
                "still checks each shard's sha256); re-run `brainxl shard` to add them",
                self.manifest_path,
                self.version,
            )

    def fragment(self, subject: str) -> dict[str, Any]:
        """The manifest entry of one subject (label without ``sub-``)."""
        try:
            return self.manifest["subjects"][subject]
        except KeyError:
            raise ValueError(
                f"{self.manifest_path}: subject {subject!r} is not in the shards "
                f"(known: {self.subjects})"
            ) from None

    def recording_scales(self, subject: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per-channel mean and standard deviation of each EEG-only recording of a subject.

        From the ``ephys_sums`` the EEG-only writer keeps in each ``runs`` entry.

        Returns
        -------
        scales : dict
            Recording key to ``(mean, std)``, float32 arrays in the recording's channel
            order (std at least 1e-6).

        Raises
        ------
        ValueError
            Naming the subject's folder when a recording has no statistics (shards written
            by an older brainxl) and how to add them.
        """
        from brainxl.shards.stats import pooled_mean_std

        out = {}
        for run in self.fragment(subject)["runs"]:
            sums = run.get("ephys_sums")
            if sums is None:
                raise ValueError(
                    f"{self.root}/sub-{subject}: recording {run['recording']} has no channel "
                    "statistics (shards written by an older brainxl); re-run the same "
                    "`brainxl shard --eeg-only` command, which rewrites those subjects"
                )
            out[run["recording"]] = pooled_mean_std([sums])
        return out

    def select(
        self, include: Sequence[str] = (), exclude: Sequence[str] = (), where: str = ""
    ) -> list[str]:
        """Subjects after include/exclude lists (labels with or without ``sub-``).

        Raises
        ------
        ValueError
            If a listed subject is unknown or nothing is left (``where`` names the source
            of the lists; default the manifest).
        """
        return select_subjects(
            self.manifest, include, exclude, where=where or str(self.manifest_path)
        )

    # ------------------------------------------------------------------ derived values
    def digest(self) -> str:
        """sha256 of the manifest without its creation time: the identity of the data.

        Shard checksums are part of the manifest, so rewritten shards change it; re-running
        ``brainxl shard`` on unchanged input does not.
        """
        content = {k: v for k, v in self.manifest.items() if k != "created"}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def fold_statistics(self, subjects: Sequence[str], eps: float = 1e-6) -> NormStats:
        """Normalisation statistics pooled over ``subjects`` (a fold's training subjects)."""
        self.require_translation()
        return fold_statistics(self.manifest, subjects, eps)

    # ------------------------------------------------------------------ reading data
    def windows(self, cfg: ReaderConfig, **kwargs: Any) -> WindowDataset:
        """A streaming :class:`~brainxl.shards.reader.WindowDataset` over these shards.

        ``kwargs`` are those of the dataset (``rank``, ``world_size``, ``seed``,
        ``epoch_windows``, ``norm``); ``cfg.include_subjects``/``exclude_subjects`` pick
        the subjects.
        """
        from brainxl.shards.reader import WindowDataset

        self.require_translation()
        return WindowDataset(self, cfg, **kwargs)

    def recording_timeseries(
        self,
        subjects: Sequence[str],
        modalities: Sequence[str],
        *,
        norm: NormStats | None = None,
        ephys_hz: float = 0.0,
        max_seconds: float = 0.0,
    ) -> dict[str, list[np.ndarray]]:
        """Whole-recording time series of ``subjects``, read back from their shards.

        Every run sample is taken once (overlapping segments are stitched; a gap in the
        stored data starts a new array). Electrophysiology is subsampled to about
        ``ephys_hz`` by keeping every ``d``-th sample, with no low-pass filter (right for
        zero-lag statistics such as correlations, which any subset of time points
        estimates without bias).

        Parameters
        ----------
        subjects : sequence of str
            Labels without ``sub-``, read in this order.
        modalities : sequence of {"ephys", "parcels", "bold"}
            Members to read (the shards are read once for all).
        norm : NormStats, optional
            Applied per row (``(x - mean) / std``), as the reader does for model inputs.
        ephys_hz : float
            Target rate of the subsampling (``<= 0``: keep every sample).
        max_seconds : float
            Recording time read per subject, in shard order (``<= 0``: everything).

        Returns
        -------
        dict of modality -> list of ndarray, each of shape (n_rows, n_times), float32
            One array per contiguous stretch of a recording, subjects in the given order.
        """
        from brainxl.shards.timeseries import read_timeseries

        self.require_translation()
        self.warn_if_unchecked()
        return read_timeseries(
            self, subjects, modalities, norm=norm, ephys_hz=ephys_hz, max_seconds=max_seconds
        )

    def eeg_segments(
        self, subjects: Sequence[str] | None = None
    ) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """Yield ``(meta, ephys)`` of every stored segment of EEG-only shards, in order.

        Each sample is checked against its checksums (as the readers do) before it is
        yielded.

        Parameters
        ----------
        subjects : sequence of str, optional
            Labels without ``sub-`` (default: all).

        Yields
        ------
        meta : dict
            The sample's ``meta.json`` (``key``, ``recording``, ``dataset``, ``ch_names``,
            ``sfreq``, ``native_sfreq``, ``offset``, ``n_ephys``, ...).
        ephys : ndarray, shape (n_channels, n_ephys), float32
            Microvolts (EEG) at ``sfreq``.

        Raises
        ------
        ValueError
            For translation shards (use :meth:`windows`); ``ShardError`` for a bad sample.
        """
        from brainxl.shards import npy
        from brainxl.shards.tarformat import META_CHECKSUM_KEY, check_sample, iter_tar_samples

        if not self.eeg_only:
            raise ValueError(
                f"{self.root}: not EEG-only shards (they hold BOLD); read them with "
                "ShardSet.windows, or shard with --eeg-only"
            )
        for subject in subjects if subjects is not None else self.subjects:
            for entry in self.fragment(subject)["shards"]:
                path = self.root / entry["path"]
                descs = entry.get("samples", [])
                for i, (key, members) in enumerate(iter_tar_samples(path)):
                    desc = descs[i] if i < len(descs) else {}
                    meta = check_sample(
                        str(path),
                        key,
                        members,
                        meta_checksum=desc.get(META_CHECKSUM_KEY),
                        require_checksums=self.has_checksums,
                    )
                    yield meta, npy.decode(members["ephys.npy"])

    def verify(self, deep: bool = True) -> list[Problem]:
        """Re-read every shard against the manifest (see :func:`shards.verify.verify_shards`)."""
        from brainxl.shards.verify import verify_shards

        return verify_shards(self, deep)
