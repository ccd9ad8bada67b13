"""Errors of the data side; each message names the offending file and the fix.

:class:`ShardError` is raised while writing or reading shards; the ingest errors
(``shards.ingest``: ``bids``, ``preprocess``, ``source_recon``) all derive from
:class:`IngestError`, so callers can catch one type. All are ValueErrors.
"""

from __future__ import annotations

from brainxl.channels import UnknownChannelError


class ShardError(ValueError):
    """A shard file is missing, truncated or corrupt.

    Parameters
    ----------
    path : str
        The shard file.
    key : str
        The sample key where the problem was found (``""`` when none was reached).
    reason : str
        What is wrong, with the fix where there is one.
    """

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = str(path)
        self.key = key
        self.reason = reason
        where = f"{self.path} (key {key})" if key else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep the fields across DataLoader worker pickling
        return (type(self), (self.path, self.key, self.reason))


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
