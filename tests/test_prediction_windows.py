"""Whole-recording windows and stitching of :mod:`distrib.prediction` with real (untrained)
models: every TR with a full window, multi-frame outputs averaged over overlapping windows,
normalisation from the training statistics only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from brainxl.distrib.config import load_config
from brainxl.distrib.prediction import RecordingInput, predict_recording, window_trs
from brainxl.distrib.tasks import build_model_and_adapter
from brainxl.distrib.trained_run import TrainedRun
from brainxl.shards.stats import NormStats

from brainxl.models.spec import DataShapes

CH = ["Fp1", "Fp2", "C3", "C4", "O1", "O2"]
ROIS = ["a", "b", "c"]
SF, TR = 200.0, 2.0


def _run(name: str, window_s: float, n_targets: int, *extra: str) -> TrainedRun:
    cfg = load_config(
        name,
        [
            *extra,
            f"data.reader.window_s={window_s}",
            f"data.reader.n_targets={n_targets}",
            "data.reader.modality=sensors",
            "train.batch_size=3",
        ],
    )
    shapes = DataShapes(
        ch_names=tuple(CH),
        roi_names=tuple(ROIS),
        sfreq=SF,
        window_s=window_s,
        n_frames=n_targets,
        tr=TR,
        modality="sensors",
    )
    torch.manual_seed(0)
    model, adapter = build_model_and_adapter(cfg.model, shapes)
    model.eval()
    norm = NormStats(
        ephys_mean=np.full(len(CH), 5.0, np.float32),
        ephys_std=np.full(len(CH), 20.0, np.float32),
        bold_mean=np.zeros(len(ROIS), np.float32),
        bold_std=np.ones(len(ROIS), np.float32),
        subjects=("01", "02"),
    )
    manifest = {
        "sfreq": SF,
        "tr": TR,
        "ch_names": CH,
        "roi_names": ROIS,
        "parcel_names": [],
        "subjects": {"01": {"ch_types": ["eeg"] * len(CH)}},
    }
    return TrainedRun(Path("run"), cfg, model, adapter, norm, "best", shapes, manifest)


def _recording(seconds: float, lead_in: float, n_trs: int | None = None) -> RecordingInput:
    rng = np.random.default_rng(0)
    ephys = (5.0 + 20.0 * rng.standard_normal((len(CH), int(seconds * SF)))).astype(np.float32)
    ents = {"subject": "09", "session": "", "task": "rest", "run": "1"}
    return RecordingInput("sub-09_task-rest_run-1", ents, "x.vhdr", TR, SF, lead_in, ephys, CH,
                          n_trs=n_trs)  # fmt: skip


def test_window_trs_takes_every_tr_with_a_full_window() -> None:
    # 10 s of data, volume 0 at 1 s, 4 s windows: TR k ends at sample (1 + 2k) * 200
    got = window_trs(100, 2000, 200, TR, 0.0, SF, 800, 1)
    assert [k for k, _ in got] == [2, 3, 4]  # k=2 starts at 1 s; k=5 would end at 11 s
    assert window_trs(sys.maxsize, 2000, 200, TR, 0.0, SF, 800, 1) == got  # stops at the end
    assert window_trs(100, 2000, 200, TR, 0.0, SF, 800, 3)[0][0] == 2
    assert window_trs(100, 2000, 200, TR, 0.0, SF, 800, 4)[0][0] == 3


def test_multi_frame_outputs_are_averaged_over_overlapping_windows() -> None:
    run = _run("samba-eeg2fmri-debug", 6.0, 3)
    rec = _recording(40.0, 6.0)
    pred = predict_recording(run, rec)
    assert pred.window_pred.shape[1:] == (len(ROIS), 3)
    trs = list(pred.window_trs)
    assert trs == list(range(2, 18))  # from the first TR with 3 frames to the data's end
    assert list(pred.volumes) == list(range(0, 18))
    for f in (0, 5, 16):
        parts = [pred.window_pred[i][:, f - k + 2] for i, k in enumerate(trs) if k - 2 <= f <= k]
        row = list(pred.volumes).index(f)
        np.testing.assert_allclose(pred.data[row], np.mean(parts, axis=0), rtol=1e-5)
    assert pred.true is None and pred.units.startswith("z-score")


def test_training_statistics_normalise_the_input() -> None:
    run = _run("neurobolt-debug", 2.0, 1, "model.overrides={scales: [0.5, 1.0]}")
    rec = _recording(12.0, 2.0)
    pred = predict_recording(run, rec, batch_size=2)
    # by hand: the first window with the training statistics (5, 20), not the recording's
    k, end = 0, 400 + 0
    x = (rec.ephys[:, end - 400 : end] - 5.0) / 20.0
    with torch.no_grad():
        y = run.model(torch.from_numpy(x[None]).float(), ch_idx=run.adapter.ch_idx)
    assert pred.window_trs[0] == k
    np.testing.assert_allclose(pred.window_pred[0], y[0].numpy(), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"x\.vhdr: electrophysiology at 100 Hz"):
        predict_recording(run, RecordingInput("k", {}, "x.vhdr", TR, 100.0, 0.0, rec.ephys, CH))
