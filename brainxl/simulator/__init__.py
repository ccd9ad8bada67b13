"""The physically grounded EEG-fMRI simulator (the embedded default dataset).

A sphere head model fitted to any MNE montage, volume sources clustered into parcels,
band-limited oscillations on a 1/f background driving both the EEG (through the
leadfield) and the BOLD (band power convolved with per-parcel HRFs), written as a
valid BIDS dataset with the ground truth under ``derivatives/brainxl-sim``.
"""

from brainxl.simulator.dataset import SimulationSummary, legacy_name, simulate_dataset

__all__ = ["SimulationSummary", "legacy_name", "simulate_dataset"]
