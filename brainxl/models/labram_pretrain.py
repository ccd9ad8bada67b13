"""Model-side pieces of LaBraM pretraining: padded mixed-montage batches, masking, metrics.

- :func:`pad_eeg_batch` packs recordings of different montages and lengths into one
  padded batch (``ch_idx`` per sample with ``-1`` for padding channels, ``pad_mask`` for
  padding patches) that :class:`~brainxl.models.labram.LaBraMEncoder`,
  :class:`~brainxl.models.labram.LaBraMForMEM` honour exactly: each sample's outputs are
  those of the sample alone.
- :func:`token_budget_batches` groups samples so that ``batch x channels x patches``
  (padding included) stays within a token budget.
- :func:`symmetric_mask`: LaBraM's masking, half of each sample's real tokens, never
  padding; :class:`~brainxl.models.labram.LaBraMForMEM` adds the complementary pass.
- :class:`CodebookMonitor`: codebook usage (fraction of codes used) and perplexity over
  an epoch of tokenizer codes; :func:`masked_token_accuracy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from brainxl.channels import channel_indices
from brainxl.models.labram import PATCH_SIZE


@dataclass
class PaddedBatch:
    """A mixed-montage batch.

    Attributes
    ----------
    x : Tensor, shape (B, C, n * 200)
        EEG in microvolts, zeros in padding.
    ch_idx : LongTensor, shape (B, C)
        Vocabulary rows, ``-1`` for padding channels.
    pad_mask : BoolTensor, shape (B, C * n)
        True = padding token (padding channel or patch past a sample's end).
    shapes : list of (int, int)
        ``(channels, patches)`` of each sample.
    """

    x: Tensor
    ch_idx: Tensor
    pad_mask: Tensor
    shapes: list[tuple[int, int]]

    @property
    def padding_fraction(self) -> float:
        """Share of the batch's tokens that are padding."""
        return float(self.pad_mask.float().mean())

    def sample_tokens(self, tokens: Tensor, i: int) -> Tensor:
        """Sample ``i``'s rows of a (B, C * n, ...) token tensor, in its own layout.

        Returns the ``channels_i * patches_i`` tokens in the order the encoder gives for
        the sample alone (channel-major).
        """
        B, C, T = self.x.shape
        n = T // PATCH_SIZE
        c, p = self.shapes[i]
        return tokens[i].reshape(C, n, *tokens.shape[2:])[:c, :p].reshape(c * p, *tokens.shape[2:])


def pad_eeg_batch(samples: Sequence[tuple[Tensor, Sequence[str] | Tensor]]) -> PaddedBatch:
    """Pad recordings of any montage and whole-second length into one batch.

    Parameters
    ----------
    samples : sequence of (x, channels)
        ``x`` (C_i, T_i) in microvolts at 200 Hz with ``T_i`` a multiple of 200;
        ``channels`` the channel names (or their vocabulary rows).

    Returns
    -------
    PaddedBatch
    """
    if not samples:
        raise ValueError("pad_eeg_batch: no samples")
    rows, shapes = [], []
    for i, (x, chans) in enumerate(samples):
        if x.ndim != 2 or x.shape[1] % PATCH_SIZE or x.shape[1] == 0:
            raise ValueError(
                f"sample {i}: expected (channels, time) with time a positive multiple of "
                f"{PATCH_SIZE} samples, got {tuple(x.shape)}"
            )
        idx = (
            chans.long()
            if isinstance(chans, Tensor)
            else torch.tensor(channel_indices(list(chans)), dtype=torch.long)
        )
        if idx.numel() != x.shape[0]:
            raise ValueError(f"sample {i}: {x.shape[0]} channels but {idx.numel()} names")
        rows.append(idx)
        shapes.append((x.shape[0], x.shape[1] // PATCH_SIZE))
    C = max(c for c, _ in shapes)
    n = max(p for _, p in shapes)
    B = len(samples)
    x = torch.zeros(B, C, n * PATCH_SIZE, dtype=samples[0][0].dtype)
    ch_idx = torch.full((B, C), -1, dtype=torch.long)
    pad = torch.ones(B, C, n, dtype=torch.bool)
    for i, ((xi, _), idx, (c, p)) in enumerate(zip(samples, rows, shapes)):
        x[i, :c, : p * PATCH_SIZE] = xi
        ch_idx[i, :c] = idx
        pad[i, :c, :p] = False
    return PaddedBatch(x, ch_idx, pad.reshape(B, C * n), shapes)


def token_budget_batches(shapes: Sequence[tuple[int, int]], budget: int) -> list[list[int]]:
    """Group samples, in order, into batches of at most ``budget`` padded tokens.

    A batch's cost is ``len(batch) * max channels * max patches`` (its padded size).

    Parameters
    ----------
    shapes : sequence of (channels, patches)
    budget : int
        Token budget per batch (e.g. 16 x 256).

    Returns
    -------
    list of list of int
        Sample indices per batch.
    """
    batches: list[list[int]] = []
    cur: list[int] = []
    mc = mp = 0
    for i, (c, p) in enumerate(shapes):
        if c * p > budget:
            raise ValueError(
                f"sample {i} alone has {c} x {p} = {c * p} tokens, over the budget {budget}; "
                "raise the token budget or crop the sample"
            )
        nc, np_ = max(mc, c), max(mp, p)
        if cur and (len(cur) + 1) * nc * np_ > budget:
            batches.append(cur)
            cur, nc, np_ = [], c, p
        cur.append(i)
        mc, mp = nc, np_
    if cur:
        batches.append(cur)
    return batches


def symmetric_mask(
    pad_mask: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """LaBraM's random mask: ``round(ratio * n_real)`` real tokens per sample, no padding.

    Parameters
    ----------
    pad_mask : BoolTensor, shape (B, L)
        True = padding (all False for unpadded batches).
    ratio : float
        Masked share of the real tokens (0.5 in LaBraM, whose symmetric pass then
        predicts the other half).
    generator : torch.Generator, optional

    Returns
    -------
    BoolTensor, shape (B, L)
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    score = torch.rand(pad_mask.shape, generator=generator).to(pad_mask.device)
    score = score.masked_fill(pad_mask, 2.0)  # padding sorts last
    rank = score.argsort(dim=1).argsort(dim=1)
    k = ((~pad_mask).sum(dim=1, keepdim=True).float() * ratio).round().long()
    return rank < k


def channel_mask(
    pad_mask: Tensor,
    n_channels: int,
    ratio: float = 0.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Whole-channel mask: every patch of ``round(ratio * real channels)`` channels.

    A patch masked alone can be read from its own channel's neighbouring patches (band
    power changes over seconds); with its whole channel masked it has to be inferred from
    the other channels, which is where the sources' spatial layout shows.

    Parameters
    ----------
    pad_mask : BoolTensor, shape (B, n_channels * n_patches)
        True = padding; tokens channel-major (token ``c * n_patches + p``).
    n_channels : int
        Channels of the padded batch.
    ratio : float
        Masked share of each sample's real channels.
    generator : torch.Generator, optional

    Returns
    -------
    BoolTensor, shape (B, n_channels * n_patches)
        False at padding.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    B, L = pad_mask.shape
    if n_channels < 1 or L % n_channels:
        raise ValueError(f"{L} tokens per sample do not split into {n_channels} channels")
    pad = pad_mask.reshape(B, n_channels, L // n_channels)
    real = ~pad.all(dim=2)  # (B, C): channels with a real patch
    score = torch.rand((B, n_channels), generator=generator).to(pad_mask.device)
    rank = score.masked_fill(~real, 2.0).argsort(dim=1).argsort(dim=1)
    k = (real.sum(dim=1, keepdim=True).float() * ratio).round().long()
    return ((rank < k)[:, :, None] & ~pad).reshape(B, L)


def masked_token_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Share of masked tokens whose code is predicted exactly (scalar tensor)."""
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} logits rows for {targets.shape[0]} targets")
    if targets.numel() == 0:
        return logits.new_zeros(())
    return (logits.argmax(-1) == targets).float().mean()


class CodebookMonitor:
    """Codebook usage and perplexity accumulated over many batches (e.g. an epoch).

    Parameters
    ----------
    n_codes : int
        Codebook size.
    """

    def __init__(self, n_codes: int) -> None:
        self.n_codes = n_codes
        self.counts = torch.zeros(n_codes, dtype=torch.float64)

    def update(self, codes: Tensor) -> None:
        """Count the codes of one batch (any shape; negative entries are ignored)."""
        c = codes.detach().reshape(-1).long().cpu()
        c = c[c >= 0]
        self.counts += torch.bincount(c, minlength=self.n_codes).double()

    def all_reduce(self) -> None:
        """Sum the counts over ranks (under ``torch.distributed``)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = self.counts.to(torch.float64)
            torch.distributed.all_reduce(t)
            self.counts = t

    def usage(self) -> float:
        """Fraction of the codebook used at least once."""
        return float((self.counts > 0).double().mean())

    def perplexity(self) -> float:
        """``exp(entropy)`` of the code histogram: the effective number of codes."""
        total = self.counts.sum()
        if total == 0:
            return 0.0
        p = self.counts[self.counts > 0] / total
        return float(torch.exp(-(p * p.log()).sum()))

    def reset(self) -> None:
        """Start a new epoch."""
        self.counts.zero_()
