"""brainxl: translate brain activity between EEG/MEG and fMRI BOLD.

The notebook API. Functions import their machinery when called, so ``import brainxl``
stays light (nothing from ``brainxl.distrib`` is imported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def predict(run: str | Path, inputs: str | Path, out: str | Path | None = None, **kwargs: Any):
    """Predict BOLD from EEG/MEG (or back) for new recordings with a trained run.

    See :func:`brainxl.launch.cmd_predict.predict` for the keyword arguments
    (``subjects``, ``weights``, ``bold``, ``atlas``, ``atlas_labels``, ``tr``,
    ``raw_format``, ``report``, ``batch_size``, ``allow_missing_channels``, ``progress``).

    Returns
    -------
    list of brainxl.distrib.prediction.Prediction
        Per recording: ``data`` (n_times, n_series), ``names``, ``times`` (s from volume 0),
        ``units``, and ``true`` when the input holds the target.
    """
    from brainxl.launch.cmd_predict import predict as _predict

    return _predict(run, inputs, out, **kwargs)
