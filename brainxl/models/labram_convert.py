"""Convert between the official LaBraM checkpoint layout and brainxl's LaBraM encoder.

The official code (``modeling_pretrain.py`` / ``modeling_finetune.py``) stores, under a
prefix (``student.`` in the released masked-modeling checkpoints, none in fine-tuned
ones; the file may wrap it as ``{"model": state_dict}``):

- ``cls_token`` / ``mask_token`` (1, 1, D), ``time_embed`` (1, 16, D);
- ``pos_embed`` (1, 129, D): row 0 is the cls position, row ``j + 1`` the channel
  ``OFFICIAL_CHANNELS[j]`` (the official list names 136 channels, but only the first 128
  have a row);
- ``patch_embed.conv{1,2,3}`` / ``patch_embed.norm{1,2,3}`` (the temporal conv);
- per block ``norm1``, ``attn.qkv.weight`` (no bias tensor; optional ``attn.q_bias`` and
  ``attn.v_bias``, the key bias being zero), ``attn.q_norm`` / ``attn.k_norm``,
  ``attn.proj``, ``gamma_1`` / ``gamma_2`` (layer-scale), ``norm2``, ``mlp.fc1/fc2``;
- ``norm`` (per-token final norm; fine-tuned models with mean pooling have ``fc_norm``
  applied after pooling instead), and heads (``lm_head``, ``head``, ``projection_head``).

Differences the conversion takes care of:

- Token layout: the official temporal conv flattens its (filters, time) output time-major
  (``index = t * filters + f``), brainxl filter-major (``f * out_len + t``). Converting
  permutes the model width consistently in every tensor that reads or writes the
  residual stream (embeddings, norms, layer-scales, q/k/v input columns, proj and fc2
  output rows, fc1 input columns), so the converted encoder computes the official
  function, its features permuted by :func:`token_permutation`.
- Spatial rows: brainxl indexes its spatial table by the channel vocabulary
  (:mod:`brainxl.channels`, ``row = vocabulary index + 1``). Official rows whose names
  map onto the vocabulary are copied there. Old 10-20 names (T3/T4/T5/T6, A1/A2) map
  onto the same vocabulary entry as their 10-10 names (T7/T8/P7/P8, M1/M2); the row of
  the 10-10 name is used and the alias row is reported. Official names without a
  vocabulary entry (CB1/CB2, CFC*, CCP7/8, T1/T2) are reported, as are the brainxl rows
  that keep the base encoder's values.
- ``q_bias``/``v_bias`` become ``attn.qkv.bias`` (with zeros for the keys); an encoder
  without q/k/v bias accepts them only when they are zero.
- The cls token's position: brainxl adds spatial row 0 to it, as the official
  fine-tuning model does (the official pretraining student adds the first channel's
  row, which this conversion does not reproduce).

Mismatched keys or shapes raise a :class:`ValueError` naming them; nothing is skipped
without being listed in the :class:`ConversionReport`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from brainxl.channels import canonical_name, vocabulary
from brainxl.models.labram import SPATIAL_ROWS, LaBraMEncoder

#: Channel names of the official ``standard_1020`` list, in position-table order
#: (row ``j + 1``). Only the first :data:`OFFICIAL_POS_ROWS` ``- 1`` have a row.
# fmt: off
OFFICIAL_CHANNELS: tuple[str, ...] = (
    "FP1", "FPZ", "FP2", "AF9", "AF7", "AF5", "AF3", "AF1", "AFZ", "AF2", "AF4", "AF6", "AF8",
    "AF10", "F9", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8", "F10", "FT9", "FT7",
    "FC5", "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "FT10", "T9", "T7", "C5", "C3",
    "C1", "CZ", "C2", "C4", "C6", "T8", "T10", "TP9", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2",
    "CP4", "CP6", "TP8", "TP10", "P9", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8",
    "P10", "PO9", "PO7", "PO5", "PO3", "PO1", "POZ", "PO2", "PO4", "PO6", "PO8", "PO10", "O1",
    "OZ", "O2", "O9", "CB1", "CB2", "IZ", "O10", "T3", "T5", "T4", "T6", "M1", "M2", "A1", "A2",
    "CFC1", "CFC2", "CFC3", "CFC4", "CFC5", "CFC6", "CFC7", "CFC8", "CCP1", "CCP2", "CCP3",
    "CCP4", "CCP5", "CCP6", "CCP7", "CCP8", "T1", "T2", "FTT9h", "TTP7h", "TPP9h", "FTT10h",
    "TPP8h", "TPP10h", "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
    "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4", "F4-C4", "C4-P4", "P4-O2",
)
# fmt: on
#: Rows of the official position table (cls + 128 channels).
OFFICIAL_POS_ROWS = 129
#: Rows of the official temporal embedding (16 one-second patches).
OFFICIAL_TIME_ROWS = 16
#: Prefixes tried, in order, when detecting where the encoder sits in a file.
OFFICIAL_PREFIXES = ("student.", "module.student.", "module.", "")
_HEADS = ("lm_head.", "head.", "projection_head.")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass
class ConversionReport:
    """What a conversion mapped, and what it could not.

    Attributes
    ----------
    prefix : str
        Prefix of the encoder in the official file (``"student."`` or ``""``).
    rows_loaded : dict of str to str
        Official channel name -> vocabulary name whose spatial row it set.
    rows_alias : dict of str to str
        Official rows not used because their vocabulary entry took the row of its own
        name (``T3 -> T7``).
    rows_unmapped : list of str
        Official channel rows with no vocabulary entry (not loaded).
    rows_kept : int
        brainxl spatial rows (channels) not covered by the file, kept from the base
        encoder.
    notes : list of str
        Other tensors not used or converted approximately, with the reason.
    """

    prefix: str = ""
    rows_loaded: dict[str, str] = field(default_factory=dict)
    rows_alias: dict[str, str] = field(default_factory=dict)
    rows_unmapped: list[str] = field(default_factory=list)
    rows_kept: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{len(self.rows_loaded)} channel rows loaded"]
        if self.rows_alias:
            shown = ", ".join(f"{a}->{b}" for a, b in self.rows_alias.items())
            parts.append(f"alias rows not used (the 10-10 name's row was): {shown}")
        if self.rows_unmapped:
            parts.append(f"rows without a vocabulary entry: {', '.join(self.rows_unmapped)}")
        parts.append(f"{self.rows_kept} vocabulary rows kept from the base encoder")
        return "; ".join(parts + self.notes)


def token_permutation(filters: int, out_len: int) -> Tensor:
    """Index ``perm`` with ``brainxl_token = official_token[..., perm]``.

    brainxl's feature ``f * out_len + t`` is the official feature ``t * filters + f``.
    """
    f = torch.arange(filters)[:, None]
    t = torch.arange(out_len)[None, :]
    return (t * filters + f).reshape(-1)


def official_row_map() -> tuple[dict[int, int], dict[str, str], dict[str, str], list[str]]:
    """Official position rows -> brainxl spatial rows.

    Returns
    -------
    rows : dict of int to int
        Official row (1..128) -> brainxl row (vocabulary index + 1), one per brainxl row.
    loaded, alias : dict of str to str
        Official name -> vocabulary name, for used and for alias (unused) rows.
    unmapped : list of str
        Official names with a row but no vocabulary entry.
    """
    vocab = {n: i for i, n in enumerate(vocabulary())}
    canon = {j: canonical_name(n) for j, n in enumerate(OFFICIAL_CHANNELS[: OFFICIAL_POS_ROWS - 1])}
    own_name = {c for j, c in canon.items() if c and c.upper() == OFFICIAL_CHANNELS[j].upper()}
    rows: dict[int, int] = {}
    loaded: dict[str, str] = {}
    alias: dict[str, str] = {}
    unmapped: list[str] = []
    for j, c in canon.items():
        name = OFFICIAL_CHANNELS[j]
        if c is None:
            unmapped.append(name)
        elif c in own_name and c.upper() != name.upper():
            alias[name] = c
        else:
            rows[j + 1] = vocab[c] + 1
            loaded[name] = c
    return rows, loaded, alias, unmapped


def _find_prefix(state: dict[str, Tensor]) -> str:
    for p in OFFICIAL_PREFIXES:
        if f"{p}cls_token" in state and f"{p}pos_embed" in state:
            return p
    raise ValueError(
        "not an official LaBraM checkpoint: no cls_token/pos_embed under any of the prefixes "
        f"{[p or '(none)' for p in OFFICIAL_PREFIXES]}; found keys like {sorted(state)[:5]}"
    )


def encoder_kwargs_from_official(state: dict[str, Tensor]) -> dict[str, Any]:
    """:class:`LaBraMEncoder` arguments that fit an official state dict."""
    p = _find_prefix(state)
    dim = state[f"{p}cls_token"].shape[-1]
    depth = 1 + max(
        int(m.group(1)) for k in state if (m := _BLOCK.match(k[len(p) :])) and k.startswith(p)
    )
    filters = state[f"{p}patch_embed.conv1.weight"].shape[0]
    head_dim = state[f"{p}blocks.0.attn.q_norm.weight"].shape[0]
    q_bias = state.get(f"{p}blocks.0.attn.q_bias")
    return {
        "depth": depth,
        "filters": filters,
        "heads": dim // head_dim,
        "max_patches": state[f"{p}time_embed"].shape[1],
        "qkv_bias": q_bias is not None,
        "use_mask_token": f"{p}mask_token" in state,
        "_dim": dim,
    }


def from_official(
    state: dict[str, Tensor], base: LaBraMEncoder
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert an official LaBraM state dict onto ``base``'s layout.

    Parameters
    ----------
    state : dict
        Official state dict (``checkpoint["model"]``), any prefix of
        :data:`OFFICIAL_PREFIXES`.
    base : LaBraMEncoder
        Target architecture; supplies the values of spatial rows the file does not have
        (and of ``time_embed`` rows past 16). Not modified.

    Returns
    -------
    state_dict : dict
        A complete ``base.state_dict()``-shaped dict.
    report : ConversionReport

    Raises
    ------
    ValueError
        Naming unknown, missing or shape-mismatched keys.
    """
    p = _find_prefix(state)
    src = {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}
    report = ConversionReport(prefix=p)
    others = sorted(k for k in state if not k.startswith(p))
    if others:
        report.notes.append(f"not encoder tensors (outside {p!r}): {_short(others)}")
    own = {k: v.detach().clone() for k, v in base.state_dict().items()}
    conv = base.patch_embed
    if not hasattr(conv, "out_len"):
        raise ValueError("the base encoder embeds code vectors (in_dim); use a raw-EEG encoder")
    filters = conv.conv1.out_channels
    width = src["cls_token"].shape[-1]
    conv1 = src.get("patch_embed.conv1.weight")
    file_filters = None if conv1 is None else conv1.shape[0]
    if width != base.dim or file_filters not in (None, filters):
        raise ValueError(
            f"official LaBraM checkpoint has width {width} ({file_filters} conv filters) but the "
            f"encoder has width {base.dim} ({filters} filters); build the encoder with "
            "filters = width / 25 (convert_official_checkpoint reads it from the file)"
        )
    perm = token_permutation(filters, conv.out_len)
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    errors: list[str] = []

    def take(src_key: str, dst_key: str, fn=lambda t: t) -> None:
        if src_key not in src:
            errors.append(f"missing {p}{src_key}")
            return
        if dst_key not in own:
            errors.append(f"{p}{src_key} has no counterpart {dst_key} in the brainxl encoder")
            used.add(src_key)
            return
        t = fn(src[src_key].detach().float())
        if t.shape != own[dst_key].shape:
            errors.append(
                f"{p}{src_key} -> {dst_key}: file gives {tuple(t.shape)}, encoder has "
                f"{tuple(own[dst_key].shape)}"
            )
        else:
            out[dst_key] = t.to(own[dst_key].dtype)
        used.add(src_key)

    def vec(t: Tensor) -> Tensor:  # residual-stream vector (..., D)
        return t[..., perm]

    take("cls_token", "cls_token", vec)
    if "mask_token" in src:
        if "mask_token" in own:
            take("mask_token", "mask_token", vec)
        else:
            used.add("mask_token")
            report.notes.append("mask_token not used (the target encoder has none)")
    # spatial rows
    if "pos_embed" not in src:
        errors.append(f"missing {p}pos_embed")
    else:
        pos = src["pos_embed"].detach().float().reshape(-1, src["pos_embed"].shape[-1])
        used.add("pos_embed")
        if pos.shape[0] != OFFICIAL_POS_ROWS:
            errors.append(f"{p}pos_embed has {pos.shape[0]} rows, not {OFFICIAL_POS_ROWS}")
        elif pos.shape[1] != own["spatial_embed"].shape[1]:
            errors.append(
                f"{p}pos_embed width {pos.shape[1]} vs encoder {own['spatial_embed'].shape[1]}"
            )
        else:
            rows, loaded, alias, unmapped = official_row_map()
            table = own["spatial_embed"].clone()
            table[0] = vec(pos[0])
            for j, r in rows.items():
                table[r] = vec(pos[j])
            out["spatial_embed"] = table
            report.rows_loaded, report.rows_alias, report.rows_unmapped = loaded, alias, unmapped
            report.rows_kept = min(len(vocabulary()), SPATIAL_ROWS - 1) - len(rows)
    # time rows
    if "time_embed" not in src:
        errors.append(f"missing {p}time_embed")
    else:
        te = vec(src["time_embed"].detach().float().reshape(-1, src["time_embed"].shape[-1]))
        used.add("time_embed")
        table = own["time_embed"].clone()
        n = min(te.shape[0], table.shape[0])
        if te.shape[1] != table.shape[1]:
            errors.append(f"{p}time_embed width {te.shape[1]} vs encoder width {table.shape[1]}")
        else:
            table[:n] = te[:n]
            out["time_embed"] = table
            if table.shape[0] > n:
                report.notes.append(f"time_embed rows {n}..{table.shape[0] - 1} kept from the base")
            if te.shape[0] > n:
                report.notes.append(f"time_embed rows {n}..{te.shape[0] - 1} of the file not used")
    for i in (1, 2, 3):
        for kind in ("conv", "norm"):
            for w in ("weight", "bias"):
                take(f"patch_embed.{kind}{i}.{w}", f"patch_embed.{kind}{i}.{w}")
    for i in range(base.depth):
        b = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            take(b + f"{n}.weight", b + f"{n}.weight", vec)
            take(b + f"{n}.bias", b + f"{n}.bias", vec)
        take(b + "attn.qkv.weight", b + "attn.qkv.weight", lambda t: t[:, perm])
        _qkv_bias(src, b, p, own, out, used, errors)
        for n in ("q_norm", "k_norm"):
            take(b + f"attn.{n}.weight", b + f"attn.{n}.weight")
            take(b + f"attn.{n}.bias", b + f"attn.{n}.bias")
        take(b + "attn.proj.weight", b + "attn.proj.weight", lambda t: t[perm])
        take(b + "attn.proj.bias", b + "attn.proj.bias", vec)
        take(b + "gamma_1", b + "ls1.gamma", vec)
        take(b + "gamma_2", b + "ls2.gamma", vec)
        take(b + "mlp.fc1.weight", b + "mlp.fc1.weight", lambda t: t[:, perm])
        take(b + "mlp.fc1.bias", b + "mlp.fc1.bias")
        take(b + "mlp.fc2.weight", b + "mlp.fc2.weight", lambda t: t[perm])
        take(b + "mlp.fc2.bias", b + "mlp.fc2.bias", vec)
    if "norm.weight" in src:
        take("norm.weight", "norm.weight", vec)
        take("norm.bias", "norm.bias", vec)
    elif "fc_norm.weight" in src:
        take("fc_norm.weight", "norm.weight", vec)
        take("fc_norm.bias", "norm.bias", vec)
        report.notes.append(
            "fc_norm (official: applied after mean pooling) loaded as the per-token final norm"
        )
    else:
        errors.append(f"missing {p}norm.weight (or {p}fc_norm.weight)")
    heads = sorted(k for k in src if k.startswith(_HEADS))
    used.update(heads)
    if heads:
        report.notes.append(f"heads not used: {_short([p + k for k in heads])}")
    unknown = sorted(set(src) - used)
    if unknown:
        errors.append(f"unknown official keys: {_short([p + k for k in unknown])}")
    missing = sorted(set(own) - set(out))
    if missing and not errors:
        errors.append(f"brainxl encoder keys not produced: {_short(missing)}")
    if errors:
        raise ValueError(
            "official LaBraM checkpoint does not convert onto this encoder "
            f"(depth {base.depth}, width {base.dim}): " + _short(errors, sep="; ")
        )
    return out, report


