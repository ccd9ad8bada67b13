"""`brainxl simulate`, determinism, EDF + legacy channel names, and refusal of bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from brainxl.channels import canonical_name
from brainxl.simulator import legacy_name, simulate_dataset

SMALL = dict(n_subjects=1, minutes=0.25, n_parcels=8, lead_in=4.0)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = simulate_dataset(tmp_path / "a", seed=3, **SMALL)
    simulate_dataset(tmp_path / "b", seed=3, **SMALL)
    simulate_dataset(tmp_path / "c", seed=4, **SMALL)
    da, db, dc = (_digest(tmp_path / k) for k in "abc")
    assert da == db
    assert da.keys() == dc.keys()
    eeg = "sub-01/eeg/sub-01_task-rest_run-1_eeg.eeg"
    assert da[eeg] != dc[eeg]
    assert a.n_volumes == 8 and a.subjects == ["01"]
    assert 0.0 < a.noise_ceiling_mean["01"] < 1.0
    assert a.timings["total"] > 0


def test_edf_legacy_reads_back_with_mappable_names(sim_bids_edf_legacy):
    import mne_bids

    root = sim_bids_edf_legacy
    bp = mne_bids.BIDSPath(root=root, subject="02", task="rest", run="1", datatype="eeg")
    assert bp.fpath.suffix == ".edf"
    raw = mne_bids.read_raw_bids(bp, verbose=False)
    assert len(raw.ch_names) == 74  # easycap-M1
    assert "EEG T3-REF" in raw.ch_names and "EEG T7-REF" not in raw.ch_names
    canon = [canonical_name(c) for c in raw.ch_names]
    assert None not in canon and "T7" in canon and "P8" in canon
    x = raw.get_data()
    assert 8e-6 < np.sqrt((x**2).mean()) < 40e-6
    assert (raw.annotations.description == "Volume").sum() == 45
    pos = raw.get_montage().get_positions()["ch_pos"]
    assert np.linalg.norm(pos["EEG T3-REF"]) > 0.05  # electrode positions survive renaming


def test_legacy_name():
    assert legacy_name("T7") == "EEG T3-REF"
    assert legacy_name("P8") == "EEG T6-REF"
    assert legacy_name("Cz") == "EEG Cz-REF"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(fmt="GDF"), "BrainVision"),
        (dict(channel_style="tuh"), "legacy"),
        (dict(montage="standard_9999"), "biosemi64"),
        (dict(minutes=0.01), "at least 4 volumes"),
        (dict(sfreq=50.0), "100 Hz"),
        (dict(task="rest-1"), "alphanumeric"),
    ],
)
def test_bad_arguments_fail_before_writing(tmp_path, kwargs, match):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=match):
        simulate_dataset(out, **{**SMALL, **kwargs})
    assert not out.exists()


def test_cli_writes_and_refuses_non_empty_out(tmp_path, capsys):
    from brainxl.launch.cli import main

    out = tmp_path / "bids"
    argv = ["simulate", str(out), "--subjects", "1", "--minutes", "0.25", "--parcels", "8"]
    assert main([*argv, "--lead-in", "4", "--seed", "5"]) == 0
    text = capsys.readouterr().out
    assert "elapsed" in text and "sub-01" in text
    assert (out / "sub-01/func/sub-01_task-rest_run-1_bold.nii.gz").is_file()
    keep = out / "notes.txt"
    keep.write_text("mine")
    before = _digest(out)
    assert main([*argv, "--seed", "6"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert _digest(out) == before  # nothing touched
    assert main([*argv, "--seed", "6", "--overwrite", "--format", "EDF"]) == 0
    assert keep.read_text() == "mine"
    assert (out / "sub-01/eeg/sub-01_task-rest_run-1_eeg.edf").is_file()


def test_validator_catches_a_broken_dataset(tmp_path):
    import json

    from brainxl.simulator.validate import find_validator, validate_bids, validation_errors

    if find_validator() is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    root = tmp_path / "bids"
    simulate_dataset(root, **SMALL)
    assert validation_errors(validate_bids(root)) == []
    sidecar = root / "sub-01/func/sub-01_task-rest_run-1_bold.json"
    meta = json.loads(sidecar.read_text())
    del meta["RepetitionTime"]
    sidecar.write_text(json.dumps(meta))
    assert validation_errors(validate_bids(root)) != []
