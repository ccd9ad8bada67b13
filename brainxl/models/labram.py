"""LaBraM-style EEG foundation encoder, VQ-NSP neural tokenizer and masked-EEG-modeling head.

EEG of any montage (channel names from :mod:`brainxl.channels`) at 200 Hz is cut into
1 s patches per channel; a temporal conv embeds each patch into a token; learned spatial
(by vocabulary row) and temporal (by patch position) embeddings are added; a pre-norm
transformer encodes the ``C x n_patches`` tokens (channel-major order: all patches of
channel 0, then channel 1, ...).

Registered models: ``labram`` (encoder + masked-modeling head, task ``pretrain``) and
``labram-tokenizer`` (VQ-NSP tokenizer). Input is in microvolts; it is scaled by 1/100
inside, as LaBraM expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from brainxl.channels import channel_indices, vocabulary
from brainxl.models.blocks import (
    Block,
    TemporalConvPatchEmbed,
    WeightsMixin,
    gathered_for_init,
    init_transformer_weights,
)
from brainxl.models.registry import ModelSpec, register_model

SFREQ = 200
PATCH_SIZE = 200
#: Rows of the spatial embedding (row 0 = cls). Fixed capacity rather than the vocabulary
#: size, so saved weights stay loadable when names are appended to the vocabulary.
SPATIAL_ROWS = 768

#: The 23-channel TUH 10-20 referential set (old names map to 10-10 via the vocabulary).
TUH_23 = (
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "T3",
    "C3",
    "Cz",
    "C4",
    "T4",
    "T5",
    "P3",
    "Pz",
    "P4",
    "T6",
    "O1",
    "O2",
    "A1",
    "A2",
    "Oz",
    "FCz",
)

#: Encoder scale per flavor (``width = filters * 25`` for 200-sample patches).
ENCODER_FLAVORS: dict[str, dict[str, Any]] = {
    "debug": {"depth": 2, "filters": 2, "heads": 2},
    # debug's depth with base's 8-filter patch stem: the CPU size at which pretraining
    # measurably helps NeuroBOLT's temporal branch (README, "Does pretraining help?")
    "small": {"depth": 2, "filters": 8, "heads": 2},
    "base": {"depth": 12, "filters": 8, "heads": 10},
    "large": {"depth": 24, "filters": 16, "heads": 16},
    "huge": {"depth": 48, "filters": 32, "heads": 16},
    "xl": {"depth": 32, "filters": 64, "heads": 25},
}
#: Codebook scale per flavor (tokenizer and MEM head).
CODEBOOK_FLAVORS: dict[str, dict[str, int]] = {
    "debug": {"codebook_size": 128, "code_dim": 16},
    "small": {"codebook_size": 128, "code_dim": 16},
    "base": {"codebook_size": 8192, "code_dim": 64},
    "large": {"codebook_size": 8192, "code_dim": 64},
    "huge": {"codebook_size": 8192, "code_dim": 64},
    "xl": {"codebook_size": 8192, "code_dim": 64},
}


def check_eeg_input(
    x: Tensor,
    ch_idx: Tensor,
    patch_size: int,
    max_patches: int,
    who: str,
    per_sample: bool = False,
) -> int:
    """Validate an EEG batch and return its number of patches.

    Parameters
    ----------
    x : Tensor, shape (B, C, T)
    ch_idx : LongTensor, shape (C,) or, with ``per_sample``, (B, C)
        Vocabulary rows of the channels (:func:`brainxl.channels.channel_indices`); in the
        per-sample form ``-1`` marks a padding channel.
    per_sample : bool
        Accept one montage per sample (mixed-montage padded batches).

    Returns
    -------
    n_patches : int
        ``T // patch_size``.
    """
    if x.ndim != 3:
        raise ValueError(f"{who}: expected EEG of shape (batch, channels, time), got {x.shape}")
    B, C, T = x.shape
    shapes = [(C,), (B, C)] if per_sample else [(C,)]
    if tuple(ch_idx.shape) not in shapes:
        raise ValueError(
            f"{who}: ch_idx has shape {tuple(ch_idx.shape)} but x has {C} channels; pass one "
            "vocabulary index per channel (brainxl.channels.channel_indices(names))"
            + (", or one row per sample with -1 for padding channels" if per_sample else "")
        )
    if T % patch_size or T == 0:
        raise ValueError(
            f"{who}: {T} samples is not a positive multiple of the {patch_size}-sample patch; "
            "pad or crop the window to whole seconds at 200 Hz"
        )
    n = T // patch_size
    if n > max_patches:
        raise ValueError(
            f"{who}: {n} patches exceed the model's maximum of {max_patches} "
            f"({max_patches * patch_size // SFREQ} s); use a shorter window or a model built "
            "with a larger max_patches"
        )
    lowest = -1 if ch_idx.ndim == 2 else 0
    if ch_idx.dtype not in (torch.int64, torch.int32) or (
        C and (int(ch_idx.min()) < lowest or int(ch_idx.max()) >= SPATIAL_ROWS - 1)
    ):
        raise ValueError(
            f"{who}: ch_idx must hold vocabulary rows in [0, {SPATIAL_ROWS - 1})"
            + (" or -1 (padding)" if lowest < 0 else "")
        )
    return n


def token_padding(
    ch_idx: Tensor, batch_size: int, n_patches: int, pad_mask: Tensor | None = None
) -> Tensor | None:
    """Padding tokens of a batch, or None when there are none.

    Parameters
    ----------
    ch_idx : LongTensor, shape (C,) or (B, C)
        ``-1`` marks a padding channel (all its patches are padding).
    batch_size, n_patches : int
    pad_mask : BoolTensor or None, shape (B, C * n_patches)
        True = padding token (e.g. patches past the end of a shorter recording).

    Returns
    -------
    BoolTensor, shape (B, C * n_patches), or None
    """
    pad = None
    if ch_idx.ndim == 2 and bool((ch_idx < 0).any()):
        pad = (ch_idx < 0)[:, :, None].expand(-1, -1, n_patches).reshape(batch_size, -1)
    if pad_mask is not None:
        L = ch_idx.shape[-1] * n_patches
        if tuple(pad_mask.shape) != (batch_size, L):
            got = tuple(pad_mask.shape)
            raise ValueError(f"pad_mask must have shape {(batch_size, L)}, got {got}")
        pad = pad_mask.bool() if pad is None else pad | pad_mask.bool()
    if pad is not None and not bool(pad.any()):
        return None
    if pad is not None and bool(pad.all(dim=1).any()):
        raise ValueError("a sample of the batch is all padding; drop it from the batch")
    return pad


class LaBraMEncoder(WeightsMixin, nn.Module):
    """LaBraM transformer over (channel, 1 s patch) tokens of any montage.

    Parameters
    ----------
    depth, heads : int
        Number of blocks and attention heads.
    filters : int
        Temporal-conv filters; token width ``dim = filters * 25``.
    patch_size : int
        Samples per patch (200 = 1 s at 200 Hz).
    max_patches : int
        Rows of the temporal embedding = longest accepted window in patches.
    mlp_ratio : float
        MLP width relative to ``dim``.
    drop_path : float
        Stochastic-depth rate of the last block (linear from 0).
    init_values : float
        Layer-scale initial value.
    in_dim : int or None
        If given, tokens of width ``in_dim`` are projected linearly instead of raw EEG
        patches embedded by the temporal conv (used by the tokenizer's decoder).
    use_mask_token : bool
        Create a learned mask token (masked EEG modeling).
    qkv_bias : bool
        Bias on the q/k/v projection (off in every LaBraM flavor; on for converted
        checkpoints trained with ``q_bias``/``v_bias``).
    amplitude_embed : bool
        Add a learned linear embedding of the log power of each first-conv filter's
        output in the patch to its token (raw-EEG encoders only; off in LaBraM). The
        temporal conv's group norms pool their statistics over the whole sample, so
        without it a window's level in any frequency band, the quantity BOLD follows,
        reaches the transformer only through the first conv's bias.
    """

    def __init__(
        self,
        depth: int = 12,
        filters: int = 8,
        heads: int = 10,
        patch_size: int = PATCH_SIZE,
        max_patches: int = 16,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.1,
        init_values: float = 0.1,
        in_dim: int | None = None,
        use_mask_token: bool = False,
        qkv_bias: bool = False,
        amplitude_embed: bool = False,
    ) -> None:
        super().__init__()
        if len(vocabulary()) + 1 > SPATIAL_ROWS:
            raise ValueError(
                f"the channel vocabulary has {len(vocabulary())} names but the spatial "
                f"embedding holds {SPATIAL_ROWS - 1}; raise SPATIAL_ROWS in {__file__}"
            )
        self.patch_size = patch_size
        self.max_patches = max_patches
        self.depth = depth
        conv = TemporalConvPatchEmbed(patch_size, filters)
        dim = conv.dim
        self.dim = dim
        self.patch_embed: nn.Module = conv if in_dim is None else nn.Linear(in_dim, dim)
        self.amplitude_embed = (
            nn.Linear(filters, dim) if amplitude_embed and in_dim is None else None
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if use_mask_token else None
        self.spatial_embed = nn.Parameter(torch.zeros(SPATIAL_ROWS, dim))
        self.time_embed = nn.Parameter(torch.zeros(max_patches, dim))
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, qkv_bias=qkv_bias, qk_norm=True, drop_path=r,
                  init_values=init_values)
            for r in rates
        )  # fmt: skip
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.grad_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LaBraM initialisation (truncated normal, depth-rescaled output projections)."""
        if self.cls_token.is_meta:
            return
        for m in (self.patch_embed, self.amplitude_embed, self.norm):  # one child at a time
            if m is not None:
                with gathered_for_init(m):
                    init_transformer_weights(m)
        for i, blk in enumerate(self.blocks, start=1):
            with gathered_for_init(blk), torch.no_grad():
                init_transformer_weights(blk)
                blk.attn.proj.weight.div_((2.0 * i) ** 0.5)
                blk.mlp.fc2.weight.div_((2.0 * i) ** 0.5)
        for p in (self.cls_token, self.spatial_embed, self.time_embed, self.mask_token):
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in the backward pass (less memory, ~30% slower)."""
        self.grad_checkpointing = bool(enabled)

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: 0 embeddings, i+1 block i."""
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        if param_name.startswith("norm."):
            return self.depth + 1
        return 0

    def patch_tokens(
        self, x: Tensor, ch_idx: Tensor, pad: Tensor | None = None
    ) -> tuple[Tensor, int]:
        """Embed raw EEG patches.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
            EEG in microvolts, ``T = n_patches * patch_size``.
        ch_idx : LongTensor, shape (C,) or (B, C)
        pad : BoolTensor or None, shape (B, C * n_patches)
            Padding tokens (:func:`token_padding`): left out of the conv's group-norm
            statistics, so the other tokens are those of the unpadded sample.

        Returns
        -------
        tokens : Tensor, shape (B, C * n_patches, dim)
        n_patches : int
        """
        n = check_eeg_input(
            x, ch_idx, self.patch_size, self.max_patches, type(self).__name__, per_sample=True
        )
        B, C, _ = x.shape
        patches = (x * 0.01).reshape(B, C * n, self.patch_size)
        valid = None if pad is None else ~pad
        if self.amplitude_embed is None:
            return self.patch_embed(patches, valid=valid), n
        tokens, log_power = self.patch_embed.forward_with_power(patches, valid=valid)
        return tokens + self.amplitude_embed(log_power.to(tokens.dtype)), n

    def encode_tokens(
        self,
        tokens: Tensor,
        ch_idx: Tensor,
        n_patches: int,
        mask: Tensor | None = None,
        pad: Tensor | None = None,
    ) -> Tensor:
        """Run the transformer over already embedded tokens.

        Parameters
        ----------
        tokens : Tensor, shape (B, C * n_patches, dim)
        ch_idx : LongTensor, shape (C,) or (B, C)
            One montage for the batch, or one per sample (``-1`` = padding channel).
        n_patches : int
        mask : BoolTensor or None, shape (B, C * n_patches)
            True where the token is replaced by the learned mask token.
        pad : BoolTensor or None, shape (B, C * n_patches)
            Padding tokens (:func:`token_padding`): no token attends to them, so every
            other token's output is that of the unpadded sample.

        Returns
        -------
        Tensor, shape (B, C * n_patches, dim)
            Final-normed patch tokens (the cls token is dropped); padding positions hold
            values that must be ignored.
        """
        B, L, D = tokens.shape
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("this encoder has no mask token; build it with use_mask_token")
            if mask.shape != (B, L):
                raise ValueError(f"mask must have shape {(B, L)}, got {tuple(mask.shape)}")
            tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        time = self.time_embed[:n_patches, :]
        if ch_idx.ndim == 2:  # one montage per sample; padding channels (-1) read row 0
            spatial = self.spatial_embed[ch_idx.long().clamp(min=-1) + 1]  # (B, C, D)
            pos = (spatial[:, :, None, :] + time[None, None]).reshape(B, L, D)
        else:
            spatial = self.spatial_embed[ch_idx.long() + 1]  # (C, D)
            pos = (spatial[:, None, :] + time[None]).reshape(L, D)
        cls = (self.cls_token + self.spatial_embed[0]).expand(B, -1, -1)
        h = torch.cat([cls, tokens + pos], dim=1)
        attn_mask = None
        if pad is not None:  # (B, 1, 1, 1 + L): True = may be attended to (cls always)
            keep = torch.cat([pad.new_ones(B, 1), ~pad], dim=1)
            attn_mask = keep[:, None, None, :]
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(blk, h, attn_mask, use_reentrant=False)
            else:
                h = blk(h, attn_mask)
        return self.norm(h[:, 1:])

    def forward_features(
        self,
        x: Tensor,
        ch_idx: Tensor,
        mask: Tensor | None = None,
        pad_mask: Tensor | None = None,
    ) -> Tensor:
        """Encode EEG into patch tokens.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
            EEG in microvolts at 200 Hz.
        ch_idx : LongTensor, shape (C,) or (B, C)
            One montage, or one per sample with ``-1`` for padding channels
            (:func:`brainxl.models.labram_pretrain.pad_eeg_batch`).
        mask : BoolTensor or None, shape (B, C * n_patches)
        pad_mask : BoolTensor or None, shape (B, C * n_patches)
            True = padding token (besides the padding channels of ``ch_idx``).

        Returns
        -------
        Tensor, shape (B, C * n_patches, dim)
        """
        n = check_eeg_input(
            x, ch_idx, self.patch_size, self.max_patches, type(self).__name__, per_sample=True
        )
        pad = token_padding(ch_idx, x.shape[0], n, pad_mask)
        tokens, n = self.patch_tokens(x, ch_idx, pad)
        return self.encode_tokens(tokens, ch_idx, n, mask, pad)

    def forward(self, x: Tensor, ch_idx: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Mean of the (non-padding) patch tokens, shape (B, dim)."""
        feats = self.forward_features(x, ch_idx, pad_mask=pad_mask)
        pad = token_padding(ch_idx, x.shape[0], feats.shape[1] // ch_idx.shape[-1], pad_mask)
        if pad is None:
            return feats.mean(dim=1)
        keep = (~pad).to(feats.dtype)[..., None]
        return (feats * keep).sum(dim=1) / keep.sum(dim=1)


class LaBraMForMEM(WeightsMixin, nn.Module):
    """Masked EEG modeling: predict the tokenizer's code of each masked patch.

    Parameters
    ----------
    codebook_size : int
        Number of codes (classes of the head).
    symmetric : bool
        Also run the complementary mask (LaBraM's symmetric masking); both passes share
        one batched forward.
    **encoder_kwargs
        Passed to :class:`LaBraMEncoder`.
    """

    def __init__(self, codebook_size: int = 8192, symmetric: bool = True, **encoder_kwargs: Any):
        super().__init__()
        self.encoder = LaBraMEncoder(use_mask_token=True, **encoder_kwargs)
        self.lm_head = nn.Linear(self.encoder.dim, codebook_size)
        self.codebook_size = codebook_size
        self.symmetric = symmetric
        if not self.lm_head.weight.is_meta:
            with gathered_for_init(self.lm_head):
                init_transformer_weights(self.lm_head)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """See :meth:`LaBraMEncoder.set_grad_checkpointing`."""
        self.encoder.set_grad_checkpointing(enabled)

    def forward(
        self,
        x: Tensor,
        ch_idx: Tensor,
        mask: Tensor,
        targets: Tensor | None = None,
        pad_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Predict codes of masked patches.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
            EEG in microvolts.
        ch_idx : LongTensor, shape (C,) or (B, C)
            One montage, or one per sample with ``-1`` for padding channels.
        mask : BoolTensor, shape (B, C * n_patches)
            True = masked (to predict).
        targets : LongTensor or None, shape (B, C * n_patches)
            Codes from :meth:`VQNSPTokenizer.tokenize`.
        pad_mask : BoolTensor or None, shape (B, C * n_patches)
            True = padding token. Padding is never predicted, attended to or counted.

        Returns
        -------
        dict
            ``logits`` (M, codebook_size) for the M masked tokens (both passes when
            symmetric: first ``mask`` then ``~mask``, each in row-major order); with
            ``targets`` also ``loss`` (cross-entropy, scalar), ``accuracy`` (masked-token
            accuracy), and per logits row ``correct`` (bool) and ``sample_index`` (its
            sample in the batch), from which accuracy per dataset is computed.
        """
        n = check_eeg_input(
            x, ch_idx, PATCH_SIZE, self.encoder.max_patches, "LaBraMForMEM", per_sample=True
        )
        pad = token_padding(ch_idx, x.shape[0], n, pad_mask)
        tokens, n = self.encoder.patch_tokens(x, ch_idx, pad)
        mask = mask.bool()
        if self.symmetric:
            tokens = torch.cat([tokens, tokens])
            mask = torch.cat([mask, ~mask])
            if ch_idx.ndim == 2:
                ch_idx = torch.cat([ch_idx, ch_idx])
            if pad is not None:
                pad = torch.cat([pad, pad])
        feats = self.encoder.encode_tokens(tokens, ch_idx, n, mask, pad)
        if pad is not None:
            mask = mask & ~pad
        logits = self.lm_head(feats[mask])
        out = {"logits": logits}
        if targets is not None:
            if targets.shape != (x.shape[0], mask.shape[1]):
                raise ValueError(
                    f"targets must have shape {(x.shape[0], mask.shape[1])}, got "
                    f"{tuple(targets.shape)}"
                )
            tgt = torch.cat([targets, targets]) if self.symmetric else targets
            tgt = tgt[mask]
            out["loss"] = F.cross_entropy(logits.float(), tgt)
            correct = (logits.argmax(-1) == tgt).detach()
            out["accuracy"] = correct.float().mean()
            # per masked token: right or not, and its sample (per-dataset accuracy)
            out["correct"] = correct
            out["sample_index"] = mask.nonzero()[:, 0] % x.shape[0]
        return out


def _l2norm(t: Tensor) -> Tensor:
    return F.normalize(t, p=2.0, dim=-1)


class NormEMAVectorQuantizer(nn.Module):
    """Cosine-similarity vector quantizer with an EMA-updated, l2-normalised codebook.

    The codebook is a buffer (updated by EMA, not by the optimizer), initialised by
    k-means on the first training batch. Under ``torch.distributed`` the code counts and
    sums are all-reduced so every rank keeps the same codebook.

    Parameters
    ----------
    n_codes : int
        Codebook entries.
    dim : int
        Code width.
    beta : float
        Commitment-loss weight.
    decay : float
        EMA decay.
    kmeans_iters : int
        K-means iterations of the initialisation (0 = keep the random init).
    dead_code_threshold : float
        In training, codes whose EMA count (``cluster_size``) falls below this fraction of
        the uniform share (the EMA count of all tokens over ``n_codes``) are re-seeded with
        random vectors of the current batch (rank 0's, broadcast), their count reset to
        that floor. Relative, so it means the same at any batch size; 0 disables it.
    """

    def __init__(
        self,
        n_codes: int,
        dim: int,
        beta: float = 1.0,
        decay: float = 0.99,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_codes, self.dim, self.beta, self.decay = n_codes, dim, beta, decay
        self.kmeans_iters = kmeans_iters
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.dead_code_threshold = float(dead_code_threshold)
        self.reseeded = 0  # codes re-seeded by the last training step
        self.register_buffer("codebook", _l2norm(torch.randn(n_codes, dim)))
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("initted", torch.tensor(kmeans_iters == 0))

    @torch.no_grad()
    def _kmeans_init(self, z: Tensor) -> None:
        gen = torch.Generator(device="cpu").manual_seed(0)
        pick = torch.randint(0, z.shape[0], (self.n_codes,), generator=gen).to(z.device)
        centers = z[pick].clone()
        for _ in range(self.kmeans_iters):
            assign = (z @ centers.t()).argmax(-1)
            sums = torch.zeros_like(centers).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=self.n_codes)
            centers = torch.where((counts > 0)[:, None], _l2norm(sums), centers)
        self._broadcast(centers)
        self.codebook.copy_(centers)
        self.initted.fill_(True)

    @staticmethod
    def _distributed() -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def _broadcast(self, t: Tensor) -> None:
        if self._distributed():
            torch.distributed.broadcast(t, src=0)

    def _all_reduce(self, t: Tensor) -> None:
        if self._distributed():
            torch.distributed.all_reduce(t)

    @torch.no_grad()
    def _reseed_dead_codes(self, z: Tensor) -> int:
        if self.dead_code_threshold <= 0:
            return 0
        floor = self.dead_code_threshold * self.cluster_size.sum() / self.n_codes
        dead = self.cluster_size < floor  # same on every rank
        n = int(dead.sum())
        if n == 0:
            return 0
        pick = torch.randint(0, z.shape[0], (n,)).to(z.device)
        fresh = z[pick].clone()
        self._broadcast(fresh)
        self.codebook[dead] = fresh
        self.cluster_size[dead] = floor
        return n

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantise.

        Parameters
        ----------
        z : Tensor, shape (N, dim)

        Returns
        -------
        z_q : Tensor, shape (N, dim)
            Straight-through quantised codes (gradients flow to ``z``).
        loss : Tensor, scalar
            Commitment loss.
        codes : LongTensor, shape (N,)
        """
        z = _l2norm(z.float())
        if self.training and not bool(self.initted):
            self._kmeans_init(z.detach())
        codes = (z.detach() @ self.codebook.t()).argmax(-1)
        z_q = self.codebook[codes]
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(codes, minlength=self.n_codes).to(z.dtype)
                sums = torch.zeros_like(self.codebook).index_add_(0, codes, z.detach())
                self._all_reduce(counts)
                self._all_reduce(sums)
                self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
                used = counts > 0
                new = torch.where(used[:, None], _l2norm(sums), self.codebook)
                self.codebook.copy_(_l2norm(self.codebook * self.decay + new * (1 - self.decay)))
                self.reseeded = self._reseed_dead_codes(z.detach())
        loss = self.beta * F.mse_loss(z, z_q.detach())
        return z + (z_q - z).detach(), loss, codes


def code_statistics(codes: Tensor, n_codes: int) -> dict[str, Tensor]:
    """Codebook ``usage`` (fraction of codes used) and ``perplexity`` of a batch's codes."""
    counts = torch.bincount(codes.reshape(-1), minlength=n_codes).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p * p.clamp(min=1e-12).log()).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}


def _standardize(t: Tensor) -> Tensor:
    return (t - t.mean(-1, keepdim=True)) / (t.std(-1, keepdim=True) + 1e-5)


#: Tokenizer amplitude targets (:func:`spectrum_targets`).
AMPLITUDE_TARGETS = ("patch", "log", "band")
#: Lower edges (FFT bins; 1 Hz each for LaBraM's 1-s patches at 200 Hz) of the bands the
#: ``"band"`` target averages over: finer where EEG rhythms sit, one band above 70 Hz.
BAND_EDGES = (0, 1, 2, 4, 6, 8, 10, 13, 16, 20, 25, 30, 40, 50, 70)


def _band_average(amp: Tensor) -> Tensor:
    """Each bin replaced by the mean amplitude of its :data:`BAND_EDGES` band."""
    n = amp.shape[-1]
    band = torch.bucketize(torch.arange(n), torch.tensor(BAND_EDGES), right=True) - 1
    onehot = F.one_hot(band, int(band.max()) + 1).to(amp.dtype).to(amp.device)  # (n, n_bands)
    means = (amp @ onehot) / onehot.sum(0)
    return means @ onehot.T


def _check_amplitude_target(value: str, name: str) -> None:
    if value not in AMPLITUDE_TARGETS:
        raise ValueError(f"{name} must be one of {AMPLITUDE_TARGETS}, got {value!r}")


def spectrum_targets(patches: Tensor, amplitude: str = "patch") -> tuple[Tensor, Tensor]:
    """The tokenizer's reconstruction targets of EEG patches.

    Parameters
    ----------
    patches : Tensor, shape (..., patch_size)
        EEG in microvolts.
    amplitude : {"patch", "log", "band"}
        ``"patch"`` (LaBraM): the amplitude standardised over the patch's own frequency
        bins, which keeps the spectrum's shape and removes its level. ``"log"``: the
        natural log of the amplitude (floor 1e-3), which keeps the level too. ``"band"``:
        the log of the mean amplitude in each band of :data:`BAND_EDGES`, repeated over
        the band's bins: the level of each rhythm, without the bin-to-bin scatter of a
        1-s spectrum that no code can predict.

    Returns
    -------
    (amplitude, phase) : Tensors, shape (..., patch_size // 2 + 1)
        The real FFT's amplitude (as chosen) and phase of each patch, in units of
        100 µV; the phase standardised over the patch's frequency bins.
    """
    _check_amplitude_target(amplitude, "amplitude target")
    spec = torch.fft.rfft(patches.float() * 0.01, dim=-1)
    if amplitude == "patch":
        amp = _standardize(spec.abs())
    else:
        amp = torch.log((_band_average(spec.abs()) if amplitude == "band" else spec.abs()) + 1e-3)
    return amp, _standardize(torch.angle(spec))


class VQNSPTokenizer(WeightsMixin, nn.Module):
    """VQ neural-spectrum tokenizer: EEG patches -> discrete codes -> Fourier spectrum.

    Encoder (a LaBraM encoder) -> projection to ``code_dim`` -> cosine codebook lookup ->
    decoder (a shallow LaBraM transformer over code tokens) -> two heads predicting the
    amplitude (:func:`spectrum_targets`) and z-scored phase of each patch's real FFT
    (``patch_size // 2 + 1`` bins).

    Parameters
    ----------
    codebook_size, code_dim : int
        Codebook shape.
    decoder_depth : int
        Blocks of the decoder.
    dead_code_threshold : float
        See :class:`NormEMAVectorQuantizer` (0 = no re-seeding).
    amplitude_target : {"patch", "log", "band"}
        Amplitude target of :func:`spectrum_targets` (``"patch"``: LaBraM's).
    **encoder_kwargs
        Passed to the encoder (:class:`LaBraMEncoder`).
    """

    def __init__(
        self,
        codebook_size: int = 8192,
        code_dim: int = 64,
        decoder_depth: int = 3,
        dead_code_threshold: float = 0.0,
        amplitude_target: str = "patch",
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        _check_amplitude_target(amplitude_target, "amplitude_target")  # at build, not 1st step
        self.amplitude_target = amplitude_target
        encoder_kwargs.setdefault("drop_path", 0.0)
        self.encoder = LaBraMEncoder(**encoder_kwargs)
        dim = self.encoder.dim
        self.encode_proj = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, code_dim))
        self.quantizer = NormEMAVectorQuantizer(
            codebook_size, code_dim, dead_code_threshold=dead_code_threshold
        )
        dec_kwargs = {**encoder_kwargs, "depth": decoder_depth, "in_dim": code_dim}
        self.decoder = LaBraMEncoder(**dec_kwargs)
        n_bins = self.encoder.patch_size // 2 + 1
        self.n_bins = n_bins
        self.amp_head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, n_bins))
        self.phase_head = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, n_bins))
        if not self.amp_head[0].weight.is_meta:
            for m in (self.encode_proj, self.amp_head, self.phase_head):
                with gathered_for_init(m):
                    init_transformer_weights(m)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """See :meth:`LaBraMEncoder.set_grad_checkpointing`."""
        self.encoder.set_grad_checkpointing(enabled)
        self.decoder.set_grad_checkpointing(enabled)

    def _encode(
        self, x: Tensor, ch_idx: Tensor, pad_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, int, Tensor | None]:
        n = check_eeg_input(
            x, ch_idx, PATCH_SIZE, self.encoder.max_patches, "VQNSPTokenizer", per_sample=True
        )
        pad = token_padding(ch_idx, x.shape[0], n, pad_mask)
        feats = self.encoder.forward_features(x, ch_idx, pad_mask=pad)
        B, L, _ = feats.shape
        z = self.encode_proj(feats)
        if pad is None:
            z_q, qloss, codes = self.quantizer(z.reshape(B * L, -1))
            return z_q.reshape(B, L, -1), qloss, codes.reshape(B, L), n, None
        keep = ~pad  # only real tokens are quantised (and counted by the codebook EMA)
        zq_real, qloss, codes_real = self.quantizer(z[keep])
        z_q = zq_real.new_zeros(B, L, zq_real.shape[-1]).index_put((keep,), zq_real)
        codes = codes_real.new_full((B, L), -1).index_put((keep,), codes_real)
        return z_q, qloss, codes, n, pad

    @torch.no_grad()
    def tokenize(self, x: Tensor, ch_idx: Tensor, pad_mask: Tensor | None = None) -> Tensor:
        """Codes of every patch.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
            EEG in microvolts.
        ch_idx : LongTensor, shape (C,) or (B, C)
            One montage, or one per sample with ``-1`` for padding channels.
        pad_mask : BoolTensor or None, shape (B, C * n_patches)
            True = padding token.

        Returns
        -------
        LongTensor, shape (B, C * n_patches)
            ``-1`` at padding tokens.
        """
        was = self.training
        self.eval()
        try:
            return self._encode(x, ch_idx, pad_mask)[2]
        finally:
            self.train(was)

    def forward(
        self, x: Tensor, ch_idx: Tensor, pad_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Tokenize and reconstruct the Fourier spectrum of every patch.

        Parameters
        ----------
        x : Tensor, shape (B, C, T)
        ch_idx : LongTensor, shape (C,) or (B, C)
            One montage, or one per sample with ``-1`` for padding channels.
        pad_mask : BoolTensor or None, shape (B, C * n_patches)
            True = padding token: not quantised, attended to or counted in the losses.

        Returns
        -------
        dict
            ``loss`` (quantisation + amplitude MSE + phase MSE), the three parts
            (``loss_quant``, ``loss_amp``, ``loss_phase``), the batch's codebook
            ``usage`` (fraction of codes used) and ``perplexity`` (exp entropy of the
            code histogram), ``dead_codes`` (codes re-seeded in this step), ``codes``
            (B, C * n_patches; ``-1`` at padding) and the predictions
            ``amplitude``/``phase`` (B, C * n_patches, n_bins).
        """
        z_q, qloss, codes, n, pad = self._encode(x, ch_idx, pad_mask)
        dec = self.decoder.encode_tokens(self.decoder.patch_embed(z_q), ch_idx, n, pad=pad)
        amp_hat, phase_hat = self.amp_head(dec), self.phase_head(dec)
        B, C, _ = x.shape
        amp_t, phase_t = spectrum_targets(x.reshape(B, C * n, -1), self.amplitude_target)
        if pad is None:
            l_amp = F.mse_loss(amp_hat.float(), amp_t)
            l_phase = F.mse_loss(phase_hat.float(), phase_t)
        else:
            keep = ~pad
            l_amp = F.mse_loss(amp_hat.float()[keep], amp_t[keep])
            l_phase = F.mse_loss(phase_hat.float()[keep], phase_t[keep])
        return {
            "loss": qloss + l_amp + l_phase,
            "loss_quant": qloss.detach(),
            "loss_amp": l_amp.detach(),
            "loss_phase": l_phase.detach(),
            **code_statistics(codes[codes >= 0], self.quantizer.n_codes),
            "dead_codes": torch.tensor(float(self.quantizer.reseeded if self.training else 0)),
            "codes": codes,
            "amplitude": amp_hat,
            "phase": phase_hat,
        }


# ----------------------------------------------------------------------------- registry


def build_encoder(flavor: str = "base", **overrides: Any) -> LaBraMEncoder:
    """LaBraM encoder at ``flavor`` (a key of :data:`ENCODER_FLAVORS`: ``debug`` .. ``xl``)."""
    return LaBraMEncoder(**{**_scale(ENCODER_FLAVORS, flavor), **overrides})


def _scale(table: dict[str, dict[str, Any]], flavor: str) -> dict[str, Any]:
    if flavor not in table:
        raise ValueError(f"unknown flavor {flavor!r}; choose one of {', '.join(table)}")
    return {k: v for k, v in table[flavor].items() if k not in ("expected_params", "zero3_only")}


def _build_mem(flavor: str, **overrides: Any) -> LaBraMForMEM:
    kw = _scale(MEM_FLAVORS, flavor)
    kw.pop("code_dim")
    return LaBraMForMEM(**{**kw, **overrides})


def _build_tokenizer(flavor: str, **overrides: Any) -> VQNSPTokenizer:
    return VQNSPTokenizer(**{**_scale(TOKENIZER_FLAVORS, flavor), **overrides})


def default_eeg(
    batch_size: int, names: Sequence[str] = TUH_23, seconds: int = 16, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Example EEG batch: ``(x (B, C, seconds * 200) in microvolts, ch_idx (C,))``."""
    gen = torch.Generator().manual_seed(seed)
    x = 20.0 * torch.randn(batch_size, len(names), seconds * SFREQ, generator=gen)
    return x, torch.tensor(channel_indices(names), dtype=torch.long)


def random_mask(batch_size: int, n_tokens: int, ratio: float = 0.5, seed: int = 0) -> Tensor:
    """Boolean mask with exactly ``round(ratio * n_tokens)`` True per row, shape (B, L)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.rand(batch_size, n_tokens, generator=gen).argsort(dim=1)
    return order < round(ratio * n_tokens)


def _mem_example(model: nn.Module, batch_size: int) -> dict[str, Any]:
    x, ch_idx = default_eeg(batch_size)
    L = x.shape[1] * (x.shape[2] // PATCH_SIZE)
    gen = torch.Generator().manual_seed(1)
    targets = torch.randint(0, model.codebook_size, (batch_size, L), generator=gen)
    return {"x": x, "ch_idx": ch_idx, "mask": random_mask(batch_size, L), "targets": targets}


def _tokenizer_example(model: nn.Module, batch_size: int) -> dict[str, Any]:
    x, ch_idx = default_eeg(batch_size)
    return {"x": x, "ch_idx": ch_idx}


def _io_mem(flavor: str) -> tuple[str, str]:
    k = CODEBOOK_FLAVORS[flavor]["codebook_size"]
    return f"{len(TUH_23)} ch x 16 s @ {SFREQ} Hz + mask", f"{k}-way code per masked patch"


def _io_tokenizer(flavor: str) -> tuple[str, str]:
    k = CODEBOOK_FLAVORS[flavor]["codebook_size"]
    return f"{len(TUH_23)} ch x 16 s @ {SFREQ} Hz", f"1 of {k} codes per channel-second"


# expected_params: measured with meta-device construction (tests hold them within 2%).
_MEM_PARAMS = {
    "debug": 107_400,
    "small": 1_149_504,
    "base": 7_594_528,
    "large": 49_799_712,
    "huge": 376_309_504,
    "xl": 998_064_896,
}
_TOK_PARAMS = {
    "debug": 190_490,
    "small": 1_931_594,
    "base": 7_739_642,
    "large": 53_217_686,
    "huge": 395_633_378,
    "xl": 1_086_640_138,
}
MEM_FLAVORS: dict[str, dict[str, Any]] = {
    f: {**ENCODER_FLAVORS[f], **CODEBOOK_FLAVORS[f], "expected_params": _MEM_PARAMS[f]}
    for f in ENCODER_FLAVORS
}
TOKENIZER_FLAVORS: dict[str, dict[str, Any]] = {
    f: {**ENCODER_FLAVORS[f], **CODEBOOK_FLAVORS[f], "expected_params": _TOK_PARAMS[f]}
    for f in ENCODER_FLAVORS
}
TOKENIZER_FLAVORS["debug"]["decoder_depth"] = 1
TOKENIZER_FLAVORS["small"]["decoder_depth"] = 1
for _table in (MEM_FLAVORS, TOKENIZER_FLAVORS):
    _table["xl"]["zero3_only"] = True

register_model(
    ModelSpec(
        name="labram",
        build=_build_mem,
        flavors=MEM_FLAVORS,
        example_inputs=_mem_example,
        describe_io=_io_mem,
        task="pretrain",
        extra={"encoder_flavors": ENCODER_FLAVORS},
    )
)
register_model(
    ModelSpec(
        name="labram-tokenizer",
        build=_build_tokenizer,
        flavors=TOKENIZER_FLAVORS,
        example_inputs=_tokenizer_example,
        describe_io=_io_tokenizer,
        task="pretrain",
    )
)
