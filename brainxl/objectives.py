"""Every training objective, once: MSE, Pearson r, cosine, the wavelet skip loss.

One Pearson r (:func:`pearson_r`), one cosine similarity (:func:`cosine_loss`), one
discrete wavelet transform (:class:`brainxl.models.wavelets.DWT1d`, PyWavelets' ``wavedec``
with its boundary handling) serve both the configurable objectives of ``train.loss`` and
the models' own losses (SAMBA's cosine and wavelet-coefficient skip loss).

Every loss takes ``pred`` and ``target`` of the same shape: ``(B, R)`` for one BOLD frame
per ROI (NeuroBOLT), or ``(B, M, F)`` / ``(B, N, T)`` for sequences (SAMBA), where the last
axis is time. Correlations are taken over time for sequences and over the batch for
``(B, R)`` (per ROI, as the evaluation metrics do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]

#: ``train.loss.name`` values. ``model``: the model spec's own objective (required);
#: ``samba``: the spec's own objective where it has one (:func:`uses_model_loss`), else
#: the MSE + Pearson + wavelet composite.
LOSS_NAMES = ("mse", "pearson", "cosine", "samba", "model")


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


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """float32, or float64 when the input already is (metrics keep double precision)."""
    return x if x.dtype == torch.float64 else x.float()


def correlation(
    pred: torch.Tensor,
    target: torch.Tensor,
    dim: int = -1,
    centered: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Correlation per series along ``dim``: Pearson r (``centered``) or cosine similarity.

    The one correlation of the project: :func:`pearson_r`, :func:`cosine_loss` and the
    evaluation metrics (:func:`brainxl.metrics.pearson_per_roi`,
    :func:`brainxl.metrics.cosine_per_roi`) all compute it here.

    Parameters
    ----------
    pred, target : Tensor, same shape
    dim : int
        Axis correlated over (time, or the batch for ``(B, R)`` frames).
    centered : bool
        Subtract each series' mean first (Pearson r); ``False``: uncentred cosine.
    eps : float
        Added under the square root of the product of the squared norms (0: a series
        without spread gives nan).

    Returns
    -------
    Tensor, the shape of ``pred`` without ``dim`` (float32, float64 for float64 input)
    """
    _check(pred, target)
    p, t = _as_float(pred), _as_float(target)
    if centered:
        p = p - p.mean(dim, keepdim=True)
        t = t - t.mean(dim, keepdim=True)
    num = (p * t).sum(dim)
    den = torch.sqrt((p * p).sum(dim) * (t * t).sum(dim) + eps)
    return num / den


def pearson_r(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8, dim: int | None = None
) -> torch.Tensor:
    """Pearson correlation per series (:func:`correlation`, centred).

    Parameters
    ----------
    pred, target : Tensor, shape (B, R) or (B, M, F)
        ``(B, R)``: correlated over the batch axis, one r per ROI. ``(B, M, F)``:
        correlated over the last (time) axis, one r per sample and channel.
    eps : float
        Added under the square root of the variance product (keeps gradients finite).
    dim : int, optional
        Correlate along this axis instead of the default above.

    Returns
    -------
    r : Tensor, shape (R,) or (B, M)
    """
    if dim is None:
        dim = 0 if pred.ndim == 2 else -1
    return correlation(pred, target, dim, centered=True, eps=eps)


