"""Translation objectives: MSE, Pearson-correlation, cosine and SAMBA's wavelet skip loss.

SAMBA models bring their own objective (``model.loss``); :func:`uses_model_loss` says when
the training loop uses it instead of :func:`build_objective`.

Every loss takes ``pred`` and ``target`` of the same shape: ``(B, R)`` for one BOLD frame
per ROI (NeuroBOLT), or ``(B, M, F)`` / ``(B, N, T)`` for sequences (SAMBA), where the last
axis is time. Correlations are taken over time for sequences and over the batch for
``(B, R)`` (per ROI, as the evaluation metrics do).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
            "check data.reader.n_targets and the model's output size"
        )


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements."""
    _check(pred, target)
    return F.mse_loss(pred.float(), target.float())


def pearson_r(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation per series.

    Parameters
    ----------
    pred, target : Tensor, shape (B, R) or (B, M, F)
        ``(B, R)``: correlated over the batch axis, one r per ROI. ``(B, M, F)``:
        correlated over the last (time) axis, one r per sample and channel.

    Returns
    -------
    r : Tensor, shape (R,) or (B, M)
    """
    _check(pred, target)
    dim = 0 if pred.ndim == 2 else -1
    p = pred.float() - pred.float().mean(dim, keepdim=True)
    t = target.float() - target.float().mean(dim, keepdim=True)
    num = (p * t).sum(dim)
    den = torch.sqrt((p * p).sum(dim) * (t * t).sum(dim) + eps)
    return num / den


def pearson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean Pearson r`` (see :func:`pearson_r` for the axis)."""
    return 1.0 - pearson_r(pred, target).mean()


def cosine_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean cosine similarity`` along the last axis (uncentred, as SAMBA).

    ``(B, R)``: one similarity per sample over the ROIs; ``(B, M, F)``: one per sample and
    channel over time.
    """
    _check(pred, target)
    return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1, eps=1e-8).mean()


def wavelet_decompose(
    x: torch.Tensor, wavelet: str = "haar", levels: int = 3
) -> list[torch.Tensor]:
    """Differentiable multi-level discrete wavelet transform along the last axis.

    Parameters
    ----------
    x : Tensor, shape (..., T)
    wavelet : str
        A PyWavelets wavelet name (``"haar"``, ``"db2"``...).
    levels : int
        Decomposition depth; stops early when the signal gets shorter than the filter.

    Returns
    -------
    coeffs : list of Tensor
        Detail coefficients of each level (finest first), then the final approximation.
    """
    import pywt

    w = pywt.Wavelet(wavelet)
    lo = torch.tensor(w.dec_lo[::-1], dtype=torch.float32, device=x.device)
    hi = torch.tensor(w.dec_hi[::-1], dtype=torch.float32, device=x.device)
    kernel = torch.stack([lo, hi]).unsqueeze(1)  # (2, 1, L)
    lead = x.shape[:-1]
    a = x.float().reshape(-1, 1, x.shape[-1])
    coeffs = []
    for _ in range(levels):
        if a.shape[-1] < kernel.shape[-1]:
            break
        out = F.conv1d(a, kernel, stride=2)
        coeffs.append(out[:, 1:2].reshape(*lead, -1))
        a = out[:, 0:1]
    coeffs.append(a.reshape(*lead, -1))
    return coeffs


def wavelet_skip_loss(
    pred: torch.Tensor, target: torch.Tensor, wavelet: str = "haar", levels: int = 3
) -> torch.Tensor:
    """SAMBA's wavelet loss: MSE between the wavelet coefficients of every level.

    Matching the coefficients per scale keeps the fast components that a plain MSE on a
    smooth target washes out. Each level's term is normalised by its number of elements.
    """
    _check(pred, target)
    cp = wavelet_decompose(pred, wavelet, levels)
    ct = wavelet_decompose(target, wavelet, levels)
    return sum(F.mse_loss(a, b) for a, b in zip(cp, ct)) / len(cp)


def uses_model_loss(name: str, model: object) -> bool:
    """Whether ``train.loss.name`` asks for the model's own objective.

    ``"samba"`` with a model that defines ``loss(pred, target, **aux)`` (the SAMBA models:
    cosine similarity, plus the wavelet-coefficient skip loss of fMRI -> EEG, fed with
    ``forward(..., return_aux=True)``'s extras) uses that loss, as the paper trains; for
    other models ``"samba"`` is the composite of :func:`build_objective`.
    """
    return name == "samba" and callable(getattr(model, "loss", None))


def build_objective(
    name: str,
    *,
    mse_weight: float = 1.0,
    pearson_weight: float = 1.0,
    wavelet_weight: float = 0.5,
    wavelet: str = "haar",
    wavelet_levels: int = 3,
) -> Objective:
    """Return ``objective(pred, target) -> (loss, parts)`` for ``name``.

    Parameters
    ----------
    name : {"mse", "pearson", "cosine", "samba"}
        ``samba`` = ``mse_weight * MSE + pearson_weight * (1 - r) + wavelet_weight *
        wavelet skip loss`` (models with their own ``loss``, i.e. SAMBA, use that instead:
        see :func:`uses_model_loss`).

    Returns
    -------
    objective : callable
        ``parts`` holds each term as a float, for logging.
    """
    simple = {"mse": mse_loss, "pearson": pearson_loss, "cosine": cosine_loss}
    if name in simple:
        fn = simple[name]

        def objective(pred: torch.Tensor, target: torch.Tensor):
            loss = fn(pred, target)
            return loss, {name: float(loss.detach())}

        return objective
    if name == "samba":

        def samba(pred: torch.Tensor, target: torch.Tensor):
            mse = mse_loss(pred, target)
            pear = pearson_loss(pred, target)
            wav = wavelet_skip_loss(pred, target, wavelet, wavelet_levels)
            loss = mse_weight * mse + pearson_weight * pear + wavelet_weight * wav
            parts = {"mse": float(mse.detach()), "pearson": float(pear.detach())}
            parts["wavelet"] = float(wav.detach())
            return loss, parts

        return samba
    raise ValueError(
        f"unknown loss {name!r}; set train.loss.name to one of mse, pearson, cosine, samba"
    )


__all__ = [
    "build_objective",
    "cosine_loss",
    "mse_loss",
    "pearson_loss",
    "pearson_r",
    "uses_model_loss",
    "wavelet_decompose",
    "wavelet_skip_loss",
]
