"""EEG-only ingest: electrophysiology without BOLD -> :class:`EEGRecording` per file.

Two kinds of input, both for pretraining shards (``brainxl shard SRC OUT --eeg-only``):

* a BIDS dataset: every ``sub-*/[ses-*/]eeg/*_eeg.<ext>`` (or ``meg/*_meg.fif`` when
  ``preprocess.ch_types`` names MEG sensors) is read with mne-bids, BOLD or not;
* a glob of MNE-readable recordings (``'recs/**/*.edf'``; ``**`` matches folders
  recursively): EDF, BDF, BrainVision, EEGLAB and FIF files, read with
  :func:`mne.io.read_raw`. A file named with BIDS entities (``sub-07_ses-2_...``) belongs
  to that subject; any other file is its own subject, labelled by its path below the
  glob's fixed folder with everything but letters and digits removed
  (``recs/site1/rec_01.edf`` -> ``site1rec01``).

Preprocessing is the translation chain (:mod:`shards.ingest.preprocess`): channel
selection, mapping onto the channel vocabulary, bad-channel policy, notch, band-pass and
resampling; except that a channel without a vocabulary entry is dropped and reported (one
line per file and channel, see :func:`unmapped_report`) instead of failing the file.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainxl.shards.config import IngestConfig
from brainxl.shards.errors import IngestError, MissingFileError
from brainxl.shards.ingest.preprocess import (
    canonicalize_channels,
    drop_or_raise_bad,
    filter_and_resample,
    select_channels,
    to_array,
)
from brainxl.shards.ingest.recording import EEGRecording

#: File endings :func:`mne.io.read_raw` reads that a glob picks up (others are skipped,
#: e.g. the ``.vmrk``/``.eeg`` companions of a BrainVision header or EEGLAB ``.fdt``).
READABLE = (".edf", ".bdf", ".vhdr", ".set", ".fif", ".fif.gz")
_GLOB_CHARS = re.compile(r"[*?\[]")
_ENTITY_KEYS = {"sub": "subject", "ses": "session", "task": "task", "run": "run"}


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text)


def file_entities(path: Path) -> dict[str, str]:
    """BIDS entities of a file name (``sub-01_task-rest_eeg.edf`` -> subject, task).

    Returns
    -------
    entities : dict of str to str
        ``subject``, ``session``, ``task``, ``run`` where the name holds them (values
        reduced to letters and digits), plus any other ``key-value`` parts.
    """
    stem = path.name.split(".")[0]
    out: dict[str, str] = {}
    for part in stem.split("_"):
        if "-" in part:
            key, val = part.split("-", 1)
            out[_ENTITY_KEYS.get(key, key)] = _label(val)
    return out


@dataclass
class EEGSource:
    """A resolved EEG-only input: a BIDS folder or the files of a glob, grouped by subject.

    Attributes
    ----------
    kind : {"bids", "glob"}
    spec : str
        What the user passed (the folder or the pattern), named in messages.
    dataset : str
        Dataset name recorded in the manifest.
    root : Path
        The BIDS root, or the glob's fixed leading folder.
    files : dict of str to list of Path
        Glob input only: the files of each subject label, sorted.
    """

    kind: str
    spec: str
    dataset: str
    root: Path
    files: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        """Subject labels without ``sub-`` (BIDS: after ``cfg.subjects`` in :func:`load`)."""
        return sorted(self.files)


def glob_root(pattern: str) -> Path:
    """The leading folders of ``pattern`` that hold no glob characters."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if _GLOB_CHARS.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def list_glob(pattern: str) -> list[Path]:
    """The MNE-readable recordings ``pattern`` matches (``**`` recursive), sorted.

    Raises
    ------
    MissingFileError
        If it matches no file, or none with a readable ending (named in the message).
    """
    matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not matched:
        raise MissingFileError(
            f"{pattern}: the glob matches no file; fix the pattern (quote it so the shell "
            "leaves it alone; '**' matches any depth of folders)"
        )
    files = [p for p in matched if p.name.lower().endswith(READABLE)]
    if not files:
        endings = sorted({"".join(p.suffixes) or p.name for p in matched})[:8]
        raise MissingFileError(
            f"{pattern}: matches {len(matched)} file(s) but none MNE reads as a recording "
            f"(found {endings}; readable: {', '.join(READABLE)}); fix the pattern"
        )
    return files