def correlation_moments(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sums that :func:`pearson_from_moments` turns into Pearson r per column.

    For streams (and ranks): add the moments of every batch (and all-reduce them), then
    take r once. ``pred, target`` of shape ``(n, R)`` give a ``(6, R)`` tensor.
    """
    _check(pred, target)
    p, y = pred, target
    return torch.stack(
        [
            p.sum(0),
            y.sum(0),
            (p * p).sum(0),
            (y * y).sum(0),
            (p * y).sum(0),
            torch.full_like(p[0], len(p)),
        ]
    )


def pearson_from_moments(sums: torch.Tensor) -> torch.Tensor:
    """Pearson r per column from summed :func:`correlation_moments` (same r as
    :func:`pearson_r` over the concatenated rows, up to rounding)."""
    sp, sy, spp, syy, spy, n = sums
    cov = spy / n - sp / n * sy / n
    var_p, var_y = spp / n - (sp / n) ** 2, syy / n - (sy / n) ** 2
    return cov / torch.sqrt(var_p.clamp_min(1e-12) * var_y.clamp_min(1e-12))


def pearson_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean Pearson r`` (see :func:`pearson_r` for the axis)."""
    return 1.0 - pearson_r(pred, target).mean()


def cosine_loss(
    pred: torch.Tensor, target: torch.Tensor, centered: bool = False, eps: float = 1e-8
) -> torch.Tensor:
    """``1 - mean cosine similarity`` along the last axis (uncentred, as SAMBA).

    ``(B, R)``: one similarity per sample over the ROIs; ``(B, M, F)``: one per sample and
    channel over time. ``centered=True`` subtracts each series' mean first, i.e.
    ``1 - mean Pearson r`` over the last axis.

    Returns
    -------
    Tensor, scalar in ``[0, 2]``.
    """
    return 1.0 - correlation(pred, target, -1, centered=centered, eps=eps).mean()


def wavelet_band_loss(pred: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over bands of the MSE between predicted and target wavelet coefficients.

    Parameters
    ----------
    pred, target : sequence of Tensor
        ``[cA_J, cD_J, ..., cD_1]``, band ``j`` of shape ``(..., n_j)`` in both.

    Returns
    -------
    Tensor, scalar.
    """
    if len(pred) != len(target):
        raise ValueError(f"skip loss: {len(pred)} predicted bands vs {len(target)} target bands")
    losses = [F.mse_loss(p.float(), t.float()) for p, t in zip(pred, target)]
    return torch.stack(losses).mean()


def wavelet_skip_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    wavelet: str = "haar",
    levels: int = 3,
    mode: str = "symmetric",
) -> torch.Tensor:
    """SAMBA's wavelet loss on signals: :func:`wavelet_band_loss` of their DWTs.

    Matching the coefficients per scale keeps the fast components that a plain MSE on a
    smooth target washes out. The DWT is :class:`brainxl.models.wavelets.DWT1d`
    (``pywt.wavedec`` with ``mode`` boundary extension) along the last axis.
    """
    from brainxl.models.wavelets import DWT1d

    _check(pred, target)
    dwt = DWT1d(wavelet, levels, mode).to(pred.device)
    return wavelet_band_loss(dwt(pred.float()), dwt(target.float()))


def uses_model_loss(name: str, model: object) -> bool:
    """Whether ``train.loss.name`` asks for the model's own objective.

    ``model`` is a model or its spec (:class:`brainxl.models.spec.ModelSpec`): either has
    a callable ``loss`` when the family brings its own objective. ``"model"`` always asks
    for it (a ``ValueError`` names the model when there is none); ``"samba"`` asks for it
    where there is one (the SAMBA models: cosine similarity, plus the wavelet-coefficient
    skip loss of fMRI -> EEG, as the paper trains), else means the composite of
    :func:`build_objective`.
    """
    own = callable(getattr(model, "loss", None))
    if name == "model" and not own:
        label = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"train.loss.name=model but {label!r} has no loss of its own; choose one of "
            f"{', '.join(n for n in LOSS_NAMES if n != 'model')}"
        )
    return name in ("samba", "model") and own


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
        wavelet skip loss`` (models with their own loss, i.e. SAMBA, use that instead:
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
        f"unknown loss {name!r}; set train.loss.name to one of {', '.join(LOSS_NAMES)}"
    )


__all__ = [
    "LOSS_NAMES",
    "build_objective",
    "correlation",
    "correlation_moments",
    "pearson_from_moments",
    "cosine_loss",
    "mse_loss",
    "pearson_loss",
    "pearson_r",
    "uses_model_loss",
    "wavelet_band_loss",
    "wavelet_skip_loss",
]
