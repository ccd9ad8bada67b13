"""Initialise a model's LaBraM encoder from a brainxl pretraining checkpoint.

``model.pretrained=PATH`` in a run config calls :func:`apply_pretrained` on the freshly
built model (before the optimizer and any checkpoint resume). Accepted files (all read
with ``torch.load(weights_only=True)``):

- a run folder: its ``final_model.pt``;
- ``final_model.pt`` / ``best_model.pt`` of a run: the consolidated fp32 state dict of the
  whole model. For the ``labram`` masked-modeling model the encoder is under
  ``encoder.`` (next to ``lm_head.``); for ``labram-tokenizer`` its encoder is under
  ``encoder.`` (next to ``decoder.``, ``quantizer.``...); a ``neurobolt`` run also works
  (its temporal-spatial branch is ``encoder.``);
- a file written by :meth:`brainxl.models.blocks.WeightsMixin.save_weights`
  (``{"format": "brainxl-weights-v1", "state_dict": ...}``) of any of these models;
- a bare :class:`~brainxl.models.labram.LaBraMEncoder` state dict (keys ``blocks.0...``).

Official LaBraM checkpoints are converted first with
:func:`brainxl.models.labram_convert.convert_official_checkpoint`.

Every tensor of the target encoder must come from the file with the same shape, and
every encoder tensor of the file must be used; the one exception is the masked-modeling
``mask_token``, which exists only for pretraining (the report lists it). Anything else
raises a :class:`ValueError` naming the keys, before the model is changed.

Only models with a LaBraM encoder at ``model.encoder`` can be initialised (NeuroBOLT).
SAMBA has none: its electrophysiology path works on source-localised parcel time series
(an HRF, a DWT per TR chunk, graph attention over parcels), not on (channel, 1 s patch)
tokens, so no pretrained encoder tensor has a counterpart there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from brainxl.models.labram import LaBraMEncoder

#: Prefix of the encoder inside brainxl's MEM model, tokenizer and NeuroBOLT.
ENCODER_PREFIX = "encoder."
#: Encoder tensors that only pretraining uses; dropped (and reported) when the target
#: encoder has none.
PRETRAINING_ONLY = {"mask_token": "masked-modeling token, used only in pretraining"}
_SHOWN = 8


@dataclass
class PretrainedReport:
    """What :func:`apply_pretrained` loaded.

    Attributes
    ----------
    path : str
        The weights file read.
    source : str
        Which part of the file held the encoder (``"encoder.* of the file"`` or
        ``"the whole file (a bare encoder)"``).
    loaded : list of str
        Encoder keys set from the file (all of the target encoder's keys).
    ignored : dict of str to str
        File keys of the encoder not used, with the reason (only ``mask_token``).
    other : int
        Tensors of the file outside the encoder (heads, decoder...), not used.
    """

    path: str
    source: str
    loaded: list[str] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    other: int = 0

    def __str__(self) -> str:
        parts = [f"loaded {len(self.loaded)} encoder tensors from {self.source} of {self.path}"]
        parts += [f"not used: {k} ({why})" for k, why in self.ignored.items()]
        if self.other:
            parts.append(f"{self.other} tensors outside the encoder (heads) not used")
        return "; ".join(parts)


def resolve_weights_path(path: str | os.PathLike) -> Path:
    """The weights file of ``path``: itself, or ``final_model.pt`` of a run folder.

    Raises
    ------
    ValueError
        If neither exists.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "final_model.pt").is_file():
            return p / "final_model.pt"
        raise ValueError(
            f"model.pretrained: {p} is a folder without final_model.pt; point it at a "
            "finished pretraining run folder or a weights file"
        )
    if not p.is_file():
        raise ValueError(f"model.pretrained: {p} does not exist; check the path")
    return p


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from a brainxl weights file, run folder or bare state dict.

    Raises
    ------
    ValueError
        If the file cannot be read or holds no state dict of tensors.
    """
    p = resolve_weights_path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"model.pretrained: cannot read {p}: {err}") from err
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"model.pretrained: {p} holds no state dict")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(
            f"model.pretrained: {p} is not a state dict of tensors ({_names(bad)} are not); "
            "use final_model.pt of a run or a file written by save_weights()"
        )
    return state


def encoder_state(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str, int]:
    """The encoder part of a checkpoint's state dict.

    Returns
    -------
    encoder : dict
        Keys relative to the encoder (``blocks.0.attn.qkv.weight``...).
    source : str
        Where they were found.
    other : int
        Number of tensors outside the encoder.
    """
    sub = {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if sub:
        return sub, "encoder.* of the file", len(state) - len(sub)
    return dict(state), "the whole file (a bare encoder)", 0


def load_encoder(
    encoder: LaBraMEncoder, state: dict[str, Tensor], path: str = "<state dict>"
) -> PretrainedReport:
    """Copy ``state`` (a checkpoint's state dict) into ``encoder``, strictly.

    Parameters
    ----------
    encoder : LaBraMEncoder
        Target (e.g. ``neurobolt.encoder``); its values are replaced in place.
    state : dict
        A whole checkpoint (``encoder.*`` keys) or a bare encoder state dict.
    path : str
        Named in messages.

    Returns
    -------
    PretrainedReport

    Raises
    ------
    ValueError
        Naming every missing, unexpected or shape-mismatched key; nothing is loaded then.
    """
    enc, source, other = encoder_state(state)
    own = encoder.state_dict()
    ignored = {k: PRETRAINING_ONLY[k] for k in enc if k in PRETRAINING_ONLY and k not in own}
    missing = sorted(set(own) - set(enc))
    unexpected = sorted(set(enc) - set(own) - set(ignored))
    mismatched = [
        f"{k}: file {tuple(enc[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(enc))
        if enc[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} encoder key(s) missing from the file: {_names(missing)}")
    if unexpected:
        problems.append(
            f"{len(unexpected)} file key(s) the encoder does not have: {_names(unexpected)}"
        )
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_names(mismatched)}")
    if problems:
        raise ValueError(
            f"model.pretrained: {path} ({source}) does not fit the model's LaBraM encoder "
            f"(depth {encoder.depth}, width {encoder.dim}, {encoder.max_patches} patches): "
            + "; ".join(problems)
            + ". Use the flavor (model.flavor) and window the encoder was pretrained with"
            + (
                " and the same model.overrides.amplitude_embed."
                if any(k.startswith("amplitude_embed.") for k in missing + unexpected)
                else "."
            )
        )
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(enc[k].to(t.dtype))
    return PretrainedReport(str(path), source, sorted(own), ignored, other)


def find_encoder(model: nn.Module, key: str = "model.pretrained") -> LaBraMEncoder:
    """The LaBraM encoder a pretrained checkpoint initialises (``model.encoder``).

    Raises
    ------
    ValueError
        For models without one (SAMBA), saying why; the message starts with ``key``, the
        config key that needs the encoder.
    """
    enc = getattr(model, "encoder", None)
    if isinstance(model, LaBraMEncoder):
        return model
    if isinstance(enc, LaBraMEncoder):
        return enc
    name = type(model).__name__
    why = (
        " SAMBA works on source-localised parcel time series (HRF, wavelets, graph "
        "attention over parcels), not on (channel, 1 s patch) tokens, so no pretrained "
        "encoder tensor has a counterpart in it."
        if "Samba" in name
        else ""
    )
    raise ValueError(
        f"{key}: {name} has no LaBraM encoder (model.encoder).{why} Remove {key}, or use neurobolt."
    )


def apply_pretrained(model: nn.Module, path: str | os.PathLike) -> PretrainedReport:
    """Initialise ``model``'s LaBraM encoder from a pretraining checkpoint.

    Parameters
    ----------
    model : nn.Module
        A freshly built model with a LaBraM encoder (NeuroBOLT), or an encoder.
    path : str or PathLike
        Run folder or weights file (see the module docstring).

    Returns
    -------
    PretrainedReport
    """
    encoder = find_encoder(model)
    p = resolve_weights_path(path)
    return load_encoder(encoder, read_state_dict(p), str(p))


def pretraining_channel_norm(path: str | os.PathLike) -> str | None:
    """``data.channel_norm`` of the ``brainxl pretrain`` run that wrote ``path``.

    Read from the ``config.yaml`` beside the weights file; runs from before the option
    read microvolts (``"none"``).

    Returns
    -------
    channel_norm : str or None
        None when ``path`` is not in a pretraining run folder (a weights file elsewhere, a
        converted official checkpoint, a NeuroBOLT run): the input scale is not known.
    """
    from omegaconf import OmegaConf

    config = resolve_weights_path(path).parent / "config.yaml"
    if not config.is_file():
        return None
    node = OmegaConf.to_container(OmegaConf.load(config))
    if not isinstance(node, dict) or "pretrain" not in node:
        return None
    return str((node.get("data") or {}).get("channel_norm", "none"))


def input_scale_warning(channel_norm: str | None, ephys_norm: str) -> str:
    """A warning when a fine-tune reads another input scale than its encoder's pretraining.

    Parameters
    ----------
    channel_norm : str or None
        The pretraining run's ``data.channel_norm`` (:func:`pretraining_channel_norm`).
    ephys_norm : str
        The fine-tune's ``data.reader.ephys_norm``.

    Returns
    -------
    str
        ``""`` when the scales agree (microvolts and microvolts, z-scores and z-scores) or
        the pretraining scale is not known.
    """
    if channel_norm is None or (channel_norm == "none") == (ephys_norm == "none"):
        return ""
    if channel_norm == "none":
        return (
            "the encoder was pretrained on microvolts (data.channel_norm=none) and this run "
            f"reads z-scored channels (data.reader.ephys_norm={ephys_norm}); set "
            "data.reader.ephys_norm=none to read what it learned from"
        )
    return (
        f"the encoder was pretrained on z-scored channels (data.channel_norm={channel_norm})"
        " and this run reads microvolts (data.reader.ephys_norm=none); set "
        "data.reader.ephys_norm=subject to read what it learned from"
    )


def _names(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more
