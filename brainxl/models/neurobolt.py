"""NeuroBOLT: EEG window -> fMRI ROI signals at the TR that ends the window.

Two branches over the same EEG window: a temporal-spatial LaBraM encoder (mean of patch
tokens) and a multi-scale spectral module (:mod:`brainxl.models.spectral`); they are
fused as ``head(GELU(temporal + spectral))`` with a linear head to ``n_rois`` outputs
initialised at 1e-3 scale. ``spectral="single"`` and ``"off"`` give the paper's
ablations. Unlike the official code, all ROIs are predicted at once and the spectral
branch processes all channels in one batched STFT.

``readout="channel"`` replaces the mean pooling with :class:`ChannelReadout`, a
per-ROI linear map over channels and features (factorised, indexed by vocabulary row):
with one model for all ROIs, mean pooling over channels leaves too little spatial
information to tell ROIs apart (the official code trains one model per ROI).

``spatial_filters=K`` gives the spectral branch ``K`` learned spatial filters
(:class:`SpatialFilters`) besides the sensors: STFT magnitudes of each channel alone hold
the diagonal of the cross-spectrum only, so no later layer can recover a source's power
from them, while the magnitude of a filtered sum ``|w' X(f)|`` is what a beamformer reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from brainxl.channels import channel_indices
from brainxl.models.blocks import WeightsMixin
from brainxl.models.labram import (
    PATCH_SIZE,
    SFREQ,
    SPATIAL_ROWS,
    LaBraMEncoder,
    check_eeg_input,
)
from brainxl.models.registry import register_model
from brainxl.models.spec import DataShapes, ModelSpec, translation_batch
from brainxl.models.spectral import MultiScaleSpectral

#: Default 26-channel 10-20/10-10 montage (the NeuroBOLT setting's channel count).
NEUROBOLT_26 = (
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "O1",
    "Oz",
    "O2",
    "FC1",
    "FC2",
    "CP1",
    "CP2",
    "FC5",
    "FC6",
)

_PARAMS = {
    "debug": 213_034,
    "small": 1_926_088,
    "base": 8_196_248,
    "large": 54_849_232,
    "huge": 401_774_624,
}
FLAVORS: dict[str, dict[str, Any]] = {
    "debug": {"depth": 2, "filters": 2, "heads": 2, "spec_depth": 1, "spec_heads": 2},
    # debug with base's patch stem, to fine-tune a ``labram`` ``small`` encoder
    "small": {"depth": 2, "filters": 8, "heads": 2, "spec_depth": 1, "spec_heads": 2},
    "base": {"depth": 12, "filters": 8, "heads": 10, "spec_depth": 4, "spec_heads": 8},
    "large": {"depth": 24, "filters": 16, "heads": 16, "spec_depth": 4, "spec_heads": 8},
    "huge": {"depth": 48, "filters": 32, "heads": 16, "spec_depth": 4, "spec_heads": 16},
}
for _f, _n in _PARAMS.items():
    FLAVORS[_f]["expected_params"] = _n
DEFAULT_ROIS = 64
DEFAULT_WINDOW_S = 16
DEFAULT_SCALES = (0.5, 1.0, 2.0, 4.0)


class ChannelReadout(nn.Module):
    """Per-ROI linear readout over channels and features, montage-independent.

    ``y[b, r] = bias[r] + mean_c sum_k A[row(c), r, k] * (V[r, k] . z[b, c])``: each ROI
    gets ``rank`` feature directions ``V[r]`` and, per direction, a weight for every
    channel of the vocabulary, so the same model reads any montage (channels it never
    saw keep their initial, near-zero weights).

    Parameters
    ----------
    dim : int
        Feature width per channel.
    n_rois : int
    rank : int
        Feature directions per ROI.
    n_spatial : int
        Rows of the channel table (indexed by vocabulary row + 1, as the encoders).
    """

    def __init__(self, dim: int, n_rois: int, rank: int = 4, n_spatial: int = SPATIAL_ROWS):
        super().__init__()
        if rank < 1:
            raise ValueError(f"readout_rank must be >= 1, got {rank}")
        self.rank = rank
        self.features = nn.Parameter(torch.empty(n_rois, rank, dim))
        self.channels = nn.Parameter(torch.empty(n_spatial, n_rois, rank))
        self.bias = nn.Parameter(torch.zeros(n_rois))
        if not self.bias.is_meta:
            nn.init.trunc_normal_(self.features, std=0.02, a=-0.04, b=0.04)
            nn.init.trunc_normal_(self.channels, std=0.02, a=-0.04, b=0.04)

    def forward(self, z: Tensor, ch_idx: Tensor) -> Tensor:
        """``z`` (B, C, dim) channel features -> (B, n_rois)."""
        u = torch.einsum("bcd,rkd->bcrk", z, self.features)
        w = self.channels[ch_idx.long() + 1]  # (C, R, K)
        return torch.einsum("bcrk,crk->br", u, w) / z.shape[1] + self.bias


class SpatialFilters(nn.Module):
    """Learned linear combinations of the channels ("virtual channels"), montage-independent.

    ``v[b, k] = gain / sqrt(C) * sum_c W[row(c), k] x[b, c]``, one weight per vocabulary row
    and filter, so the same filters read any montage. The fixed ``gain`` (5) lets AdamW
    turn the filters at a useful rate from small weights; at initialisation ``v`` has
    the variance of the channels.

    Parameters
    ----------
    n_filters : int
    n_spatial : int
        Rows of the weight table (indexed by vocabulary row + 1, as the encoders).
    """

    gain = 5.0

    def __init__(self, n_filters: int, n_spatial: int = SPATIAL_ROWS) -> None:
        super().__init__()
        if n_filters < 1:
            raise ValueError(f"SpatialFilters needs n_filters >= 1, got {n_filters}")
        self.weight = nn.Parameter(torch.empty(n_spatial, n_filters))
        if not self.weight.is_meta:
            nn.init.trunc_normal_(self.weight, std=1.0 / self.gain, a=-2.0 / self.gain,
                                  b=2.0 / self.gain)  # fmt: skip

    def forward(self, x: Tensor, ch_idx: Tensor) -> Tensor:
        """``x`` (B, C, T) -> (B, n_filters, T)."""
        w = self.weight[ch_idx.long() + 1] * (self.gain / x.shape[1] ** 0.5)
        return torch.einsum("bct,ck->bkt", x, w)


class NeuroBOLT(WeightsMixin, nn.Module):
    """EEG -> fMRI regression (NeuroBOLT).

    Parameters
    ----------
    n_rois : int
        Outputs (ROIs) per window.
    window_s : int
        EEG window length in whole seconds (at 200 Hz).
    spectral : {"multi", "single", "off"}
        Spectral branch: all ``scales``, one scale, or none (temporal branch only).
    scales : sequence of float
        STFT window lengths (s). With ``spectral="single"`` the single entry of
        ``scales`` is used, or 1 s when several are given.
    n_chans : int or None
        Channels of the default input (informational: any montage is accepted).
    depth, filters, heads : int
        Temporal (LaBraM) encoder scale.
    spec_depth, spec_heads : int
        Spectral transformer scale (its width equals the encoder's).
    spec_tokens : int
        Spectral tokens per channel.
    drop_path : float
        Stochastic depth of the temporal encoder.
    readout : {"mean", "channel"}
        ``"mean"`` (the paper): ``head(GELU(mean tokens))``. ``"channel"``: the two
        branches' tokens are averaged per channel, summed, passed through GELU and read
        out by :class:`ChannelReadout`.
    readout_rank : int
        Feature directions per ROI of the channel readout.
    amplitude_embed : bool
        Temporal encoder option (:class:`~brainxl.models.labram.LaBraMEncoder`): tokens
        also carry each first-conv filter's log power in the patch, a band level that
        LaBraM's group norms remove.
    """

    def __init__(
        self,
        n_rois: int = DEFAULT_ROIS,
        window_s: int = DEFAULT_WINDOW_S,
        spectral: str = "multi",
        scales: Sequence[float] = DEFAULT_SCALES,
        n_chans: int | None = None,
        depth: int = 12,
        filters: int = 8,
        heads: int = 10,
        spec_depth: int = 4,
        spec_heads: int = 8,
        spec_tokens: int = 32,
        drop_path: float = 0.1,
        readout: str = "mean",
        readout_rank: int = 4,
        amplitude_embed: bool = False,
        spatial_filters: int = 0,
    ) -> None:
        super().__init__()
        if readout not in ("mean", "channel"):
            raise ValueError(f"readout must be 'mean' or 'channel', got {readout!r}")
        if n_rois < 1:
            raise ValueError(f"n_rois must be >= 1, got {n_rois}")
        if window_s < 1 or int(window_s) != window_s:
            raise ValueError(f"window_s must be a whole number of seconds >= 1, got {window_s}")
        if spectral is False:  # YAML reads an unquoted `spectral: off` as false
            spectral = "off"
        if spectral not in ("multi", "single", "off"):
            raise ValueError(f"spectral must be 'multi', 'single' or 'off', got {spectral!r}")
        if spatial_filters < 0:
            raise ValueError(f"spatial_filters must be >= 0, got {spatial_filters}")
        if spatial_filters and spectral == "off":
            raise ValueError(
                "spatial_filters feed the spectral branch; set spectral to 'multi' or 'single' "
                "or spatial_filters=0"
            )
        self.n_rois, self.window_s, self.n_chans = n_rois, int(window_s), n_chans
        self.n_samples = self.window_s * SFREQ
        self.spectral_mode = spectral
        self.encoder = LaBraMEncoder(
            depth=depth,
            filters=filters,
            heads=heads,
            max_patches=max(16, self.window_s),
            drop_path=drop_path,
            amplitude_embed=amplitude_embed,
        )
        dim = self.encoder.dim
        # filter k is channel row SPATIAL_ROWS + k of the spectral embedding and readout
        self.spatial_filters = SpatialFilters(spatial_filters) if spatial_filters else None
        n_rows = SPATIAL_ROWS + spatial_filters
        if spectral == "off":
            self.scales: tuple[float, ...] = ()
            self.spectral: MultiScaleSpectral | None = None
        else:
            self.scales = tuple(float(s) for s in scales)
            if spectral == "single" and len(self.scales) != 1:
                self.scales = (1.0,)
            self.spectral = MultiScaleSpectral(
                self.n_samples, self.scales, SFREQ, dim, spec_tokens, spec_depth, spec_heads,
                n_rows,
            )  # fmt: skip
        self.readout = readout
        if readout == "channel":
            self.channel_readout = ChannelReadout(dim, n_rois, readout_rank, n_rows)
        else:
            self.head = nn.Linear(dim, n_rois)
            if not self.head.weight.is_meta:
                nn.init.trunc_normal_(self.head.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(self.head.bias)
                with torch.no_grad():
                    self.head.weight.mul_(1e-3)

    @classmethod
    def from_flavor(
        cls,
        flavor: str = "base",
        n_rois: int = DEFAULT_ROIS,
        n_chans: int | None = len(NEUROBOLT_26),
        window_s: int = DEFAULT_WINDOW_S,
        spectral: str = "multi",
        scales: Sequence[float] = DEFAULT_SCALES,
        **overrides: Any,
    ) -> NeuroBOLT:
        """Build at ``flavor`` (``debug``, ``small``, ``base``, ``large``, ``huge``)."""
        if flavor not in FLAVORS:
            raise ValueError(f"unknown NeuroBOLT flavor {flavor!r}; choose one of {list(FLAVORS)}")
        kw = {k: v for k, v in FLAVORS[flavor].items() if k != "expected_params"}
        kw.update(overrides)
        return cls(n_rois, window_s, spectral, scales, n_chans, **kw)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Checkpoint the temporal encoder's blocks (see :class:`LaBraMEncoder`)."""
        self.encoder.set_grad_checkpointing(enabled)

    def layer_id(self, param_name: str) -> int:
        """Depth for layer-wise LR decay (encoder blocks 1..depth, the rest on top)."""
        if param_name.startswith("encoder."):
            return self.encoder.layer_id(param_name[len("encoder.") :])
        return self.encoder.depth + 1

    def forward(self, x: Tensor, ch_idx: Tensor) -> Tensor:
        """Predict ROI signals.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
            EEG in microvolts at 200 Hz, ``T = window_s * 200``.
        ch_idx : LongTensor, shape (C,)
            Vocabulary rows (:func:`brainxl.channels.channel_indices`).

        Returns
        -------
        Tensor, shape (B, n_rois)
        """
        check_eeg_input(x, ch_idx, PATCH_SIZE, self.encoder.max_patches, "NeuroBOLT")
        if x.shape[-1] != self.n_samples:
            raise ValueError(
                f"NeuroBOLT was built for {self.window_s} s windows ({self.n_samples} samples) "
                f"but got {x.shape[-1]} samples; crop/pad the window or build with "
                f"window_s={x.shape[-1] // SFREQ}"
            )
        if self.readout == "channel":
            B, C, _ = x.shape
            h = self.encoder.forward_features(x, ch_idx).reshape(B, C, -1, self.encoder.dim)
            h = h.mean(dim=2)
            rows = ch_idx
            if self.spectral is not None:
                spec_x, rows = self.spectral_input(x, ch_idx)
                s = self.spectral.forward_tokens(spec_x, rows).mean(dim=2)
                h = torch.cat([h + s[:, :C], s[:, C:]], dim=1)
            return self.channel_readout(F.gelu(h), rows)
        h = self.encoder(x, ch_idx)
        if self.spectral is not None:
            h = h + self.spectral(*self.spectral_input(x, ch_idx))
        return self.head(F.gelu(h))

    def spectral_input(self, x: Tensor, ch_idx: Tensor) -> tuple[Tensor, Tensor]:
        """What the spectral branch reads: the sensors, then the spatial filters' outputs.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
        ch_idx : LongTensor, shape (C,)

        Returns
        -------
        Tensor, shape (B, C + K, T)
            Scaled by 0.01 (the branch's input scale).
        LongTensor, shape (C + K,)
            Channel rows: the sensors' vocabulary rows, then filter ``k`` at
            ``SPATIAL_ROWS - 1 + k`` (embedding row ``SPATIAL_ROWS + k``).
        """
        if self.spatial_filters is None:
            return x * 0.01, ch_idx
        v = self.spatial_filters(x, ch_idx)
        rows = torch.arange(v.shape[1], device=ch_idx.device) + (SPATIAL_ROWS - 1)
        return torch.cat([x, v], dim=1) * 0.01, torch.cat([ch_idx.long(), rows])


def _build(flavor: str, **overrides: Any) -> NeuroBOLT:
    return NeuroBOLT.from_flavor(flavor, **overrides)


def _example(model: nn.Module, batch_size: int) -> dict[str, Any]:
    n_chans = model.n_chans or len(NEUROBOLT_26)
    names = (NEUROBOLT_26 * (n_chans // len(NEUROBOLT_26) + 1))[:n_chans]
    gen = torch.Generator().manual_seed(0)
    x = 20.0 * torch.randn(batch_size, n_chans, model.n_samples, generator=gen)
    return {"x": x, "ch_idx": torch.tensor(channel_indices(names), dtype=torch.long)}


def _describe(flavor: str) -> tuple[str, str]:
    return (
        f"{len(NEUROBOLT_26)} ch x {DEFAULT_WINDOW_S} s @ {SFREQ} Hz",
        f"{DEFAULT_ROIS} ROIs",
    )


def _data_args(shapes: DataShapes) -> dict[str, Any]:
    """Builder arguments from the data: channels, ROIs, window length (whole seconds)."""
    w = shapes.window_s
    return {
        "n_chans": shapes.n_chans,
        "n_rois": shapes.n_rois,
        "window_s": int(w) if float(w).is_integer() else w,
    }


SPEC = register_model(
    ModelSpec(
        name="neurobolt",
        build=_build,
        flavors=FLAVORS,
        example_inputs=_example,
        describe_io=_describe,
        task="eeg2fmri",
        data_args=_data_args,
        batch=translation_batch("eeg2fmri", "x", channel_index=True),
    )
)