def _qkv_bias(src, b, p, own, out, used, errors) -> None:
    qk, vk = b + "attn.q_bias", b + "attn.v_bias"
    has = qk in src or vk in src
    if has and not (qk in src and vk in src):
        errors.append(f"{p}{qk} and {p}{vk} must come together")
        return
    bias_key = b + "attn.qkv.bias"
    if not has:
        if bias_key in own:
            errors.append(f"{bias_key}: the encoder has a q/k/v bias but the file has none")
        return
    used.update((qk, vk))
    q, v = src[qk].detach().float(), src[vk].detach().float()
    if bias_key in own:
        out[bias_key] = torch.cat([q, torch.zeros_like(q), v]).to(own[bias_key].dtype)
    elif q.abs().max() > 0 or v.abs().max() > 0:
        errors.append(
            f"{p}{qk}/{p}{vk} are non-zero but the encoder has no q/k/v bias; "
            "build it with qkv_bias=True"
        )


def to_official(encoder: LaBraMEncoder, prefix: str = "student.") -> dict[str, Tensor]:
    """Write ``encoder`` in the official layout (the inverse of :func:`from_official`).

    Official rows whose channel has no vocabulary entry are zeros; alias rows (T3...)
    get the row of their vocabulary entry (T7...). ``q/k/v`` biases become
    ``q_bias``/``v_bias`` (their key part must be zero).
    """
    sd = {k: v.detach().float() for k, v in encoder.state_dict().items()}
    conv = encoder.patch_embed
    perm = token_permutation(conv.conv1.out_channels, conv.out_len)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())

    def vec(t: Tensor) -> Tensor:
        return t[..., inv]

    out: dict[str, Tensor] = {}
    out["cls_token"] = vec(sd["cls_token"])
    if "mask_token" in sd:
        out["mask_token"] = vec(sd["mask_token"])
    dim = sd["cls_token"].shape[-1]
    pos = torch.zeros(OFFICIAL_POS_ROWS, dim)
    pos[0] = vec(sd["spatial_embed"][0])
    vocab = {n: i for i, n in enumerate(vocabulary())}
    for j, name in enumerate(OFFICIAL_CHANNELS[: OFFICIAL_POS_ROWS - 1]):
        c = canonical_name(name)
        if c is not None:
            pos[j + 1] = vec(sd["spatial_embed"][vocab[c] + 1])
    out["pos_embed"] = pos[None]
    te = torch.zeros(OFFICIAL_TIME_ROWS, dim)
    n = min(OFFICIAL_TIME_ROWS, sd["time_embed"].shape[0])
    te[:n] = vec(sd["time_embed"][:n])
    out["time_embed"] = te[None]
    for k, v in sd.items():
        if k.startswith("patch_embed."):
            out[k] = v
    for i in range(encoder.depth):
        b = f"blocks.{i}."
        for n in ("norm1", "norm2"):
            out[b + f"{n}.weight"] = vec(sd[b + f"{n}.weight"])
            out[b + f"{n}.bias"] = vec(sd[b + f"{n}.bias"])
        out[b + "attn.qkv.weight"] = sd[b + "attn.qkv.weight"][:, inv]
        if b + "attn.qkv.bias" in sd:
            q, k, v = sd[b + "attn.qkv.bias"].chunk(3)
            if k.abs().max() > 0:
                raise ValueError(f"{b}attn.qkv.bias has a non-zero key part; LaBraM has none")
            out[b + "attn.q_bias"], out[b + "attn.v_bias"] = q, v
        for n in ("q_norm", "k_norm"):
            out[b + f"attn.{n}.weight"] = sd[b + f"attn.{n}.weight"]
            out[b + f"attn.{n}.bias"] = sd[b + f"attn.{n}.bias"]
        out[b + "attn.proj.weight"] = sd[b + "attn.proj.weight"][inv]
        out[b + "attn.proj.bias"] = vec(sd[b + "attn.proj.bias"])
        out[b + "gamma_1"] = vec(sd[b + "ls1.gamma"])
        out[b + "gamma_2"] = vec(sd[b + "ls2.gamma"])
        out[b + "mlp.fc1.weight"] = sd[b + "mlp.fc1.weight"][:, inv]
        out[b + "mlp.fc1.bias"] = sd[b + "mlp.fc1.bias"]
        out[b + "mlp.fc2.weight"] = sd[b + "mlp.fc2.weight"][inv]
        out[b + "mlp.fc2.bias"] = vec(sd[b + "mlp.fc2.bias"])
    out["norm.weight"] = vec(sd["norm.weight"])
    out["norm.bias"] = vec(sd["norm.bias"])
    return {prefix + k: v for k, v in out.items()}


