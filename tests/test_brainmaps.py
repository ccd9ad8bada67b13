"""Brain- and sensor-space figures and the derivative writers, on small synthetic images."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.figure import Figure

from brainxl import brainmaps as B
from brainxl import derivatives as D

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def atlas(tmp_path: Path) -> tuple[Path, Path]:
    """A 10^3 label image with labels 1, 2, 5 (one slab each) and its index/name table."""
    lab = np.zeros((10, 10, 10), np.int16)
    lab[1:4], lab[4:7], lab[7:9] = 1, 2, 5
    img = nib.Nifti1Image(lab, np.diag([3.0, 3.0, 3.0, 1.0]))
    path = tmp_path / "atlas-toy_dseg.nii.gz"
    nib.save(img, path)
    tsv = tmp_path / "atlas-toy_dseg.tsv"
    tsv.write_text("index\tname\n1\tfront\n2\tmiddle\n5\tback\n")
    return path, tsv


def _png(fig: Figure, path: Path) -> None:
    assert isinstance(fig, Figure)
    fig.savefig(path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_parcel_image_fills_each_parcel_with_its_value(atlas: tuple[Path, Path]) -> None:
    image, tsv = atlas
    img = D.parcel_image(np.array([0.5, -0.2, 0.9]), image, ["back", "front", "middle"], tsv)
    data = np.asarray(img.dataobj)
    assert data.shape == (10, 10, 10)
    assert data[8, 0, 0] == pytest.approx(0.5) and data[2, 5, 5] == pytest.approx(-0.2)
    assert data[5, 0, 9] == pytest.approx(0.9) and data[0].max() == 0.0
    series = np.arange(12, dtype=float).reshape(4, 3)
    img4 = D.parcel_image(series, image, ["front", "middle", "back"], tsv)
    assert img4.shape == (10, 10, 10, 4)
    np.testing.assert_allclose(np.asarray(img4.dataobj)[8, 3, 3], series[:, 2])
    with pytest.raises(ValueError, match=r"atlas-toy_dseg\.tsv: ROIs \['nowhere'\]"):
        D.parcel_image(np.zeros(1), image, ["nowhere"], tsv)


def test_roi_values_on_the_brain(atlas: tuple[Path, Path], tmp_path: Path) -> None:
    image, tsv = atlas
    fig = B.plot_roi_values_brain(
        np.array([0.4, np.nan, -0.3]), ["front", "middle", "back"], image, tsv
    )
    _png(fig, tmp_path / "brain.png")
    assert len(fig.axes) >= 3  # three cuts (and a colour bar)


def test_readout_topomaps_from_a_neurobolt_channel_readout(tmp_path: Path) -> None:
    from brainxl.channels import channel_indices
    from brainxl.models.neurobolt import NeuroBOLT

    names = ["Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2"]
    model = NeuroBOLT.from_flavor("debug", n_rois=3, window_s=4, readout="channel")
    w = B.neurobolt_channel_weights(model, channel_indices(names))
    assert w.shape == (3, len(names))
    a = model.channel_readout.channels.detach().numpy()[np.array(channel_indices(names)) + 1]
    np.testing.assert_allclose(np.abs(w), np.linalg.norm(a, axis=2).T, rtol=1e-6)
    fig = B.plot_channel_weight_topomaps(w, names, ["r0", "r1", "r2"])
    _png(fig, tmp_path / "topo.png")
    assert (
        B.neurobolt_channel_weights(NeuroBOLT.from_flavor("debug", n_rois=3, window_s=4), [0])
        is None
    )
    with pytest.raises(ValueError, match="scalp position"):
        B.plot_channel_weight_topomaps(w[:, :2], ["MEG0111", "MEG0112"], ["r0", "r1", "r2"])


def test_power_spectra_and_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2000) / 200.0
    true = np.sin(2 * np.pi * 10 * t)[:, None] + 0.1 * rng.standard_normal((2000, 3))
    pred = 0.5 * true + 0.1 * rng.standard_normal((2000, 3))
    fig = B.plot_power_spectra(pred, true, 200.0, ["a", "b", "c"])
    _png(fig, tmp_path / "psd.png")
    assert len([a for a in fig.axes if a.get_visible()]) == 4
    _png(B.plot_prediction_timeseries(pred, t, ["a", "b", "c"], 2), tmp_path / "ts.png")


def test_html_report_and_figure_order(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    figs = {"a": Figure(), "roi_r_vs_ceiling": Figure(), "z": Figure()}
    out = B.insert_after(figs, "roi_r_vs_ceiling", {"roi_r_brain": Figure()})
    assert list(out) == ["a", "roi_r_vs_ceiling", "roi_r_brain", "z"]
    path = B.write_html_report(tmp_path / "r.html", {"x": Figure()}, "title <1>", ["line"])
    text = path.read_text()
    assert "title &lt;1&gt;" in text and text.count("<img") == 1


def test_roi_timeseries_and_raw_writers(tmp_path: Path) -> None:
    import mne

    ents = {"subject": "07", "session": "", "task": "rest", "run": "2"}
    data = np.random.default_rng(1).standard_normal((5, 2))
    path = D.write_roi_timeseries(tmp_path, ents, data, ["x", "y"], 2.0, 4.0, source="s.vhdr")
    assert path.name == "sub-07_task-rest_run-2_desc-brainxl_timeseries.tsv"
    back, names, meta = D.read_roi_timeseries(path)
    np.testing.assert_allclose(back, data, rtol=1e-8)
    assert names == ["x", "y"] and meta["StartTime"] == 4.0 and meta["SamplingFrequency"] == 0.5
    eeg = np.random.default_rng(2).standard_normal((400, 3)) * 10.0  # µV
    raw_path = D.write_raw(tmp_path, ents, eeg, ["Cz", "Pz", "Oz"], ["eeg"] * 3, 200.0)
    raw = mne.io.read_raw(raw_path, preload=True, verbose=False)
    assert raw.ch_names == ["Cz", "Pz", "Oz"] and raw.info["sfreq"] == 200.0
    assert raw.info["chs"][0]["unit"] == mne.io.constants.FIFF.FIFF_UNIT_V
    np.testing.assert_allclose(raw.get_data().T * 1e6, eeg, rtol=1e-5)
    with pytest.raises(ValueError, match="raw format 'gdf'"):
        D.write_raw(tmp_path, ents, eeg, ["Cz", "Pz", "Oz"], ["eeg"] * 3, 200.0, "gdf")
    desc = D.write_description(tmp_path, "run-abc", "best", model="neurobolt (debug)")
    import json

    content = json.loads(desc.read_text())
    assert (
        content["DatasetType"] == "derivative"
        and "run-abc" in content["GeneratedBy"][0]["Description"]
    )


def test_import_brainxl_does_not_import_the_runtime() -> None:
    import subprocess
    import sys

    code = (
        "import sys, brainxl; assert callable(brainxl.predict); "
        "print(sorted(m for m in sys.modules if m.startswith(('brainxl.distrib', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
