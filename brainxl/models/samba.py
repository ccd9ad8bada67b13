"""SAMBA: translation between electrophysiology (EEG/MEG) and fMRI BOLD, both directions.

Built as the paper describes (Spatiotemporal Alignment of Multimodal Brain Activity),
without the released code's defects (see ``/work/shared/MODELS.md``): every parameter is
registered, the HRF is causal and normalised, the wavelet attention depends on the input,
the graphs are sparse, evaluation is deterministic and sees no ground truth.

Electrophysiology -> fMRI (:class:`SambaEEG2fMRI`), for a window of ``F`` TRs,
``x (B, N, T)`` with ``T = F * S`` (``S = sfreq * tr`` samples per TR):

1. the window is cut into ``F * blocks_per_tr`` blocks (0.5 s by default); a
   ``level``-level DWT of each block (one matmul with the exact DWT matrix of a block);
   each band is summarised by its log-energy (the band power of the block), and attention
   over the ``level + 1`` scales (softmax of scores computed from each band's embedding,
   so per window, parcel and block) pools them into one ``d``-vector per (parcel, block);
2. GATv2 on the ``N``-node source graph and a learned ``N -> M`` map over nodes give the
   neural drive of each fMRI parcel per block;
3. per-fMRI-parcel learnable double-gamma HRF, causal FFT convolution of the drive on the
   block grid; the result is read at the end of each TR;
4. GATv2 on the ``M``-node target graph (all ``B * F`` graphs in one call); per frame,
   each parcel's features are reduced to ``frame_channels`` values and the
   ``M * frame_channels`` vector of the window runs through a recurrent block over the
   ``F`` frames (a 2-layer LSTM by default as the reference, GRU or a causal convolution
   by config; one sequence per window, not per parcel, so it costs little), whose output
   is added back per parcel before a shared linear read-out;
5. optionally (``direct_path=True``) a residual linear path: the band log-energies of
   step 1, mapped linearly to each fMRI parcel's drive and convolved with the same HRFs
   of step 3, added to the output (the deep path then models what is left).

Why this order (issue 13, measured on the simulator): BOLD follows the band POWER of
neural activity. The released code convolves the raw 200 Hz waveform with the HRF, a
low-pass filter that removes every oscillation above ~0.2 Hz: what is left has no
relation to BOLD (held-out r of the HRF-convolved parcel signal with BOLD: 0.00; of
HRF-convolved gamma log-power: 0.36), and a linear map of wavelet coefficients averages
to zero over the random phase of ongoing rhythms. So the wavelets and their attention
come first and produce band energies, and the HRF acts on the neural drive those give,
where neurovascular coupling acts, per fMRI parcel.

Alignment: output frame ``f`` is the BOLD at the END of TR-chunk ``f``, i.e. at time
``(f + 1) * tr`` after the window start, and depends on input samples ``[0, (f+1) * S)``
only (the HRF is causal with zero history before the window, the DWT is per block, the
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

import inspect
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
from brainxl.objectives import correlation, cosine_loss, wavelet_band_loss

TEMPORAL_KINDS = ("lstm", "gru", "conv")
#: Training losses of :class:`SambaEEG2fMRI` (``model.overrides.loss``).
EEG2FMRI_LOSSES = ("cosine", "mse", "cosine+mse", "pearson_pooled")
#: Training losses of :class:`SambaFMRI2EEG` with ``target="envelopes"``.
ENVELOPE_LOSSES = ("mse", "pearson_pooled")


def pooled_pearson_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - mean Pearson r`` per row over all (window, frame) pairs of the batch.

    Parameters
    ----------
    pred, target : Tensor, shape (B, R, F)

    Returns
    -------
    Tensor, scalar
        The held-out metric's form (r per row over the concatenated windows): invariant
        to each row's offset and scale, consistent across the windows of a batch.
    """
    p = pred.float().transpose(0, 1).reshape(pred.shape[1], -1)
    t = target.float().transpose(0, 1).reshape(target.shape[1], -1)
    return 1.0 - correlation(p, t, -1, centered=True).mean()


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
    """Input-dependent softmax attention over wavelet scales of band log-energies.

    Parameters
    ----------
    lengths : list of int
        Coefficient count per band ``[cA_J, cD_J, ..., cD_1]``.
    dim : int
        Output width ``d``.

    Notes
    -----
    ``forward(coeffs)`` with band ``j`` of shape ``(..., n_j)`` returns
    ``(pooled (..., d), weights (..., J))``. Each band is summarised by its log-energy
    ``e_j = log(mean(c_j^2) + eps)`` (the band power of the block: the quantity that
    couples to BOLD; a linear map of the coefficients themselves averages to zero over
    the random phases of ongoing oscillations) and embedded as ``e_j * v_j + b_j``; the
    embeddings are scored and softmax-normalised over the ``J`` bands of each series and
    block separately, and pooled with those weights.
    """

    #: Floor added to the mean squared coefficient before the log (inputs are z-scored).
    EPS = 1e-6

    def __init__(self, lengths: list[int], dim: int, energy: str = "log") -> None:
        super().__init__()
        if energy not in ("log", "linear"):
            raise ValueError(f"band energy must be 'log' or 'linear', got {energy!r}")
        self.lengths, self.energy = list(lengths), energy
        J = len(lengths)
        self.gain = nn.Parameter(torch.randn(J, dim) * 0.5)
        self.bias = nn.Parameter(torch.zeros(J, dim))
        # no bias on the last layer: a score shared by all bands cancels in the softmax
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1, bias=False))

    @staticmethod
    def log_energy(coeffs: list[Tensor]) -> Tensor:
        """``(..., J)`` log mean squared coefficient of each band."""
        e = torch.stack([c.float().square().mean(-1) for c in coeffs], dim=-1)
        return torch.log(e + WaveletScaleAttention.EPS)

    def forward(
        self, coeffs: list[Tensor], energies: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Pool the bands; ``energies`` (``(..., J)`` log-energies) skips recomputing them."""
        if [c.shape[-1] for c in coeffs] != self.lengths:
            raise ValueError(
                f"wavelet bands have lengths {[c.shape[-1] for c in coeffs]}, "
                f"expected {self.lengths}: the window's samples per TR differ from the model's"
            )
        if self.energy == "log":
            e = (self.log_energy(coeffs) if energies is None else energies).to(coeffs[0].dtype)
        else:  # band power itself: what drives BOLD linearly
            e = torch.stack([c.square().mean(-1) for c in coeffs], dim=-1)
        h = e.unsqueeze(-1) * self.gain + self.bias  # (..., J, d)
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
        dropout: float,
        centered_loss: bool,
        chunk: int | None = None,
    ) -> None:
        """What both directions hold: shapes, the DWT of one ``chunk`` (default one TR),
        dropout. Each direction adds its own HRF (on its own time grid)."""
        self.n_eeg, self.n_fmri, self.n_frames = n_eeg, n_fmri, n_frames
        self.sfreq, self.tr = float(sfreq), float(tr)
        self.samples_per_tr = S = samples_per_tr(sfreq, tr)
        self.centered_loss = centered_loss
        self.wavelet, self.level, self.wavelet_mode = wavelet, level, wavelet_mode
        n = S if chunk is None else chunk
        self.lengths = coeff_lengths(n, wavelet, level, wavelet_mode)
        # the DWT of one chunk as one (n_coeffs, n) matrix: equal to DWT1d, faster on CPU
        self.register_buffer("dwt_w", dwt_matrix(n, wavelet, level, wavelet_mode), persistent=False)
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

    def _spatial_src(self, h: Tensor) -> Tensor:
        """``(G, n_in, d) -> (G, n_out, d)``: GAT on the input nodes, then the node map."""
        h = h + self.src_embed
        table = neighbour_table(self.src_edge_index, self.n_in_nodes)
        for blk in self.src_gat:
            h = blk(h, table)
        return torch.matmul(self.node_map.to(h.dtype), h) + self.node_bias  # (G, n_out, d)

    def _spatial_tgt(self, h: Tensor) -> Tensor:
        """``(G, n_out, d) -> (G, n_out, d)``: GAT on the output nodes."""
        h = h + self.tgt_embed
        table = neighbour_table(self.tgt_edge_index, self.n_out_nodes)
        for blk in self.tgt_gat:
            h = blk(h, table)
        return h

    def _spatial(self, h: Tensor) -> Tensor:
        """``(G, n_in, d) -> (G, n_out, d)``: GAT on input nodes, node map, GAT on outputs."""
        return self._spatial_tgt(self._spatial_src(h))


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
        DWT of each block (PyWavelets name, levels, ``"symmetric"``/``"periodization"``).
    hrf_length_s : float
        HRF kernel length (s). ``dropout`` : float, training only. ``centered_loss`` :
        bool, Pearson instead of cosine in :meth:`loss`.
    blocks_per_tr : int
        Band-power blocks per TR (``S`` must be divisible by it): the time resolution
        ``tr / blocks_per_tr`` at which the HRF is applied (default 4: 0.5 s at TR 2 s).
    hrf_gain : float
        Learning-rate multiplier of the HRF parameters (see
        :class:`~brainxl.models.hrf.DoubleGammaHRF`; default 10: with one shared rate the
        six HRF parameters otherwise barely leave their start in a short run).
    band_energy : {"log", "linear"}
        Band summary fed to the scale attention: log-energy (default; better held-out r
        in the issue-13 measurements) or the energy itself.
    loss : {"cosine", "mse", "cosine+mse", "pearson_pooled"}
        Training loss of :meth:`loss` (default the paper's cosine over the frames).
    direct_path : bool
        Add a residual linear path: the band log-energies of every input row and block,
        mapped linearly to each fMRI parcel's drive (``W e + b``, zero-initialised) and
        convolved with the same learned per-parcel HRFs, summed with the output. The
        simulator's (and the canonical) generative model is exactly this form; the deep
        path (attention, GATs, LSTM) alone reached held-out r 0.25 against the ridge's
        0.34, with it 0.36 (issue 13, see ``configs/samba-eeg2fmri-cpu.yaml``).
    hrf_history : {"zero", "first_tr"}
        What the HRF convolutions take for the time before the window: nothing (default),
        or a steady state at the mean of the window's first TR of blocks
        (:meth:`~brainxl.models.hrf.DoubleGammaHRF.forward` ``history``). With zero
        history the response to the drive's constant part ramps up over the kernel's
        length, a trend along every window that differs between subjects.
    direct_linear : bool
        The direct path also reads the band powers themselves (``exp`` of the
        log-energies), standardised by a batch norm whose running statistics come from
        training batches only. The simulator's (and the neurovascular) drive is linear in
        band power, and a mixture of sources (sensors, leaky source estimates) adds
        powers, not log-powers (issue 13: held-out r 0.337 -> 0.422 on fold 01).
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
        blocks_per_tr: int = 4,
        hrf_gain: float = 10.0,
        band_energy: str = "log",
        loss: str = "cosine",
        direct_path: bool = False,
        hrf_history: str = "zero",
        direct_linear: bool = False,
    ) -> None:
        super().__init__()
        if direct_linear and not direct_path:
            raise ValueError("SAMBA eeg2fmri direct_linear needs direct_path: true as well")
        if hrf_history not in ("zero", "first_tr"):
            raise ValueError(
                f"SAMBA eeg2fmri hrf_history={hrf_history!r}; choose 'zero' or 'first_tr'"
            )
        # blocks whose mean stands for the time before the window (0: zero history)
        self.hrf_history = blocks_per_tr if hrf_history == "first_tr" else 0
        if loss not in EEG2FMRI_LOSSES:
            raise ValueError(
                f"SAMBA eeg2fmri loss={loss!r}; choose one of {', '.join(EEG2FMRI_LOSSES)}"
            )
        self.loss_name = loss
        S = samples_per_tr(sfreq, tr)
        if blocks_per_tr < 1 or S % blocks_per_tr:
            raise ValueError(
                f"blocks_per_tr={blocks_per_tr} must divide the {S} samples per TR "
                f"(sfreq {sfreq:g} Hz x TR {tr:g} s); choose a divisor of {S}"
            )
        self.blocks_per_tr = blocks_per_tr
        self._init_common(
            n_eeg, n_fmri, n_frames, sfreq, tr, wavelet, level, wavelet_mode, dropout,
            centered_loss, chunk=S // blocks_per_tr,
        )  # fmt: skip
        rate = blocks_per_tr / float(tr)  # band-power blocks per second
        # one HRF per fMRI parcel, on the block grid: tap l is the block that ended l
        # blocks before the output time, i.e. centred (l + 0.5) / rate seconds earlier
        self.hrf = DoubleGammaHRF(
            n_fmri, rate, length_s=hrf_length_s, offset_s=0.5 / rate, gain=hrf_gain
        )
        self.scales = WaveletScaleAttention(self.lengths, dim, band_energy)
        self._init_graph_path(n_eeg, n_fmri, dim, heads, gat_layers, graph_k, dropout)
        self.frame_in = nn.Linear(dim, frame_channels)
        self.temporal = make_temporal(
            temporal, n_fmri * frame_channels, rnn_hidden, rnn_layers, dropout
        )
        self.frame_out = nn.Linear(rnn_hidden, n_fmri * frame_channels)
        self.head = nn.Linear(frame_channels, 1)
        self.direct_path = bool(direct_path)
        if self.direct_path:  # band log-energies of every input row -> drive of each parcel
            J = len(self.lengths)
            self.direct_linear = bool(direct_linear)
            if self.direct_linear:  # band powers as well as their logs, standardised
                self.direct_norm = nn.BatchNorm1d(n_eeg * J, affine=False)
                J *= 2
            self.direct = nn.Parameter(torch.zeros(n_fmri, n_eeg * J))
            self.direct_bias = nn.Parameter(torch.zeros(n_fmri, 1))

    def forward(self, x: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Predict BOLD frames.

        Parameters
        ----------
        x : Tensor, shape (B, N, T)
            Electrophysiology window, ``T = F * samples_per_tr``.
        return_aux : bool
            Also return ``{"scale_weights": (B, N, F, level + 1)}`` (the wavelet attention,
            averaged over the blocks of each TR).

        Returns
        -------
        Tensor, shape (B, M, F)
            Frame ``f`` = BOLD at the end of chunk ``f`` (see the module docstring).
        """
        B, N, T = x.shape
        S, k = self.samples_per_tr, self.blocks_per_tr
        if self.n_eeg != N or T % S or T == 0:
            raise ValueError(
                f"SAMBA eeg2fmri expects (B, {self.n_eeg}, F * {S}) input, got {tuple(x.shape)}"
            )
        F_, M = T // S, self.n_fmri
        n_blk = F_ * k
        z = x.reshape(B, N, n_blk, S // k)
        coeffs = list(torch.split(z @ self.dwt_w.T.to(z.dtype), self.lengths, dim=-1))
        energies = WaveletScaleAttention.log_energy(coeffs)  # (B, N, n_blk, J)
        h, weights = self.scales(coeffs, energies)  # (B, N, n_blk, d), (B, N, n_blk, J)
        h = self.drop(h).transpose(1, 2).reshape(B * n_blk, N, -1)
        h = self._spatial_src(h)  # (B * n_blk, M, d): neural drive per fMRI parcel
        d = h.shape[-1]
        h = h.reshape(B, n_blk, M, d).permute(0, 3, 2, 1)  # (B, d, M, n_blk)
        # causal HRF per parcel, sampled at frame ends
        h = self.hrf(h, self.hrf_history)[..., k - 1 :: k]
        h = self._spatial_tgt(h.permute(0, 3, 2, 1).reshape(B * F_, M, d))
        u = self.frame_in(h).reshape(B, F_, -1)  # (B, F, M * c)
        u = u + self.frame_out(_run_temporal(self.temporal, u))
        out = self.head(nn.functional.gelu(u.reshape(B, F_, M, -1))).squeeze(-1)
        out = out.transpose(1, 2)  # (B, M, F)
        if self.direct_path:  # linear drive from the band energies through the same HRFs
            e = energies.to(out.dtype).permute(0, 2, 1, 3).reshape(B, n_blk, -1)
            if self.direct_linear:  # BOLD follows power, linearly; the log is the first term
                p = self.direct_norm(torch.exp(e.float()).transpose(1, 2))
                e = torch.cat([e, p.transpose(1, 2).to(e.dtype)], dim=-1)
            drive = torch.matmul(self.direct, e.transpose(1, 2)) + self.direct_bias
            out = out + self.hrf(drive, self.hrf_history)[..., k - 1 :: k]  # (B, M, F)
        if not return_aux:
            return out
        return out, {"scale_weights": weights.reshape(B, N, F_, k, -1).mean(3)}

    def loss(self, pred: Tensor, target: Tensor, **extras: Any) -> tuple[Tensor, dict]:
        """The training loss (``loss`` of the constructor) of ``(B, M, F)`` frames.

        ``"cosine"``: 1 - cosine over the frames of each (window, parcel) (the paper's);
        ``"mse"``: mean squared error; ``"cosine+mse"``: their sum;
        ``"pearson_pooled"``: :func:`pooled_pearson_loss`. ``extras`` from
        ``return_aux`` are ignored.

        Returns
        -------
        (loss, parts) with the detached terms: ``cosine`` and/or ``mse``, or
        ``pearson_pooled``.
        """
        unknown = set(extras) - {"scale_weights"}
        if unknown:
            raise ValueError(f"unexpected loss extras {sorted(unknown)}; valid: scale_weights")
        parts: dict[str, Tensor] = {}
        loss = pred.new_zeros((), dtype=torch.float32)
        if self.loss_name == "pearson_pooled":
            pooled = pooled_pearson_loss(pred, target)
            return pooled, {"pearson_pooled": pooled.detach()}
        if "cosine" in self.loss_name:
            cos = cosine_loss(pred, target, centered=self.centered_loss)
            parts["cosine"], loss = cos.detach(), loss + cos
        if "mse" in self.loss_name:
            mse = nn.functional.mse_loss(pred.float(), target.float())
            parts["mse"], loss = mse.detach(), loss + mse
        return loss, parts


#: Band-power envelopes predicted by ``SambaFMRI2EEG(target="envelopes")``: name -> Hz.
ENVELOPE_BANDS: dict[str, tuple[float, float]] = {
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}
FMRI2EEG_TARGETS = ("waveform", "envelopes")
#: Frames after (lead) and before (lag) each chunk read by the fmri2eeg direct path (the
#: BOLD of a chunk follows it by 4-6 s; the multi-frame ridge's lags -5..2).
DIRECT_LEAD, DIRECT_LAG = 5, 2


def band_envelopes(
    x: Tensor, sfreq: float, block: int, bands: dict[str, tuple[float, float]] = ENVELOPE_BANDS
) -> Tensor:
    """Log10 band power of consecutive blocks of each series.

    Parameters
    ----------
    x : Tensor, shape (B, N, T)
        Signals, ``T`` a multiple of ``block``.
    sfreq : float
        Sampling rate (Hz).
    block : int
        Samples per block (one TR for SAMBA).
    bands : dict of name -> (low, high)
        Bands in Hz, each ``[low, high)``.

    Returns
    -------
    Tensor, shape (B, N * n_bands, T // block), float32
        Row ``n * n_bands + b`` is band ``b`` of series ``n``: ``log10`` of the mean
        periodogram power (Hann taper) inside the band, one value per block.
    """
    B, N, T = x.shape
    if T % block:
        raise ValueError(f"band_envelopes: {T} samples are not a multiple of the block {block}")
    freqs = torch.fft.rfftfreq(block, d=1.0 / sfreq)
    masks = []
    for name, (lo, hi) in bands.items():
        m = (freqs >= lo) & (freqs < hi)
        if not bool(m.any()):
            raise ValueError(
                f"envelope band {name} ({lo}-{hi} Hz) holds no frequency bin of a {block}-sample "
                f"block at {sfreq:g} Hz; use a higher sampling rate or drop the band"
            )
        masks.append(m.float())
    win = torch.hann_window(block, periodic=False, device=x.device)
    z = x.float().reshape(B, N, T // block, block)
    z = (z - z.mean(-1, keepdim=True)) * win
    power = torch.fft.rfft(z).abs().square()  # (B, N, F, n_freqs)
    mask = torch.stack(masks).to(x.device)  # (n_bands, n_freqs)
    bp = power @ (mask / mask.sum(-1, keepdim=True)).T  # (B, N, F, n_bands)
    bp = torch.log10(bp.clamp_min(1e-12))
    return bp.permute(0, 1, 3, 2).reshape(B, N * len(bands), T // block)


class SambaFMRI2EEG(_SambaBase):
    """SAMBA fMRI -> electrophysiology: ``forward(y (B, M, F)) -> (B, N, F * S)``.

    Parameters are those of :class:`SambaEEG2fMRI`, plus ``skip_weight`` (weight of the
    wavelet skip loss, 0 disables it) and ``deconv_reg`` (Wiener regularisation of the HRF
    pseudo-inverse). The temporal block over frames is bidirectional (``"lstm"``/``"gru"``).

    ``direct_path`` (envelopes only) adds a residual linear path: a learned filter over
    frames per fMRI parcel (frames ``f - 2 .. f + 5`` for chunk ``f``, a deconvolution of
    the haemodynamic delay) and a linear map to the envelope rows.

    ``target`` chooses what is predicted:

    - ``"waveform"`` (default, the paper's): the raw electrophysiology ``(B, N, F * S)``
      through the inverse DWT and the HRF pseudo-inverse; cosine + wavelet skip loss.
      BOLD carries no information about the phase of ongoing oscillations, so held-out
      correlations of waveforms stay near zero.
    - ``"envelopes"``: what BOLD can predict: log band power per TR of each parcel or
      channel in the bands of :data:`ENVELOPE_BANDS`, ``(B, N * 3, F)`` (rows
      ``n * 3 + band``); the per-chunk graph features are read out by a linear head
      (no inverse DWT, no HRF); mean squared error loss (``loss="mse"``) or
      :func:`pooled_pearson_loss` (``loss="pearson_pooled"``). :meth:`transform_target` turns
      the raw electrophysiology window into these envelopes (the training loop applies
      it to every target) and :meth:`output_names` names the rows.
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
        target: str = "waveform",
        loss: str = "mse",
        direct_path: bool = False,
    ) -> None:
        super().__init__()
        if loss not in ENVELOPE_LOSSES:
            raise ValueError(
                f"SAMBA fmri2eeg loss={loss!r}; choose one of {', '.join(ENVELOPE_LOSSES)} "
                f"(used with target=envelopes; waveforms train on cosine + skip loss)"
            )
        self.loss_name = loss
        if temporal == "conv":
            raise ValueError("SAMBA fmri2eeg needs a bidirectional block: temporal='lstm' or 'gru'")
        if target not in FMRI2EEG_TARGETS:
            raise ValueError(
                f"SAMBA fmri2eeg target={target!r}; choose one of {', '.join(FMRI2EEG_TARGETS)}"
            )
        self._init_common(
            n_eeg, n_fmri, n_frames, sfreq, tr, wavelet, level, wavelet_mode, dropout,
            centered_loss,
        )  # fmt: skip
        self.target = target
        self.skip_weight, self.deconv_reg = skip_weight, deconv_reg
        self.inp = nn.Linear(1, dim)
        self.temporal = make_temporal(temporal, n_fmri, rnn_hidden, rnn_layers, dropout, True)
        self.frame_out = nn.Linear(2 * rnn_hidden, n_fmri * frame_channels)
        self.frame_proj = nn.Linear(frame_channels, dim)
        self._init_graph_path(n_fmri, n_eeg, dim, heads, gat_layers, graph_k, dropout)
        S = self.samples_per_tr
        if target == "envelopes":
            band_envelopes(torch.zeros(1, 1, S), sfreq, S)  # every band must hold a bin
            self.env_head = nn.Linear(dim, len(ENVELOPE_BANDS))
            self.direct_path = bool(direct_path)
            if self.direct_path:
                # per-fMRI-parcel deconvolution filter over frames f-2 .. f+5 (start: f+2,
                # the BOLD ~4 s after the chunk), then a linear map to the envelope rows
                taps = DIRECT_LEAD + DIRECT_LAG + 1
                filt = torch.zeros(n_fmri, 1, taps)
                filt[:, 0, DIRECT_LAG + 2] = 1.0
                self.direct_filter = nn.Parameter(filt)
                self.direct = nn.Parameter(torch.zeros(n_eeg * len(ENVELOPE_BANDS), n_fmri))
                self.direct_bias = nn.Parameter(torch.zeros(n_eeg * len(ENVELOPE_BANDS), 1))
            return
        if direct_path:
            raise ValueError("SAMBA fmri2eeg direct_path=True needs target='envelopes'")
        self.direct_path = False
        self.hrf = DoubleGammaHRF(n_eeg, sfreq, length_s=hrf_length_s)
        self.coef_head = nn.Linear(dim, sum(self.lengths))
        self.register_buffer(
            "idwt_w", idwt_matrix(S, wavelet, level, wavelet_mode), persistent=False
        )

    def forward(self, y: Tensor, return_aux: bool = False) -> Tensor | tuple[Tensor, dict]:
        """Predict the electrophysiology window (or its band-power envelopes).

        Parameters
        ----------
        y : Tensor, shape (B, M, F)
            BOLD frames.
        return_aux : bool
            Also return ``{"coeffs": [band (B, N, F, n_j), ...]}``, the predicted wavelet
            coefficients of the HRF-convolved signal (pass to :meth:`loss` as ``**aux``;
            empty with ``target="envelopes"``).

        Returns
        -------
        Tensor, shape (B, N, F * samples_per_tr), or (B, N * 3, F) for envelopes
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
        if self.target == "envelopes":
            env = self.env_head(h).permute(0, 1, 3, 2).reshape(B, -1, F_)  # (B, N * 3, F)
            if self.direct_path:  # linear: deconvolved BOLD of each parcel -> envelopes
                yp = nn.functional.pad(y, (DIRECT_LAG, DIRECT_LEAD))  # zero = training mean
                drive = nn.functional.conv1d(yp, self.direct_filter.to(y.dtype), groups=M)
                env = env + torch.matmul(self.direct.to(y.dtype), drive) + self.direct_bias
            return (env, {}) if return_aux else env
        flat = self.coef_head(h)  # (B, N, F, n_coeffs)
        coeffs = list(torch.split(flat, self.lengths, dim=-1))
        z = (flat @ self.idwt_w.T.to(flat.dtype)).reshape(B, N, F_ * S)  # inverse DWT
        x = self.hrf.deconvolve(z, reg=self.deconv_reg)
        return (x, {"coeffs": coeffs}) if return_aux else x

    @torch.no_grad()
    def transform_target(self, target: Tensor) -> Tensor:
        """The tensor predictions are compared with: the raw window ``(B, N, T)`` for
        ``target="waveform"``, its :func:`band_envelopes` per TR for ``"envelopes"``."""
        if self.target == "waveform":
            return target
        if target.ndim != 3 or target.shape[1] != self.n_eeg:
            raise ValueError(
                f"SAMBA fmri2eeg target must be (B, {self.n_eeg}, T), got {tuple(target.shape)}"
            )
        return band_envelopes(target, self.sfreq, self.samples_per_tr)

    def output_names(self, names: list[str]) -> list[str]:
        """Names of the output rows given the ``N`` parcel/channel names."""
        if self.target == "waveform":
            return list(names)
        return [f"{n}:{b}" for n in names for b in ENVELOPE_BANDS]

    def skip_targets(self, target: Tensor) -> list[Tensor]:
        """DWT per chunk of the target convolved with the (detached) current HRF."""
        B, N, T = target.shape
        with torch.no_grad():
            z = self.hrf(target.float()).reshape(B, N, T // self.samples_per_tr, -1)
            return list(torch.split(z @ self.dwt_w.T, self.lengths, dim=-1))

    def loss(
        self, pred: Tensor, target: Tensor, coeffs: list[Tensor] | None = None
    ) -> tuple[Tensor, dict]:
        """Cosine loss over time per parcel, plus ``skip_weight`` x wavelet skip loss
        (``target="waveform"``); mean squared error of the envelopes (``"envelopes"``).

        Parameters
        ----------
        pred, target : Tensor, shape (B, N, T)
            (``(B, N * 3, F)`` for envelopes; a raw ``(B, N, T)`` target is transformed.)
        coeffs : list of Tensor, optional
            From ``forward(y, return_aux=True)``; without it only the cosine term is used.

        Returns
        -------
        (loss, parts) with detached parts: ``cosine`` and ``skip`` (if used), or ``mse``.
        """
        if self.target == "envelopes":
            if target.shape != pred.shape:
                target = self.transform_target(target)
            if self.loss_name == "pearson_pooled":
                pooled = pooled_pearson_loss(pred, target)
                return pooled, {"pearson_pooled": pooled.detach()}
            mse = nn.functional.mse_loss(pred.float(), target.float())
            return mse, {"mse": mse.detach()}
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
        blocks_per_tr=2,  # 1 s blocks: the source graph runs per block (cost x blocks)
    ),
    "large": dict(
        n_eeg=200, n_fmri=500, n_frames=15, sfreq=200.0, tr=2.0, dim=128, heads=8,
        gat_layers=2, graph_k=8, rnn_hidden=512, rnn_layers=2, frame_channels=8,
        blocks_per_tr=2,
    ),
}  # fmt: skip

EXPECTED_PARAMS = {
    "samba-eeg2fmri": {"debug": 5_265, "base": 3_484_389, "large": 13_743_869},
    "samba-fmri2eeg": {"debug": 7_896, "base": 4_297_840, "large": 14_934_240},
}


def _flavors(name: str) -> dict[str, dict[str, Any]]:
    return {f: {**kw, "expected_params": EXPECTED_PARAMS[name][f]} for f, kw in _COMMON.items()}


def _builder(cls: type[nn.Module], name: str):  # type: ignore[no-untyped-def]
    accepted = set(inspect.signature(cls.__init__).parameters)

    def build(flavor: str, **overrides: Any) -> nn.Module:
        kw = {k: v for k, v in _COMMON[flavor].items() if k in accepted}  # shared table
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
