"""Cut a :class:`~shards.ingest.recording.Recording` into contiguous segments (shard samples).

A segment holds ``segment_trs`` consecutive TRs of one run (the last one may be shorter),
the BOLD frames of those TRs plus up to ``bold_lead_trs`` earlier frames (for multi-frame
targets), and the electrophysiology from ``lead_in_s`` seconds before its first TR up to
its last TR, so every training window of its TRs lies inside the segment.

Time bookkeeping is in whole samples relative to the run's first volume: run sample ``r``
is recording sample ``r + round(lead_in * sfreq)``. A segment stores ``ephys_offset``, the
run sample of its ephys column 0, so the window of TR ``k`` (ending at
``round((k * tr - lag) * sfreq)``) is cut with integer arithmetic only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from brainxl.shards.ingest.recording import Recording

FORMAT_VERSION = 1


@dataclass
class Segment:
    """One shard sample before encoding.

    Attributes
    ----------
    key : str
        Dot-free sample key, ``sub-01_task-rest_run-1_seg-0003``.
    ephys : ndarray, shape (n_channels, n_ephys), float32
    bold : ndarray, shape (n_rois, n_bold), float32
        Frames ``bold_first_tr .. first_tr + n_trs - 1`` of the run.
    parcels : ndarray, shape (n_parcels, n_ephys), float32 or None
    meta : dict
        JSON-serialisable description (see :func:`segment_recording`).
    """

    key: str
    ephys: np.ndarray
    bold: np.ndarray
    parcels: np.ndarray | None
    meta: dict[str, Any]


def tr_end_sample(k: int, tr: float, lag: float, sfreq: float) -> int:
    """Run sample (relative to the first volume) where the window of TR ``k`` ends (exclusive).

    Parameters
    ----------
    k : int
        TR index in the run.
    tr, lag, sfreq : float
        Repetition time (s), lag of the window end before the volume (s), sampling rate (Hz).

    Returns
    -------
    end : int
        ``round((k * tr - lag) * sfreq)``.
    """
    return int(round((k * tr - lag) * sfreq))


def segment_recording(
    rec: Recording, segment_trs: int, lead_in_s: float, bold_lead_trs: int = 0
) -> Iterator[Segment]:
    """Yield the contiguous segments of one recording.

    Parameters
    ----------
    rec : Recording
        A validated recording; ``rec.lead_in * rec.sfreq`` should be a whole number of
        samples (it is rounded).
    segment_trs : int
        TRs per segment (>= 1); all TRs are kept, the last segment may be shorter.
    lead_in_s : float
        Seconds of electrophysiology kept before each segment's first TR (clipped at the
        recording's start).
    bold_lead_trs : int
        Earlier BOLD frames kept before each segment's first TR (clipped at frame 0).

    Yields
    ------
    segment : Segment
        ``meta`` holds subject, session, task, run, segment, first_tr, n_trs,
        bold_first_tr, tr, sfreq, ephys_offset (run sample of ephys column 0), ephys_t0
        (seconds of ephys column 0 relative to the segment's first TR), n_ephys,
        ch_names, ch_types, roi_names, parcel_names, assumptions, format.
    """
    if segment_trs < 1:
        raise ValueError(f"segment_trs must be >= 1, got {segment_trs}; fix the sharding config")
    if lead_in_s < 0 or bold_lead_trs < 0:
        raise ValueError("lead_in_s and bold_lead_trs must be >= 0; fix the sharding config")
    sfreq, tr = float(rec.sfreq), float(rec.tr)
    n_trs = rec.bold.shape[1]
    n_times = rec.ephys.shape[1] if rec.parcels is None else rec.parcels.shape[1]
    if rec.parcels is not None and rec.ephys.shape[0] and rec.ephys.shape[1] != n_times:
        raise ValueError(
            f"{rec.source_files.get('ephys', rec.key)}: parcels have {n_times} samples but "
            f"ephys has {rec.ephys.shape[1]}; they must share one time grid"
        )
    zero = int(round(rec.lead_in * sfreq))  # recording sample of the first volume
    lead = int(round(lead_in_s * sfreq))
    for seg, k0 in enumerate(range(0, n_trs, segment_trs)):
        k1 = min(k0 + segment_trs, n_trs)
        b0 = max(0, k0 - bold_lead_trs)
        start = max(tr_end_sample(k0, tr, 0.0, sfreq) - lead, -zero)
        stop = min(tr_end_sample(k1 - 1, tr, 0.0, sfreq), n_times - zero)
        stop = max(stop, start)
        ephys = np.ascontiguousarray(rec.ephys[:, start + zero : stop + zero], dtype=np.float32)
        if ephys.shape[0] == 0:
            ephys = np.zeros((0, stop - start), dtype=np.float32)
        parcels = None
        if rec.parcels is not None:
            parcels = np.ascontiguousarray(
                rec.parcels[:, start + zero : stop + zero], dtype=np.float32
            )
        bold = np.ascontiguousarray(rec.bold[:, b0:k1], dtype=np.float32)
        key = f"{rec.key}_seg-{seg:04d}"
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "subject": rec.subject,
            "session": rec.session,
            "task": rec.task,
            "run": rec.run,
            "recording": rec.key,
            "segment": seg,
            "first_tr": k0,
            "n_trs": k1 - k0,
            "bold_first_tr": b0,
            "tr": tr,
            "sfreq": sfreq,
            "ephys_offset": start,
            "ephys_t0": start / sfreq - k0 * tr,
            "n_ephys": stop - start,
            "ch_names": list(rec.ch_names),
            "ch_types": list(rec.ch_types),
            "roi_names": list(rec.roi_names),
            "parcel_names": list(rec.parcel_names) if rec.parcels is not None else [],
            "assumptions": list(rec.assumptions),
            "extra": dict(rec.extra),
        }
        yield Segment(key=key, ephys=ephys, bold=bold, parcels=parcels, meta=meta)


def segment_windows(
    meta: dict[str, Any], window: int, lag: float, n_targets: int
) -> tuple[list[tuple[int, int, int]], int]:
    """The training windows a segment yields.

    Parameters
    ----------
    meta : dict
        Segment metadata (``first_tr``, ``n_trs``, ``bold_first_tr``, ``tr``, ``sfreq``,
        ``ephys_offset``, ``n_ephys``).
    window : int
        Window length in samples.
    lag : float
        Seconds between the window end and the volume.
    n_targets : int
        BOLD frames per window (``k - n_targets + 1 .. k``).

    Returns
    -------
    windows : list of (tr_index, ephys_start, bold_start)
        Run TR ``k``; ephys columns ``[ephys_start, ephys_start + window)`` of the segment;
        BOLD columns ``[bold_start, bold_start + n_targets)`` of the segment.
    skipped : int
        TRs whose window starts before (or ends after) the stored electrophysiology, or
        whose earlier BOLD frames are not stored.
    """
    out: list[tuple[int, int, int]] = []
    skipped = 0
    k0, n, b0 = int(meta["first_tr"]), int(meta["n_trs"]), int(meta["bold_first_tr"])
    offset, n_ephys = int(meta["ephys_offset"]), int(meta["n_ephys"])
    tr, sfreq = float(meta["tr"]), float(meta["sfreq"])
    for k in range(k0, k0 + n):
        end = tr_end_sample(k, tr, lag, sfreq) - offset
        bstart = k - n_targets + 1 - b0
        if end - window < 0 or end > n_ephys or bstart < 0:
            skipped += 1
            continue
        out.append((k, end - window, bstart))
    return out, skipped