def resolve_source(spec: str | Path, cfg: IngestConfig, dataset: str = "") -> EEGSource:
    """Turn ``brainxl shard``'s SRC argument into an :class:`EEGSource`.

    Parameters
    ----------
    spec : str or Path
        A BIDS dataset folder (holds ``dataset_description.json``), one recording file, or
        a glob of recordings.
    cfg : IngestConfig
        ``cfg.subjects`` narrows BIDS subjects (labels with or without ``sub-``).
    dataset : str
        Dataset name for the manifest; default the BIDS folder's or the glob root's name.

    Raises
    ------
    MissingFileError
        For a folder that is not a BIDS dataset or a glob that matches nothing.
    IngestError
        When two files of one subject would get the same recording key.
    """
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        from brainxl.shards.ingest.bids import list_subjects

        if not (path / "dataset_description.json").is_file():
            raise MissingFileError(
                f"{path}: a folder but not a BIDS dataset (no dataset_description.json); pass "
                f"the BIDS root, or a quoted glob of recordings such as '{path}/**/*.edf'"
            )
        name = _label(dataset) or _label(path.resolve().name) or "bids"
        src = EEGSource("bids", spec, name, path)
        src.files = {s: [] for s in list_subjects(path, cfg)}
        return src
    files = list_glob(spec)
    root = glob_root(spec) if _GLOB_CHARS.search(spec) else path.parent
    name = _label(dataset) or _label(root.resolve().name) or "recordings"
    by_subject: dict[str, list[Path]] = {}
    keys: dict[tuple[str, str], Path] = {}
    for f in files:
        ents = file_entities(f)
        try:
            rel = f.relative_to(root)
        except ValueError:
            rel = Path(f.name)
        subject = ents.get("subject") or _label(str(rel).split(".")[0])
        if not subject:
            raise IngestError(f"{f}: cannot derive a subject label from the path; rename it")
        # the recording key within the subject (EEGRecording.key): ses/task/run entities
        key = "_".join(ents.get(k, "") for k in ("session", "task", "run"))
        clash = keys.get((subject, key))
        if clash is not None:
            raise IngestError(
                f"{f}: gets the same subject and recording key as {clash} (sub-{subject}); "
                "rename one (distinct ses-/task-/run- entities) or shard them separately"
            )
        keys[(subject, key)] = f
        by_subject.setdefault(subject, []).append(f)
    if cfg.subjects:
        wanted = {s.removeprefix("sub-") for s in cfg.subjects}
        unknown = sorted(wanted - set(by_subject))
        if unknown:
            raise IngestError(
                f"{spec}: subjects {unknown} not among the files (have "
                f"{sorted(by_subject)[:10]}); fix 'subjects' in the data config"
            )
        by_subject = {s: v for s, v in by_subject.items() if s in wanted}
    return EEGSource("glob", spec, name, root, by_subject)


def _datatypes(cfg: IngestConfig) -> list[str]:
    return ["meg"] if {"mag", "grad"} & set(cfg.preprocess.ch_types) else ["eeg"]


def find_bids_recordings(bids_root: Path, subject: str, cfg: IngestConfig) -> list[Path]:
    """The EEG (or MEG) data files of one BIDS subject, BOLD or not, sorted.

    ``cfg.tasks`` filters tasks; later parts of a split FIF are read with the first.
    """
    from brainxl.shards.ingest.bids import EPHYS_EXTENSIONS

    subdir = Path(bids_root) / f"sub-{subject}"
    out = []
    for dtype in _datatypes(cfg):
        for path in sorted(subdir.glob(f"**/{dtype}/sub-{subject}_*_{dtype}.*")):
            if path.suffix not in EPHYS_EXTENSIONS[dtype]:
                continue
            if "_split-" in path.name and "_split-01_" not in path.name:
                continue
            if cfg.tasks and file_entities(path).get("task") not in cfg.tasks:
                continue
            out.append(path)
    return out


def read_file(path: Path) -> Any:
    """Open one recording with :func:`mne.io.read_raw` (not loaded).

    Raises
    ------
    IngestError
        Naming the file when MNE cannot read it.
    """
    import mne

    try:
        return mne.io.read_raw(path, preload=False, verbose="error")
    except Exception as err:  # MNE raises many types for unreadable files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise IngestError(
            f"{path}: MNE cannot read it as a recording ({msg}); fix or remove the file, or "
            "narrow the glob"
        ) from None


