"""SAMBA's objectives: cosine similarity over time and wavelet-coefficient skip losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cosine_loss(pred: Tensor, target: Tensor, centered: bool = False, eps: float = 1e-8) -> Tensor:
    """``1 - cos(pred, target)`` over time, averaged over windows and parcels.

    Parameters
    ----------
    pred, target : Tensor, shape (B, P, T)
    centered : bool
        Subtract each series' mean first (``1 - Pearson r``); default uncentred, as SAMBA.

    Returns
    -------
    Tensor, scalar in ``[0, 2]``.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape"
        )
    pred, target = pred.float(), target.float()
    if centered:
        pred = pred - pred.mean(-1, keepdim=True)
        target = target - target.mean(-1, keepdim=True)
    return 1.0 - F.cosine_similarity(pred, target, dim=-1, eps=eps).mean()


def wavelet_skip_loss(pred: list[Tensor], target: list[Tensor]) -> Tensor:
    """Mean over bands of the MSE between predicted and target wavelet coefficients.

    Parameters
    ----------
    pred, target : list of Tensor
        ``[cA_J, cD_J, ..., cD_1]``, band ``j`` of shape ``(..., n_j)`` in both.

    Returns
    -------
    Tensor, scalar.
    """
    if len(pred) != len(target):
        raise ValueError(f"skip loss: {len(pred)} predicted bands vs {len(target)} target bands")
    losses = [F.mse_loss(p.float(), t.float()) for p, t in zip(pred, target)]
    return torch.stack(losses).mean()
