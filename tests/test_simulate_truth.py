"""brainxl.simulator.truth: a subject's drive re-drawn from the seed, and the population's
average coupling, HRF and head."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

DERIV = "derivatives/brainxl-sim"


def _written_noise_free(root, sub):
    (path,) = (root / DERIV / f"sub-{sub}" / "func").glob("*_desc-noisefree_timeseries.tsv")
    return np.loadtxt(path, delimiter="\t", skiprows=1).T


def _r(a, b):
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])


@pytest.mark.parametrize("sub", ["01", "sub-03"])
def test_redrawn_drive_reproduces_the_written_noise_free_bold(sim_bids, sub):
    from brainxl.simulator.truth import subject_truth

    truth = subject_truth(sim_bids, sub)
    label = sub.removeprefix("sub-")
    written = _written_noise_free(sim_bids, label)
    assert truth.subject == label and len(truth.parcel_names) == written.shape[0] == 64
    assert _r(truth.bold(), written).min() > 0.99999
    # the population's coupling and HRF predict the same BOLD less well, but far from chance
    pop = _r(truth.bold(population=True), written)
    assert pop.max() < 0.9999 and np.median(pop) > 0.8, (pop.max(), np.median(pop))


def test_another_subjects_draw_does_not_reproduce_it(sim_bids):
    from brainxl.simulator.truth import subject_truth

    own = _written_noise_free(sim_bids, "01")
    other = subject_truth(sim_bids, "02").bold()
    assert np.median(np.abs(_r(other, own))) < 0.5


def test_a_dataset_from_another_seed_is_refused_naming_the_file(sim_bids, tmp_path):
    from brainxl.simulator.truth import subject_truth

    root = tmp_path / "bids"
    shutil.copytree(sim_bids / DERIV / "sub-01", root / DERIV / "sub-01")
    params = root / DERIV / "sub-01" / "sub-01_desc-simulation_params.json"
    p = json.loads(params.read_text())
    p["seed"] += 1
    params.write_text(json.dumps(p))
    with pytest.raises(
        ValueError, match=r"noisefree_timeseries\.tsv: re-drawing sub-01 .*re-simulate"
    ):
        subject_truth(root, "01")
    del p["seed"]
    params.write_text(json.dumps(p))
    with pytest.raises(ValueError, match=r"simulation_params\.json: lacks seed"):
        subject_truth(root, "01")
    with pytest.raises(FileNotFoundError, match="sub-02_desc-simulation_params.json: missing"):
        subject_truth(root, "02")
    with pytest.raises(ValueError, match="sub-ab: `brainxl simulate` numbers its subjects"):
        subject_truth(root, "sub-ab")


def test_population_coupling_and_hrf_are_the_means_of_the_draws():
    from brainxl.simulator.hemodynamics import (
        mean_coupling,
        mean_hrf_kernel,
        sample_coupling,
        sample_hrfs,
    )

    rng = np.random.default_rng(5)
    drawn = sample_coupling(rng, 200_000)
    mean = mean_coupling(3)
    for band in ("alpha", "beta", "gamma"):
        assert mean[band].shape == (3,)
        assert drawn[band].mean() == pytest.approx(mean[band][0], abs=2e-3)
    assert mean["alpha"][0] < 0 < mean["beta"][0] < mean["gamma"][0]
    h = mean_hrf_kernel(0.1)
    _, k = sample_hrfs(np.random.default_rng(9), 20_000).kernels(0.1)
    assert np.abs(h - k.mean(0)).max() < 0.01
    assert 5.0 < 0.1 * np.argmax(h) < 6.5 and h.min() < 0  # peak, then undershoot


def test_template_gain_is_a_head_of_the_population_on_the_given_channels(sim_bids):
    from brainxl.shards.config import IngestConfig
    from brainxl.shards.ingest.bids import load_subject

    from brainxl.simulator.truth import template_gain

    (rec,) = load_subject(sim_bids, "01", IngestConfig())
    names = list(rec.ch_names)
    gain = template_gain(sim_bids, names)
    assert gain.shape == (len(names), 64)
    np.testing.assert_allclose(gain.sum(axis=0), 0.0, atol=1e-12 * np.abs(gain).max())
    # channel order follows the request
    np.testing.assert_allclose(
        template_gain(sim_bids, names[::-1]), gain[::-1], rtol=0, atol=1e-9 * np.abs(gain).max()
    )
    with pytest.raises(ValueError, match=r"\['Xx'\] are not electrodes of the dataset's montage"):
        template_gain(sim_bids, ["Xx", *names[1:]])
