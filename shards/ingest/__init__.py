"""Ingest: a BIDS dataset -> :class:`~brainxl.shards.ingest.recording.Recording` per run.

``bids`` finds the runs, reads sidecars, the electrophysiology (mne-bids) and the BOLD
target and synchronises them; ``preprocess`` maps channels and filters/resamples with
MNE; ``source_recon`` reconstructs atlas parcels from a forward model; ``recording``
holds the in-memory contract the shard writer consumes. Nothing after ingest reads BIDS
files again.
"""
