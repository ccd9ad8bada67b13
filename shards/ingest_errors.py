"""Errors raised by BIDS ingest; each message names the offending file and the fix.

All derive from :class:`IngestError` (a ``ValueError``), so callers can catch one type.
They are re-exported by :mod:`shards.errors`.
"""

from __future__ import annotations

from brainxl.channels import UnknownChannelError


class IngestError(ValueError):
    """A BIDS dataset cannot be turned into recordings as it stands."""


class MissingFileError(IngestError):
    """A required data file or sidecar (``*_eeg.json``, ``*_bold.json``, ...) is missing."""


class SidecarError(IngestError):
    """A sidecar exists but lacks a required field or holds an invalid value."""


class SamplingRateError(IngestError):
    """Sampling rates (or the TR) disagree between a sidecar and the data it describes."""


class ShortRecordingError(IngestError):
    """The electrophysiology does not cover every BOLD volume of the run."""


class SyncError(IngestError):
    """Volume triggers are inconsistent with the BOLD run (spacing or count)."""


class BadChannelError(IngestError):
    """Channels with NaN/infinite values or flat signals."""


class ChannelNameError(IngestError, UnknownChannelError):
    """Channel names that do not map onto the standard vocabulary (or collide there)."""


class AtlasMismatchError(IngestError):
    """An atlas whose grid (shape or affine) differs from the BOLD image."""


class SourceModelError(IngestError):
    """The forward model or parcellation does not fit the recording."""
