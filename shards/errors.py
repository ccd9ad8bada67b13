"""Errors raised while writing or reading shards."""

from __future__ import annotations


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


# Ingest errors (shards.bids / shards.preprocess / shards.source) live in their own module.
from shards.ingest_errors import (  # noqa: E402
    AtlasMismatchError,
    BadChannelError,
    ChannelNameError,
    IngestError,
    MissingFileError,
    SamplingRateError,
    ShortRecordingError,
    SidecarError,
    SourceModelError,
    SyncError,
)

__all__ = [
    "AtlasMismatchError",
    "BadChannelError",
    "ChannelNameError",
    "IngestError",
    "MissingFileError",
    "SamplingRateError",
    "ShardError",
    "ShortRecordingError",
    "SidecarError",
    "SourceModelError",
    "SyncError",
]
