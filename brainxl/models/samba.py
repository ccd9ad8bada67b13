"""SAMBA: translation between electrophysiology (EEG/MEG) and fMRI BOLD, both directions.

Built as the paper describes (Spatiotemporal Alignment of Multimodal Brain Activity),
without the released code's defects (see ``/work/shared/MODELS.md``): every parameter is
registered, the HRF is causal and normalised, the wavelet attention depends on the input,
the graphs are sparse, evaluation is deterministic and sees no ground truth.

Electrophysiology -> fMRI (:class:`SambaEEG2fMRI`), for a window of ``F`` TRs,
``x (B, N, T)`` with ``T = F * S`` (``S = sfreq * tr`` samples per TR):

1. per-parcel learnable double-gamma HRF, causal FFT convolution at ``sfreq``;
2. the HRF output is cut into ``F`` chunks of ``S`` samples; a ``level``-level DWT of each
   chunk (one matmul with the exact DWT matrix of an ``S``-sample chunk); attention over
   the ``level + 1`` scales (softmax of scores computed from each band's coefficients and
   log-energy, so per window, parcel and chunk) pools them into one ``d``-vector per
   (parcel, chunk);
3. GATv2 on the ``N``-node source graph, a learned ``N -> M`` map over nodes, GATv2 on
   the ``M``-node target graph (all ``B * F`` graphs in one call);
4. per frame, each parcel's features are reduced to ``frame_channels`` values and the
   ``M * frame_channels`` vector of the window runs through a recurrent block over the
   ``F`` frames (a 2-layer LSTM by default as the reference, GRU or a causal convolution
   by config; one sequence per window, not per parcel, so it costs little), whose output
   is added back per parcel before a shared linear read-out.

Alignment: output frame ``f`` is the BOLD at the END of TR-chunk ``f``, i.e. at time
``(f + 1) * tr`` after the window start, and depends on input samples ``[0, (f+1) * S)``
only (the HRF is causal with zero history before the window, the DWT is per chunk, the
graphs act within a frame and the recurrence runs forward). Hence a window must be long
enough for the HRF lead-in: early frames see less history.

fMRI -> electrophysiology (:class:`SambaFMRI2EEG`), ``y (B, M, F) -> x (B, N, T)``:
a bidirectional LSTM over the ``F`` frames of the window (the BOLD of a chunk lags it by
seconds, so the reverse direction must look ahead) giving per-parcel context, GATv2 on the
``M`` nodes, a learned ``M -> N`` map, GATv2 on the ``N`` nodes, a linear head to the DWT
coefficients of each chunk, the inverse DWT (the learned upsampling from one vector per
TR to ``S`` samples: no recurrence over samples), then the Wiener pseudo-inverse of the
learnable HRF. ``forward(y, return_aux=True)`` also returns the predicted coefficients;
:meth:`SambaFMRI2EEG.loss` then adds the wavelet skip loss against the DWT of the target
convolved with the current (detached) HRF.

Evaluation is deterministic: dropout is the only randomness (off in ``eval()``) and no
ground-truth frame is ever an input.

Graphs: ``set_graphs(src_edge_index, tgt_edge_index)`` with ``src`` the INPUT side (EEG for
eeg2fmri, fMRI for fmri2eeg), built with :func:`brainxl.models.graph.fc_graph` on
training subjects. Until set, each side uses :func:`brainxl.models.graph.ring_graph`
with ``graph_k`` neighbours. The graphs are buffers (they move with ``.to()`` and are saved
in ``state_dict``; loading resizes them to the saved edge count).

Sensor-level input works the same way: ``n_eeg`` is then the channel count.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from brainxl.models import samba_spec
from brainxl.models.graph import (
    GraphAttentionBlock,
    check_edge_index,
    neighbour_table,
    ring_graph,
)
from brainxl.models.hrf import DoubleGammaHRF
from brainxl.models.registry import ModelSpec, register_model
from brainxl.models.wavelets import coeff_lengths, dwt_matrix, idwt_matrix
from brainxl.objectives import cosine_loss, wavelet_band_loss

TEMPORAL_KINDS = ("lstm", "gru", "conv")


def samples_per_tr(sfreq: float, tr: float) -> int:
    """Integer number of electrophysiology samples per TR (``sfreq * tr``)."""
    s = sfreq * tr
    if abs(s - round(s)) > 1e-6 or round(s) < 1:
        raise ValueError(
            f"sfreq * tr must be a positive integer number of samples, got {sfreq} * {tr} = {s}; "
            f"resample the electrophysiology so that each TR holds whole samples"
        )
    return int(round(s))


class WaveletScaleAttention(nn.Module):
    """Input-dependent softmax attention over wavelet scales.

    Parameters
    ----------
    lengths : list of int
        Coefficient count per band ``[cA_J, cD_J, ..., cD_1]``.
    dim : int
        Output width ``d``.

    Notes
    -----
    ``forward(coeffs)`` with band ``j`` of shape ``(..., n_j)`` returns
    ``(pooled (..., d), weights (..., J))``: each band is embedded (linear map of its
    coefficients plus its log-energy), scored, and the scores are softmax-normalised over
    the ``J`` bands of each series separately.
    """

    def __init__(self, lengths: list[int], dim: int) -> None:
        super().__init__()
        self.lengths = list(lengths)
        self.proj = nn.ModuleList(nn.Linear(n, dim) for n in lengths)
        self.energy = nn.Parameter(torch.zeros(len(lengths), dim))
        nn.init.normal_(self.energy, std=0.02)
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, coeffs: list[Tensor]) -> tuple[Tensor, Tensor]:
        if [c.shape[-1] for c in coeffs] != self.lengths:
            raise ValueError(
                f"wavelet bands have lengths {[c.shape[-1] for c in coeffs]}, "
                f"expected {self.lengths}: the window's samples per TR differ from the model's"
            )
        bands = []
        for j, (c, proj) in enumerate(zip(coeffs, self.proj)):
            log_e = torch.log1p(c.float().square().mean(-1, keepdim=True)).to(c.dtype)
            bands.append(proj(c) + log_e * self.energy[j])
        h = torch.stack(bands, dim=-2)  # (..., J, d)
        w = torch.softmax(self.score(h).squeeze(-1).float(), dim=-1).to(h.dtype)  # (..., J)
        return (w.unsqueeze(-1) * h).sum(-2), w


class CausalConvTemporal(nn.Module):
    """Causal convolution over frames: ``(B, F, d_in) -> (B, F, hidden)`` (kernel 3)."""

    def __init__(self, d_in: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        chans = [d_in] + [hidden] * layers
        self.convs = nn.ModuleList(nn.Conv1d(a, b, 3) for a, b in zip(chans[:-1], chans[1:]))
        self.act, self.drop = nn.GELU(), nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        h = h.transpose(1, 2)
        for conv in self.convs:
            h = self.drop(self.act(conv(nn.functional.pad(h, (2, 0)))))
        return h.transpose(1, 2)


def make_temporal(
    kind: str, d_in: int, hidden: int, layers: int, dropout: float, bidirectional: bool = False
) -> nn.Module:
    """Recurrent (or convolutional) block over frames, batch-first."""
    if kind == "lstm":
        return nn.LSTM(
            d_in,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
    if kind == "gru":
        return nn.GRU(
            d_in,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
    if kind == "conv":
        if bidirectional:
            raise ValueError("temporal='conv' is causal only; use 'lstm' or 'gru' here")
        return CausalConvTemporal(d_in, hidden, layers, dropout)
    raise ValueError(f"unknown temporal block {kind!r}; choose one of {', '.join(TEMPORAL_KINDS)}")


def _run_temporal(block: nn.Module, h: Tensor) -> Tensor:
    out = block(h)
    return out[0] if isinstance(out, tuple) else out


class _SambaBase(nn.Module):
    """Shared graph plumbing: node sets, graph buffers, spatial up/down-sampling."""

    n_in_nodes: int
    n_out_nodes: int

    def _init_common(
        self,
        n_eeg: int,
        n_fmri: int,
        n_frames: int,
        sfreq: float,
        tr: float,
        wavelet: str,
        level: int,
        wavelet_mode: str,
        hrf_length_s: float,
        dropout: float,
        centered_loss: bool,
    ) -> None:
        """What both directions hold: shapes, the HRF, the DWT of one TR chunk, dropout."""
        self.n_eeg, self.n_fmri, self.n_frames = n_eeg, n_fmri, n_frames
        self.sfreq, self.tr = float(sfreq), float(tr)
        self.samples_per_tr = S = samples_per_tr(sfreq, tr)
        self.centered_loss = centered_loss
        self.hrf = DoubleGammaHRF(n_eeg, sfreq, length_s=hrf_length_s)
        self.lengths = coeff_lengths(S, wavelet, level, wavelet_mode)
        # the DWT of one TR chunk as one (n_coeffs, S) matrix: equal to DWT1d, faster on CPU
        self.register_buffer("dwt_w", dwt_matrix(S, wavelet, level, wavelet_mode), persistent=False)
        self.drop = nn.Dropout(dropout)

    def _init_graph_path(
        self, n_in: int, n_out: int, dim: int, heads: int, gat_layers: int, k: int, dropout: float
    ) -> None:
        self.n_in_nodes, self.n_out_nodes, self.graph_k = n_in, n_out, k
        self.register_buffer("src_edge_index", ring_graph(n_in, k))
        self.register_buffer("tgt_edge_index", ring_graph(n_out, k))
        self.src_embed = nn.Parameter(torch.randn(n_in, dim) * 0.02)
        self.tgt_embed = nn.Parameter(torch.randn(n_out, dim) * 0.02)
        self.src_gat = nn.ModuleList(
            GraphAttentionBlock(dim, heads, dropout) for _ in range(gat_layers)
        )
        self.tgt_gat = nn.ModuleList(
            GraphAttentionBlock(dim, heads, dropout) for _ in range(gat_layers)
        )
        # one feed-forward map per target node over all source nodes (the paper's phi_m)
        self.node_map = nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.node_bias = nn.Parameter(torch.zeros(n_out, 1))

    def set_graphs(self, src_edge_index: Tensor | None, tgt_edge_index: Tensor | None) -> None:
        """Replace the input-side (``src``) and/or output-side (``tgt``) graph.

        Parameters
        ----------
        src_edge_index : LongTensor, shape (2, E_src), or None to keep the current one
            Graph over the model's INPUT nodes.
        tgt_edge_index : LongTensor, shape (2, E_tgt), or None to keep the current one
            Graph over the model's OUTPUT nodes.
        """
        for name, ei, n in (
            ("src_edge_index", src_edge_index, self.n_in_nodes),
            ("tgt_edge_index", tgt_edge_index, self.n_out_nodes),
        ):
            if ei is None:
                continue
            ei = check_edge_index(ei, n, f"{type(self).__name__}.set_graphs({name})")
            ei = ei[:, ei[0] != ei[1]]  # the blocks add self loops themselves
            setattr(self, name, ei.to(getattr(self, name).device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for name in ("src_edge_index", "tgt_edge_index"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _spatial(self, h: Tensor) -> Tensor:
        """``(G, n_in, d) -> (G, n_out, d)``: GAT on input nodes, node map, GAT on outputs."""
        h = h + self.src_embed
        table = neighbour_table(self.src_edge_index, self.n_in_nodes)
        for blk in self.src_gat:
            h = blk(h, table)
        h = torch.matmul(self.node_map.to(h.dtype), h) + self.node_bias  # (G, n_out, d)
        h = h + self.tgt_embed
        table = neighbour_table(self.tgt_edge_index, self.n_out_nodes)
        for blk in self.tgt_gat:
            h = blk(h, table)
        return h


class SambaEEG2fMRI(_SambaBase):
    """SAMBA electrophysiology -> fMRI: ``forward(x (B, N, T)) -> (B, M, F)``.

    Parameters
    ----------
    n_eeg : int
        Electrophysiology parcels (or sensors) ``N``.
    n_fmri : int
        fMRI parcels ``M``.
    n_frames : int
        Default TRs per window ``F`` (any ``T`` divisible by ``S`` is accepted).
    sfreq : float
        Electrophysiology sampling rate (Hz). ``tr`` : float, seconds per fMRI frame.
    dim : int
        Feature width ``d`` of the wavelet, graph and node-map stages.
    heads, gat_layers, graph_k
        GATv2 heads, layers per node set, neighbours of the default ring graph.
    temporal, rnn_hidden, rnn_layers
        ``"lstm"`` | ``"gru"`` | ``"conv"`` block over frames, its width and depth.
    frame_channels : int
        Values per parcel and frame fed to the window-level temporal block
        (its input width is ``n_fmri * frame_channels``).
    wavelet, level, wavelet_mode
        DWT of each TR chunk (PyWavelets name, levels, ``"symmetric"``/``"periodization"``).
    hrf_length_s : float
        HRF kernel length (s). ``dropout`` : float, training only. ``centered_loss`` :
        bool, Pearson instead of cosine in :meth:`loss`.
    """

    task = "eeg2fmri"

    def __init__(
        self,
        n_eeg: int = 200,
        n_fmri: int = 500,
        n_frames: int = 15,
        sfreq: float = 200.0,
        tr: float = 2.0,
        dim: int = 64,
        heads: int = 4,
        gat_layers: int = 1,
        graph_k: int = 8,
        temporal: str = "lstm",
        rnn_hidden: int = 64,
        rnn_layers: int = 2,
        frame_channels: int = 4,
        wavelet: str = "db5",
        level: int = 3,
        wavelet_mode: str = "symmetric",
        hrf_length_s: float = 30.0,
        dropout: float = 0.1,
        centered_loss: bool = False,
    ) -> None:
        super().__init__()
        self._init_common(
            n_eeg, n_fmri, n_frames, sfreq, tr, wavelet, level, wavelet_mode, hrf_length_s,
            dropout, centered_loss,
        )  # fmt: skip
        self.scales = WaveletScaleAttention(self.lengths, dim)
        self._init_graph_path(n_eeg, n_fmri, dim, heads, gat_layers, graph_k, dropout)
        self.frame_in = nn.Linear(dim, frame_channels)
        self.temporal = make_temporal(
            temporal, n_fmri * frame_channels, rnn_hidden, rnn_layers, dropout
        )
        self.frame_out = nn.Linear(rnn_hidden, n_fmri * frame_channels)
        self.head = nn.Linear(frame_channels, 1)

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Predict BOLD frames.

        Parameters
        ----------
        x : Tensor, shape (B, N, T)
            Electrophysiology window, ``T = F * samples_per_tr``.
        return_aux : bool
            Also return ``{"scale_weights": (B, N, F, level + 1)}`` (the wavelet attention).

        Returns
        -------
        Tensor, shape (B, M, F)
            Frame ``f`` = BOLD at the end of chunk ``f`` (see the module docstring).
        """
        B, N, T = x.shape
        S = self.samples_per_tr
        if self.n_eeg != N or T % S or T == 0:
            raise ValueError(
                f"SAMBA eeg2fmri expects (B, {self.n_eeg}, F * {S}) input, got {tuple(x.shape)}"
            )
        F_ = T // S
        z = self.hrf(x).reshape(B, N, F_, S)
        coeffs = torch.split(z @ self.dwt_w.T.to(z.dtype), self.lengths, dim=-1)
        h, weights = self.scales(list(coeffs))  # (B, N, F, d), (B, N, F, J)
        h = self.drop(h).transpose(1, 2).reshape(B * F_, N, -1)
        h = self._spatial(h)  # (B*F, M, d)
        M = self.n_fmri
        u = self.frame_in(h).reshape(B, F_, -1)  # (B, F, M * c)
        u = u + self.frame_out(_run_temporal(self.temporal, u))
        out = self.head(nn.functional.gelu(u.reshape(B, F_, M, -1))).squeeze(-1)
        out = out.transpose(1, 2)  # (B, M, F)
        return (out, {"scale_weights": weights}) if return_aux else out

    def loss(self, pred: Tensor, target: Tensor, **extras: Any) -> tuple[Tensor, dict]:
        """Cosine loss over frames per parcel (``extras`` from ``return_aux`` are ignored).

        Returns
        -------
        (loss, {"cosine": detached loss})
        """
        unknown = set(extras) - {"scale_weights"}
        if unknown:
            raise ValueError(f"unexpected loss extras {sorted(unknown)}; valid: scale_weights")
        loss = cosine_loss(pred, target, centered=self.centered_loss)
        return loss, {"cosine": loss.detach()}