def _read_bids(bids_root: Path, path: Path, datatype: str) -> Any:
    from mne_bids import BIDSPath, read_raw_bids

    ents = file_entities(path)
    bpath = BIDSPath(
        root=bids_root,
        subject=ents["subject"],
        session=ents.get("session") or None,
        task=ents.get("task") or None,
        run=ents.get("run") or None,
        acquisition=ents.get("acq") or None,
        split=ents.get("split") or None,
        datatype=datatype,
        suffix=datatype,
        extension=path.suffix,
    )
    try:
        return read_raw_bids(bpath, verbose=False)
    except Exception as err:  # mne-bids and MNE raise many types for unreadable files
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise IngestError(f"{path}: mne-bids could not read it ({msg}); fix the file") from None


def preprocess_recording(
    raw: Any, cfg: IngestConfig, *, subject: str, dataset: str, entities: dict[str, str], src: str
) -> EEGRecording:
    """Preprocess one opened recording into an :class:`EEGRecording`.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Loaded here and modified in place.
    cfg : IngestConfig
        ``cfg.preprocess`` drives the chain.
    subject, dataset : str
    entities : dict of str to str
        ``session``, ``task``, ``run`` where known.
    src : str
        The data file, named in messages.

    Raises
    ------
    IngestError
        (and subclasses) naming ``src``: no channel of the wanted types, every channel
        unmappable, bad channels under ``on_bad_channel=error``.
    """
    native_sfreq = float(raw.info["sfreq"])
    native_n = int(raw.n_times)
    raw.load_data(verbose=False)
    notes = select_channels(raw, cfg.preprocess, src)
    more, dropped = canonicalize_channels(raw, src, drop_unknown=True)
    notes += more
    notes += drop_or_raise_bad(raw, cfg.preprocess, src)
    notes += filter_and_resample(raw, cfg.preprocess)
    data, types = to_array(raw, 0, raw.n_times)
    rec = EEGRecording(
        subject=subject,
        session=entities.get("session", ""),
        task=entities.get("task", ""),
        run=entities.get("run", ""),
        dataset=dataset,
        ephys=data,
        sfreq=float(raw.info["sfreq"]),
        ch_names=list(raw.ch_names),
        ch_types=list(types),
        native_sfreq=native_sfreq,
        native_n_times=native_n,
        dropped_channels=dropped,
        source_files={"ephys": src},
        assumptions=notes,
    )
    rec.validate()
    return rec


def load_subject(source: EEGSource, subject: str, cfg: IngestConfig) -> list[EEGRecording]:
    """Read and preprocess every recording of one subject of ``source``.

    Returns
    -------
    recordings : list of EEGRecording
        In file-name order.

    Raises
    ------
    IngestError
        (and subclasses) naming the file and the fix; also when a BIDS subject has no
        EEG (or MEG) file.
    """
    from threadpoolctl import threadpool_limits

    if source.kind == "bids":
        paths = find_bids_recordings(source.root, subject, cfg)
        if not paths:
            raise IngestError(
                f"{source.root / f'sub-{subject}'}: no {'/'.join(_datatypes(cfg))} recording "
                "found; check the dataset or the tasks/preprocess.ch_types settings"
            )
    else:
        paths = source.files[subject]
    out = []
    with threadpool_limits(limits=cfg.blas_threads):
        for path in paths:
            if source.kind == "bids":
                raw = _read_bids(source.root, path, _datatypes(cfg)[0])
            else:
                raw = read_file(path)
            ents = file_entities(path)
            out.append(
                preprocess_recording(
                    raw, cfg, subject=subject, dataset=source.dataset, entities=ents, src=str(path)
                )
            )
    return out


def unmapped_report(fragments: list[dict[str, Any]]) -> list[str]:
    """One line per file and channel dropped for having no vocabulary entry.

    Parameters
    ----------
    fragments : list of dict
        Subject fragments of EEG-only shards (``runs[*].dropped_channels``).

    Returns
    -------
    lines : list of str
        ``"<file>: channel '<name>' is not in the channel vocabulary; dropped"``.
    """
    lines = []
    for frag in fragments:
        for run in frag.get("runs", []):
            src = run.get("source_files", {}).get("ephys", run.get("recording", ""))
            for ch in run.get("dropped_channels", []):
                lines.append(
                    f"{src}: channel {ch!r} is not in the channel vocabulary; dropped "
                    "(map it with preprocess.rename_channels to keep it)"
                )
    return lines