def convert_official_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, max_patches: int | None = None
) -> ConversionReport:
    """Convert an official LaBraM ``.pth`` file into a brainxl encoder weights file.

    The architecture (depth, width, heads, filters, q/k/v bias, mask token) is read from
    the file; the result is written with :meth:`LaBraMEncoder.save_weights` and loads
    with ``model.pretrained=DST`` (see :mod:`brainxl.models.pretrained`). A small
    function for a ``brainxl convert-labram SRC DST`` command.

    Parameters
    ----------
    src : path
        Official checkpoint (``{"model": state_dict}`` or a bare state dict).
    dst : path
        Output ``.pt`` file.
    max_patches : int, optional
        Temporal rows of the brainxl encoder (default: the file's, 16).

    Returns
    -------
    ConversionReport
    """
    path = Path(src)
    if not path.is_file():
        raise ValueError(f"official LaBraM checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"cannot read {path}: {err}") from err
    state = payload
    if isinstance(payload, dict):
        for key in ("model", "state_dict", "module"):
            if isinstance(payload.get(key), dict):
                state = payload[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict")
    kw = encoder_kwargs_from_official(state)
    dim = kw.pop("_dim")
    if max_patches:
        kw["max_patches"] = max_patches
    torch.manual_seed(0)
    base = LaBraMEncoder(drop_path=0.0, **kw)
    if base.dim != dim:
        raise ValueError(
            f"{path}: width {dim} is not filters x 25 = {base.dim}; brainxl's temporal conv "
            "needs 200-sample patches"
        )
    converted, report = from_official(state, base)
    base.load_state_dict(converted)
    base.save_weights(dst, meta={"converted_from": str(path), "report": str(report), **kw})
    return report


def _short(keys: list[str], n: int = 8, sep: str = ", ") -> str:
    return sep.join(keys[:n]) + (f" ... (+{len(keys) - n} more)" if len(keys) > n else "")
