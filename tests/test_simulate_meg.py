"""Optional MEG: a 306-channel helmet on the same sources, written as BIDS FIF."""

from __future__ import annotations

import numpy as np

from brainxl.channels import canonical_name
from brainxl.simulator import simulate_dataset
from brainxl.simulator.meg import meg_channels


def test_helmet_channels_match_the_vocabulary():
    names, types, uv = meg_channels()
    assert len(names) == 306 and types.count("mag") == 102 and types.count("grad") == 204
    assert all(canonical_name(n) is not None for n in names)
    assert np.linalg.norm(uv, axis=1).max() == 1.0


def test_meg_is_written_and_reads_back(tmp_path):
    import mne
    import mne_bids

    root = tmp_path / "bids"
    simulate_dataset(root, n_subjects=1, minutes=0.25, n_parcels=8, lead_in=4.0, meg=True)
    bp = mne_bids.BIDSPath(root=root, subject="01", task="rest", run="1", datatype="meg")
    assert bp.fpath.suffix == ".fif"
    raw = mne_bids.read_raw_bids(bp, verbose=False)
    assert len(raw.ch_names) == 306
    mag = raw.get_data(picks="mag")
    grad = raw.get_data(picks="grad")
    assert 20e-15 < np.sqrt((mag**2).mean()) < 5e-12  # tens of fT to a few pT
    assert 1e-13 < np.sqrt((grad**2).mean()) < 1e-10  # T/m
    assert (raw.annotations.description == "Volume").sum() == 8
    fwd = mne.read_forward_solution(
        root / "derivatives/brainxl-sim/sub-01/eeg/sub-01_desc-headmodel_fwd.fif", verbose=False
    )
    assert fwd["nchan"] == 306 + 64 and np.isfinite(fwd["sol"]["data"]).all()
    # the EEG of the same subject is still there
    eeg = mne_bids.BIDSPath(root=root, subject="01", task="rest", run="1", datatype="eeg")
    assert eeg.fpath.exists()
    # the drive of a dataset with MEG is re-drawn as well (checked against its BOLD)
    from brainxl.simulator.truth import subject_truth

    assert subject_truth(root, "01").bold().shape == (8, 8)
    from brainxl.simulator.validate import find_validator, validate_bids, validation_errors

    if find_validator() is not None:
        report = validate_bids(root)
        assert validation_errors(report) == []
        assert "MEG" in report["summary"]["modalities"]
