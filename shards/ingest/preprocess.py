"""MNE preprocessing of one run: channel mapping, bad-channel checks, filters, resampling.

The functions work in place on an :class:`mne.io.BaseRaw` in SI units (volts, tesla);
:func:`to_array` converts to the stored units (microvolts for EEG, femtotesla for
magnetometers, femtotesla per centimetre for gradiometers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from brainxl.shards.config import PreprocessConfig
from brainxl.shards.errors import BadChannelError, ChannelNameError, IngestError

from brainxl.channels import UnknownChannelError, canonical_name, canonicalize

if TYPE_CHECKING:
    import mne

#: Stored units per channel type (``raw.get_data(units=...)`` spelling).
UNITS = {"eeg": "uV", "mag": "fT", "grad": "fT/cm"}

# A channel is flat when its standard deviation is below this fraction of the median
# standard deviation of the channels of its type (unit-free, so EEG and MEG alike).
_FLAT_RATIO = 1e-6


def select_channels(raw: mne.io.BaseRaw, cfg: PreprocessConfig, source: str) -> list[str]:
    """Rename and drop channels, keep those of ``cfg.ch_types`` and drop those marked bad.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Modified in place.
    cfg : PreprocessConfig
        ``rename_channels`` (recorded name -> new name), ``drop_channels`` and
        ``ch_types`` are applied in that order; channels marked bad in the dataset
        (``status`` column of the channels.tsv) are dropped.
    source : str
        The data file, named in error messages.

    Returns
    -------
    assumptions : list of str
        Notes on what was dropped.

    Raises
    ------
    IngestError
        If no channel of ``cfg.ch_types`` is left.
    """
    notes: list[str] = []
    rename = {k: v for k, v in cfg.rename_channels.items() if k in raw.ch_names}
    if rename:
        raw.rename_channels(rename)
    drop = [ch for ch in cfg.drop_channels if ch in raw.ch_names]
    if drop:
        raw.drop_channels(drop)
    types = raw.get_channel_types()
    keep = [ch for ch, t in zip(raw.ch_names, types) if t in cfg.ch_types]
    if not keep:
        raise IngestError(
            f"{source}: no channels of type {cfg.ch_types} (found types "
            f"{sorted(set(types))}); set preprocess.ch_types in the data config or fix the "
            "'type' column of the channels.tsv"
        )
    other = sorted(set(raw.ch_names) - set(keep))
    if other:
        notes.append(f"dropped {len(other)} channel(s) not of type {cfg.ch_types}: {other}")
    raw.pick(keep)
    marked = [ch for ch in raw.info["bads"] if ch in raw.ch_names]
    if len(marked) == len(raw.ch_names):
        raise BadChannelError(
            f"{source}: every channel is marked bad (status column of the channels.tsv); "
            "fix the status column"
        )
    if marked:
        raw.drop_channels(marked)
        notes.append(f"dropped channels marked bad in the channels.tsv: {marked}")
    return notes


def unmapped_channels(names: Sequence[str]) -> list[str]:
    """The channel names among ``names`` that have no entry in the standard vocabulary."""
    return [n for n in names if canonical_name(n) is None]


def canonicalize_channels(
    raw: mne.io.BaseRaw, source: str, *, drop_unknown: bool = False
) -> tuple[list[str], list[str]]:
    """Rename the channels of ``raw`` (in place) to the standard vocabulary.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Modified in place.
    source : str
        The data file, named in error messages.
    drop_unknown : bool
        Drop channels without a vocabulary entry (returned) instead of failing; it still
        fails when no channel is left.

    Returns
    -------
    assumptions : list of str
    dropped : list of str
        Recorded names of the channels dropped as unknown (empty unless ``drop_unknown``).

    Raises
    ------
    ChannelNameError
        If a channel name has no vocabulary entry (and ``drop_unknown`` is False), if no
        channel maps, or if two map onto the same entry.
    """
    notes: list[str] = []
    dropped: list[str] = []
    if drop_unknown:
        dropped = unmapped_channels(raw.ch_names)
        if len(dropped) == len(raw.ch_names):
            shown = ", ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else "")
            raise ChannelNameError(
                f"{source}: none of its {len(dropped)} channels maps onto the channel "
                f"vocabulary ({shown}); rename them to 10-05 names with "
                "preprocess.rename_channels in the data config"
            )
        if dropped:
            raw.drop_channels(dropped)
            notes.append(f"dropped {len(dropped)} channel(s) not in the vocabulary: {dropped}")
    try:
        canon = canonicalize(raw.ch_names, source=source)
    except UnknownChannelError as err:
        raise ChannelNameError(str(err)) from err
    dup = sorted({c for c in canon if canon.count(c) > 1})
    if dup:
        clash = [f"{old}->{new}" for old, new in zip(raw.ch_names, canon) if new in dup]
        raise ChannelNameError(
            f"{source}: several channels map onto the same standard name: {clash}; drop one "
            "of each pair with preprocess.drop_channels in the data config"
        )
    mapping = {old: new for old, new in zip(raw.ch_names, canon) if old != new}
    if mapping:
        raw.rename_channels(mapping)
        notes.append(f"renamed channels to the standard vocabulary: {mapping}")
    return notes, dropped


def map_channels(raw: mne.io.BaseRaw, cfg: PreprocessConfig, source: str) -> list[str]:
    """Rename, drop and pick channels, then rename them to the standard vocabulary.

    :func:`select_channels` then :func:`canonicalize_channels` (an unknown name fails).

    Returns
    -------
    assumptions : list of str
        Notes on what was dropped.

    Raises
    ------
    IngestError
        If no channel of ``cfg.ch_types`` is left.
    ChannelNameError
        If a channel name has no vocabulary entry, or two map onto the same entry.
    """
    notes = select_channels(raw, cfg, source)
    return notes + canonicalize_channels(raw, source)[0]


def find_bad_channels(raw: mne.io.BaseRaw) -> tuple[list[str], list[str]]:
    """Return channels with non-finite values and channels that are flat.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Loaded data.

    Returns
    -------
    nonfinite, flat : list of str
        Channel names; flat means a standard deviation below 1e-6 of the median of the
        channels of the same type (or exactly zero).
    """
    data = raw.get_data()
    finite = np.isfinite(data).all(axis=1)
    nonfinite = [ch for ch, ok in zip(raw.ch_names, finite) if not ok]
    std = np.where(finite, np.nanstd(np.where(np.isfinite(data), data, 0.0), axis=1), np.nan)
    types = np.array(raw.get_channel_types())
    flat: list[str] = []
    for t in set(types.tolist()):
        sel = (types == t) & finite
        if not sel.any():
            continue
        ref = float(np.median(std[sel]))
        for i in np.flatnonzero(sel):
            if std[i] == 0.0 or std[i] < _FLAT_RATIO * ref:
                flat.append(raw.ch_names[i])
    return nonfinite, flat


def drop_or_raise_bad(raw: mne.io.BaseRaw, cfg: PreprocessConfig, source: str) -> list[str]:
    """Handle NaN/infinite and flat channels as ``cfg.on_bad_channel`` says.

    Returns
    -------
    assumptions : list of str
        A note naming dropped channels (``"drop"`` mode), else empty.

    Raises
    ------
    BadChannelError
        In ``"error"`` mode when any channel is bad, or when every channel is.
    """
    if cfg.on_bad_channel not in ("error", "drop"):
        raise ValueError(f"preprocess.on_bad_channel={cfg.on_bad_channel!r}; use 'error' or 'drop'")
    nonfinite, flat = find_bad_channels(raw)
    if not nonfinite and not flat:
        return []
    what = []
    if nonfinite:
        what.append(f"NaN/infinite values in {nonfinite}")
    if flat:
        what.append(f"flat signal in {flat}")
    desc = "; ".join(what)
    bad = nonfinite + flat
    if cfg.on_bad_channel == "error" or len(bad) == len(raw.ch_names):
        raise BadChannelError(
            f"{source}: bad channels: {desc}. Repair the recording, list them in "
            "preprocess.drop_channels, or set preprocess.on_bad_channel=drop"
        )
    raw.drop_channels(bad)
    return [f"dropped bad channels ({desc})"]


def filter_and_resample(raw: mne.io.BaseRaw, cfg: PreprocessConfig) -> list[str]:
    """Re-reference, notch, band-pass and resample ``raw`` in place.

    Cut-offs at or above the Nyquist frequency of the original or target rate are
    skipped (noted in the returned assumptions); resampling low-pass filters anyway.
    """
    notes: list[str] = []
    if cfg.reference == "average":
        if "eeg" in raw.get_channel_types():
            raw.set_eeg_reference("average", projection=False, verbose=False)
    elif cfg.reference:
        raise ValueError(f"preprocess.reference={cfg.reference!r}; use '' or 'average'")
    nyq = raw.info["sfreq"] / 2.0
    notch = [f for f in cfg.notch_freqs if f < nyq]
    if len(notch) < len(cfg.notch_freqs):
        notes.append(f"notch frequencies at or above Nyquist ({nyq} Hz) skipped")
    if notch:
        raw.notch_filter(notch, picks="all", verbose=False)
    h_freq = cfg.h_freq
    if h_freq is not None and h_freq >= min(nyq, cfg.sfreq / 2.0):
        notes.append(f"low-pass {h_freq} Hz skipped: not below Nyquist")
        h_freq = None
    if cfg.l_freq is not None or h_freq is not None:
        raw.filter(cfg.l_freq, h_freq, picks="all", verbose=False)
    if abs(raw.info["sfreq"] - cfg.sfreq) > 1e-6:
        raw.resample(cfg.sfreq, verbose=False)
    return notes


def preprocess_raw(raw: mne.io.BaseRaw, cfg: PreprocessConfig, source: str) -> list[str]:
    """Run the whole preprocessing chain on ``raw`` in place.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        Any MNE raw (loaded into memory here).
    cfg : PreprocessConfig
        Channel mapping, bad-channel policy, filters and target rate.
    source : str
        The data file, named in error messages.

    Returns
    -------
    assumptions : list of str
    """
    raw.load_data(verbose=False)
    notes = map_channels(raw, cfg, source)
    notes += drop_or_raise_bad(raw, cfg, source)
    notes += filter_and_resample(raw, cfg)
    return notes


def to_array(raw: mne.io.BaseRaw, start: int, stop: int) -> tuple[np.ndarray, list[str]]:
    """Return samples ``start:stop`` in stored units and the channel types.

    Returns
    -------
    data : ndarray, shape (n_channels, stop - start), float32
        Microvolts (EEG), femtotesla (mag) or femtotesla per centimetre (grad).
    ch_types : list of str
    """
    types = raw.get_channel_types()
    units = {t: UNITS[t] for t in set(types) if t in UNITS}
    data = raw.get_data(start=start, stop=stop, units=units)
    return data.astype(np.float32), types