class SambaFMRI2EEG(_SambaBase):
    """SAMBA fMRI -> electrophysiology: ``forward(y (B, M, F)) -> (B, N, F * S)``.

    Parameters are those of :class:`SambaEEG2fMRI`, plus ``skip_weight`` (weight of the
    wavelet skip loss, 0 disables it) and ``deconv_reg`` (Wiener regularisation of the HRF
    pseudo-inverse). The temporal block over frames is bidirectional (``"lstm"``/``"gru"``).
    """

    task = "fmri2eeg"

    def __init__(
        self,
        n_eeg: int = 200,
        n_fmri: int = 500,
        n_frames: int = 15,
        sfreq: float = 200.0,
        tr: float = 2.0,
        dim: int = 64,
        heads: int = 4,
        gat_layers: int = 1,
        graph_k: int = 8,
        temporal: str = "lstm",
        rnn_hidden: int = 64,
        rnn_layers: int = 2,
        frame_channels: int = 4,
        wavelet: str = "db5",
        level: int = 3,
        wavelet_mode: str = "symmetric",
        hrf_length_s: float = 30.0,
        dropout: float = 0.1,
        centered_loss: bool = False,
        skip_weight: float = 1.0,
        deconv_reg: float = 1e-2,
    ) -> None:
        super().__init__()
        if temporal == "conv":
            raise ValueError("SAMBA fmri2eeg needs a bidirectional block: temporal='lstm' or 'gru'")
        self._init_common(
            n_eeg, n_fmri, n_frames, sfreq, tr, wavelet, level, wavelet_mode, hrf_length_s,
            dropout, centered_loss,
        )  # fmt: skip
        self.skip_weight, self.deconv_reg = skip_weight, deconv_reg
        self.inp = nn.Linear(1, dim)
        self.temporal = make_temporal(temporal, n_fmri, rnn_hidden, rnn_layers, dropout, True)
        self.frame_out = nn.Linear(2 * rnn_hidden, n_fmri * frame_channels)
        self.frame_proj = nn.Linear(frame_channels, dim)
        self._init_graph_path(n_fmri, n_eeg, dim, heads, gat_layers, graph_k, dropout)
        self.coef_head = nn.Linear(dim, sum(self.lengths))
        S = self.samples_per_tr
        self.register_buffer(
            "idwt_w", idwt_matrix(S, wavelet, level, wavelet_mode), persistent=False
        )

    def forward(self, y: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Predict the electrophysiology window.

        Parameters
        ----------
        y : Tensor, shape (B, M, F)
            BOLD frames.
        return_aux : bool
            Also return ``{"coeffs": [band (B, N, F, n_j), ...]}``, the predicted wavelet
            coefficients of the HRF-convolved signal (pass to :meth:`loss` as ``**aux``).

        Returns
        -------
        Tensor, shape (B, N, F * samples_per_tr)
        """
        B, M, F_ = y.shape
        if self.n_fmri != M or F_ < 1:
            raise ValueError(
                f"SAMBA fmri2eeg expects (B, {self.n_fmri}, F) input, got {tuple(y.shape)}"
            )
        yt = y.transpose(1, 2)  # (B, F, M)
        ctx = self.frame_out(_run_temporal(self.temporal, yt)).reshape(B, F_, M, -1)
        h = self.inp(yt.unsqueeze(-1)) + self.frame_proj(nn.functional.gelu(ctx))
        h = self.drop(h).reshape(B * F_, M, -1)
        h = self._spatial(h)  # (B*F, N, d)
        N, S = self.n_eeg, self.samples_per_tr
        h = h.reshape(B, F_, N, -1).transpose(1, 2)  # (B, N, F, d)
        flat = self.coef_head(h)  # (B, N, F, n_coeffs)
        coeffs = list(torch.split(flat, self.lengths, dim=-1))
        z = (flat @ self.idwt_w.T.to(flat.dtype)).reshape(B, N, F_ * S)  # inverse DWT
        x = self.hrf.deconvolve(z, reg=self.deconv_reg)
        return (x, {"coeffs": coeffs}) if return_aux else x

    def skip_targets(self, target: Tensor) -> list[Tensor]:
        """DWT per chunk of the target convolved with the (detached) current HRF."""
        B, N, T = target.shape
        with torch.no_grad():
            z = self.hrf(target.float()).reshape(B, N, T // self.samples_per_tr, -1)
            return list(torch.split(z @ self.dwt_w.T, self.lengths, dim=-1))

    def loss(
        self, pred: Tensor, target: Tensor, coeffs: list[Tensor] | None = None
    ) -> tuple[Tensor, dict]:
        """Cosine loss over time per parcel, plus ``skip_weight`` x wavelet skip loss.

        Parameters
        ----------
        pred, target : Tensor, shape (B, N, T)
        coeffs : list of Tensor, optional
            From ``forward(y, return_aux=True)``; without it only the cosine term is used.

        Returns
        -------
        (loss, {"cosine": ..., "skip": ...}) with detached parts (``skip`` only if used).
        """
        cos = cosine_loss(pred, target, centered=self.centered_loss)
        parts = {"cosine": cos.detach()}
        loss = cos
        if coeffs is not None and self.skip_weight > 0:
            skip = wavelet_band_loss(coeffs, self.skip_targets(target))
            parts["skip"] = skip.detach()
            loss = loss + self.skip_weight * skip
        return loss, parts


# --------------------------------------------------------------------------- registry

_COMMON: dict[str, dict[str, Any]] = {
    "debug": dict(
        n_eeg=8, n_fmri=12, n_frames=3, sfreq=32.0, tr=2.0, dim=16, heads=2, gat_layers=1,
        graph_k=4, rnn_hidden=16, rnn_layers=1, frame_channels=2,
    ),
    "base": dict(
        n_eeg=200, n_fmri=500, n_frames=15, sfreq=200.0, tr=2.0, dim=32, heads=4,
        gat_layers=1, graph_k=8, rnn_hidden=256, rnn_layers=2, frame_channels=4,
    ),
    "large": dict(
        n_eeg=200, n_fmri=500, n_frames=15, sfreq=200.0, tr=2.0, dim=128, heads=8,
        gat_layers=2, graph_k=8, rnn_hidden=512, rnn_layers=2, frame_channels=8,
    ),
}  # fmt: skip

EXPECTED_PARAMS = {
    "samba-eeg2fmri": {"debug": 6_650, "base": 3_496_158, "large": 13_796_342},
    "samba-fmri2eeg": {"debug": 7_896, "base": 4_297_840, "large": 14_934_240},
}


def _flavors(name: str) -> dict[str, dict[str, Any]]:
    return {f: {**kw, "expected_params": EXPECTED_PARAMS[name][f]} for f, kw in _COMMON.items()}


def _builder(cls: type[nn.Module], name: str):  # type: ignore[no-untyped-def]
    def build(flavor: str, **overrides: Any) -> nn.Module:
        kw = {k: v for k, v in _COMMON[flavor].items()}
        kw.update({k: v for k, v in overrides.items() if k != "expected_params"})
        return cls(**kw)

    build.__doc__ = f"Build {name} at ``flavor`` (debug/base/large); overrides are kwargs."
    return build


def _example_eeg2fmri(model: nn.Module, batch: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    T = model.n_frames * model.samples_per_tr
    return {"x": torch.randn(batch, model.n_eeg, T, generator=g)}


def _example_fmri2eeg(model: nn.Module, batch: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"y": torch.randn(batch, model.n_fmri, model.n_frames, generator=g)}


def _io_eeg(f: str) -> str:
    kw = _COMMON[f]
    return f"{kw['n_eeg']} parcels x {kw['n_frames'] * kw['tr']:g} s @ {kw['sfreq']:g} Hz"


def _io_fmri(f: str) -> str:
    kw = _COMMON[f]
    return f"{kw['n_fmri']} parcels x {kw['n_frames']} TRs (TR {kw['tr']:g} s)"


def _spec_hooks(direction: str) -> dict[str, Any]:
    """The family's hooks (:mod:`brainxl.models.samba_spec`) for one direction."""
    return dict(
        data_args=samba_spec.data_args,
        batch=samba_spec.batch_io(direction),
        prepare_fold=samba_spec.prepare_fold,
        loss=samba_spec.own_loss,
        diagnostics=samba_spec.diagnostics,
    )


register_model(
    ModelSpec(
        name="samba-eeg2fmri",
        build=_builder(SambaEEG2fMRI, "samba-eeg2fmri"),
        flavors=_flavors("samba-eeg2fmri"),
        example_inputs=_example_eeg2fmri,
        describe_io=lambda f: (_io_eeg(f), _io_fmri(f)),
        task="eeg2fmri",
        **_spec_hooks("eeg2fmri"),
    )
)
register_model(
    ModelSpec(
        name="samba-fmri2eeg",
        build=_builder(SambaFMRI2EEG, "samba-fmri2eeg"),
        flavors=_flavors("samba-fmri2eeg"),
        example_inputs=_example_fmri2eeg,
        describe_io=lambda f: (_io_fmri(f), _io_eeg(f)),
        task="fmri2eeg",
        **_spec_hooks("fmri2eeg"),
    )
)
