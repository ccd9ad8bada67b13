"""brainxl: train models that translate brain activity between EEG/MEG and fMRI BOLD.

The notebook API (each call is the matching ``brainxl`` command):

- :func:`brainxl.api.simulate` -- a simulated EEG-fMRI BIDS dataset with ground truth
- :func:`brainxl.api.shard` -- BIDS -> per-subject WebDataset shards
- :func:`brainxl.api.train` -- train or resume a run on local DeepSpeed ranks
- :func:`brainxl.api.pretrain` -- pretrain the EEG tokenizer / encoder on EEG-only shards
- :func:`brainxl.api.evaluate` -- score a run on held-out subjects, write its report
- :func:`brainxl.api.predict` -- run a trained model on new recordings, write derivatives
- :func:`brainxl.api.sweep` -- nested leave-one-subject-out hyperparameter sweep (Ray Tune)

``import brainxl`` imports none of the runtime (torch, DeepSpeed, MNE) until a call needs it.
"""

from brainxl.api import (
    evaluate,
    load_config,
    predict,
    pretrain,
    shard,
    simulate,
    sweep,
    train,
)

__all__ = [
    "evaluate",
    "load_config",
    "predict",
    "pretrain",
    "shard",
    "simulate",
    "sweep",
    "train",
]
