"""One standard channel vocabulary shared by every montage, as LaBraM does.

A model's spatial embedding has one row per vocabulary entry, so a model trained on one
montage accepts any other whose channels map onto the vocabulary. The vocabulary holds
the 10-05 electrode names (MNE's ``standard_1005``), the bipolar pairs of the 10-20
double-banana montage (as in TUH recordings), the 306 Neuromag MEG sensors, then the
extra positions of ``easycap-M1`` and ``spherical_1005``. Rows are only ever appended,
so trained embeddings stay valid. Numbered montages (EGI ``E1``, BioSemi-128 ``A1``...)
must be renamed to 10-05 names in the data config. Names are
matched case-insensitively after stripping common prefixes/suffixes (``EEG Fp1-REF``).
Old 10-20 names (T3/T4/T5/T6) map onto their 10-10 successors (T7/T8/P7/P8).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources

_ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8", "A1": "M1", "A2": "M2"}
_PREFIX = re.compile(r"^(EEG|EOG|ECG|EMG)[\s_-]+", re.IGNORECASE)
_SUFFIX = re.compile(r"[\s_-]+(REF|LE|AR|AVG|CAR)$", re.IGNORECASE)
_MEG = re.compile(r"^MEG[\s_-]*(\d{4})$", re.IGNORECASE)


class UnknownChannelError(ValueError):
    """Raised when channel names do not map onto the standard vocabulary."""


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Return the standard channel vocabulary, in embedding-row order.

    Returns
    -------
    names : tuple of str
        Canonical channel names; ``names.index(ch)`` is the embedding row of ``ch``.
    """
    text = resources.files("brainxl").joinpath("channel_vocab.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def _lookup() -> dict[str, int]:
    return {name.upper(): i for i, name in enumerate(vocabulary())}


def canonical_name(name: str) -> str | None:
    """Map a recorded channel name onto its vocabulary entry.

    Parameters
    ----------
    name : str
        Channel name as found in the recording (``"EEG Fp1-REF"``, ``"T3"``,
        ``"MEG 0113"``, ``"FP1-F7"``).

    Returns
    -------
    canonical : str or None
        The vocabulary name, or None when the channel has no entry.
    """
    lut = _lookup()
    vocab = vocabulary()
    raw = name.strip()
    meg = _MEG.match(raw)
    if meg:
        key = f"MEG{meg.group(1)}"
        return vocab[lut[key]] if key in lut else None
    stripped = _SUFFIX.sub("", _PREFIX.sub("", raw)).strip()
    for cand in (raw, stripped):
        parts = cand.split("-")
        if len(parts) == 2 and all(parts):
            a, b = (_ALIASES.get(p.upper(), p) for p in parts)
            key = f"{a}-{b}".upper()
        else:
            key = _ALIASES.get(cand.upper(), cand).upper()
        if key in lut:
            return vocab[lut[key]]
    return None


def channel_indices(names: Sequence[str], *, source: str = "") -> list[int]:
    """Return vocabulary rows for ``names``; fail naming every unknown channel.

    Parameters
    ----------
    names : sequence of str
        Channel names (any montage).
    source : str
        Where the names come from (a file path), used in the error message.

    Returns
    -------
    indices : list of int, length n_channels

    Raises
    ------
    UnknownChannelError
        If any name has no vocabulary entry; the message lists them and the fix.
    """
    idx, unknown = [], []
    for n in names:
        c = canonical_name(n)
        if c is None:
            unknown.append(n)
        else:
            idx.append(_lookup()[c.upper()])
    if unknown:
        where = f" in {source}" if source else ""
        raise UnknownChannelError(
            f"{len(unknown)} channel(s){where} are not in the standard vocabulary: "
            f"{', '.join(unknown[:20])}{' ...' if len(unknown) > 20 else ''}. "
            "Rename them to 10-05 names (preprocess.rename_channels in the data config), "
            "or drop them (preprocess.drop_channels)."
        )
    return idx


def canonicalize(names: Iterable[str], *, source: str = "") -> list[str]:
    """Return the canonical names of ``names`` (raises like :func:`channel_indices`)."""
    names = list(names)
    vocab = vocabulary()
    return [vocab[i] for i in channel_indices(names, source=source)]
