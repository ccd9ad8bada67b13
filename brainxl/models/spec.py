"""What a model family declares so the training loop needs to name no model.

A :class:`ModelSpec` (torchtitan's ``ModelSpec`` in spirit) carries a family's builder and
flavors table, how the data's shapes become builder arguments (:attr:`ModelSpec.data_args`),
how a reader batch becomes the model's inputs and target (:attr:`ModelSpec.batch`), and
optional hooks: preparation from the fold's training subjects (SAMBA's FC graphs), its
own loss, and diagnostics for the report (learned HRFs, attention).

The data side speaks ONE vocabulary, :class:`DataShapes`: one name per quantity.

A family is registered with :func:`brainxl.models.registry.register_model` from its own
module, or given to ``brainxl train`` as ``model.name=package.module:SPEC`` (a
``ModelSpec`` object importable where the ranks run), or installed by a package under the
``brainxl.models`` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

#: Directions of a translation task: electrophysiology -> BOLD, or BOLD -> electrophysiology.
DIRECTIONS = ("eeg2fmri", "fmri2eeg")


@dataclass(frozen=True)
class DataShapes:
    """The shapes of the data a model is built for: one name per quantity.

    Attributes
    ----------
    ch_names : tuple of str
        Rows of the electrophysiology the reader yields: sensor channels, or source
        parcels when ``modality == "parcels"``.
    roi_names : tuple of str
        Rows of the fMRI BOLD (ROIs or parcels).
    sfreq : float
        Electrophysiology sampling rate (Hz).
    window_s : float
        Electrophysiology window per sample (s).
    n_frames : int
        BOLD frames per sample (the TRs ending a window, ``data.reader.n_targets``).
    tr : float or None
        Seconds per BOLD frame.
    modality : {"sensors", "parcels"}
        What the electrophysiology rows are.
    """

    ch_names: tuple[str, ...]
    roi_names: tuple[str, ...]
    sfreq: float
    window_s: float
    n_frames: int = 1
    tr: float | None = None
    modality: str = "sensors"

    @property
    def n_chans(self) -> int:
        """Electrophysiology rows (channels or parcels)."""
        return len(self.ch_names)

    @property
    def n_rois(self) -> int:
        """BOLD rows."""
        return len(self.roi_names)

    @property
    def n_times(self) -> int:
        """Electrophysiology samples per window."""
        return int(round(self.window_s * self.sfreq))

    @property
    def source_key(self) -> str:
        """Reader batch key of the electrophysiology (``"ephys"`` or ``"parcels"``)."""
        return "parcels" if self.modality == "parcels" else "ephys"

    def to_json(self) -> dict[str, Any]:
        """JSON-able dict (:meth:`from_json` reads it back)."""
        d = asdict(self)
        d["ch_names"], d["roi_names"] = list(self.ch_names), list(self.roi_names)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DataShapes:
        """Inverse of :meth:`to_json`."""
        d = dict(d)
        d["ch_names"], d["roi_names"] = tuple(d["ch_names"]), tuple(d["roi_names"])
        return cls(**d)


@dataclass
class BatchIO:
    """Turns a reader batch into model keyword inputs and the target tensor.

    Attributes
    ----------
    direction : {"eeg2fmri", "fmri2eeg"}
    source_key : str
        Batch key of the electrophysiology (``"ephys"`` or ``"parcels"``).
    input_name : str
        Keyword of the model's forward for its input (declared by the spec).
    ch_idx : Tensor or None, shape (C,)
        Vocabulary rows of the channels, passed as ``ch_idx`` when not None.
    sequence_target : bool
        BOLD is ``(B, R, n_frames)`` (a sequence per window) instead of ``(B, R)``.
    """

    direction: str
    source_key: str = "ephys"
    input_name: str = "x"
    ch_idx: torch.Tensor | None = None
    sequence_target: bool = False
    #: applied to every target (e.g. SAMBA fmri2eeg's band envelopes), or None
    target_transform: Any = None

    @property
    def task(self) -> str:
        """The direction (name kept for callers of the former ``TaskAdapter``)."""
        return self.direction

    def _bold(self, batch: dict[str, Any]) -> torch.Tensor:
        bold = batch["bold"].float()
        if self.sequence_target and bold.ndim == 2:
            bold = bold.unsqueeze(-1)
        if not self.sequence_target and bold.ndim == 3:
            if bold.shape[-1] != 1:
                raise ValueError(
                    f"model predicts one BOLD frame but data.reader.n_targets={bold.shape[-1]}; "
                    "set data.reader.n_targets=1"
                )
            bold = bold[..., 0]
        return bold

    def inputs(self, batch: dict[str, Any], dtype: torch.dtype, device: Any) -> dict[str, Any]:
        """Keyword arguments of ``model.forward`` for ``batch``."""
        if self.source_key not in batch:
            raise ValueError(
                f"batch has no {self.source_key!r} (keys: {sorted(batch)}); set "
                "data.reader.modality to a modality the shards hold"
            )
        if self.direction == "fmri2eeg":
            x = self._bold(batch)
        else:
            x = batch[self.source_key].float()
        kw: dict[str, Any] = {self.input_name: x.to(device=device, dtype=dtype)}
        if self.ch_idx is not None:
            kw["ch_idx"] = self.ch_idx.to(device)
        return kw

    def target(self, batch: dict[str, Any], device: Any) -> torch.Tensor:
        """The tensor the output is compared with (float32)."""
        if self.direction == "fmri2eeg":
            y = batch[self.source_key].float()
        else:
            y = self._bold(batch)
        y = y.to(device)
        return y if self.target_transform is None else self.target_transform(y)


def translation_batch(
    direction: str,
    input_name: str = "x",
    channel_index: bool = False,
    sequence_target: bool = False,
) -> Callable[[nn.Module, DataShapes], BatchIO]:
    """A :attr:`ModelSpec.batch` hook for the common translation cases.

    Parameters
    ----------
    direction : {"eeg2fmri", "fmri2eeg"}
    input_name : str
        Keyword of the model's forward for its input.
    channel_index : bool
        Also pass ``ch_idx`` (the channels' rows of the standard vocabulary,
        :func:`brainxl.channels.channel_indices`).
    sequence_target : bool
        BOLD as ``(B, R, n_frames)`` sequences.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")

    def make(model: nn.Module, shapes: DataShapes) -> BatchIO:
        ch_idx = None
        if channel_index:
            from brainxl.channels import channel_indices

            ch_idx = torch.as_tensor(
                channel_indices(list(shapes.ch_names), source="the shard manifest"),
                dtype=torch.long,
            )
        return BatchIO(direction, shapes.source_key, input_name, ch_idx, sequence_target)

    return make


@dataclass
class FoldContext:
    """What a spec's :attr:`ModelSpec.prepare_fold` hook may read of a LOSO fold.

    The runtime (``distrib``) builds it; the hook never sees validation or test subjects.

    Attributes
    ----------
    subjects : tuple of str
        The fold's TRAINING subjects.
    shapes : DataShapes
    timeseries : callable
        ``timeseries(modalities, *, ephys_hz=0.0, max_seconds=0.0) -> {modality: [array
        (n_rows, n_times), ...]}``: the training subjects' whole recordings (one array per
        contiguous stretch), normalised with the fold's statistics; ``modalities`` among
        ``"ephys"``, ``"parcels"``, ``"bold"``; ``ephys_hz`` subsamples the
        electrophysiology, ``max_seconds`` caps the time read per subject (0: no limit).
    on_main : callable
        ``on_main(fn) -> fn()``: runs ``fn`` on rank 0 only and gives its (picklable)
        result to every rank, so shards are read once.
    where : str
        The data's location, for error messages.
    """

    subjects: tuple[str, ...]
    shapes: DataShapes
    timeseries: Callable[..., dict[str, list[Any]]]
    on_main: Callable[[Callable[[], Any]], Any] = field(default=lambda fn: fn())
    where: str = ""


#: ``loss(model, forward, inputs, target) -> (pred, loss, parts)``: ``forward(**kw)`` runs
#: the (possibly DeepSpeed-wrapped, autocast) model; ``model`` is the plain module.
LossHook = Callable[
    [nn.Module, Callable[..., Any], dict[str, Any], torch.Tensor],
    tuple[torch.Tensor, torch.Tensor, dict[str, Any]],
]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model family.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"neurobolt"``, ``"samba-eeg2fmri"``.
    build : callable
        ``build(flavor: str, **overrides) -> nn.Module``.
    flavors : dict of str to dict
        Flavor name -> keyword arguments (scale only). Each must contain
        ``"expected_params"`` (int), the parameter count the table promises.
    example_inputs : callable
        ``example_inputs(model, batch_size) -> dict`` of keyword tensors for ``forward``
        at the flavor's default input shape (used by tests and benchmarks).
    describe_io : callable
        ``describe_io(flavor) -> (input description, output description)`` strings,
        e.g. ``("26 ch x 16.0 s @ 200 Hz", "64 ROIs")``.
    task : str
        ``"eeg2fmri"``, ``"fmri2eeg"`` or ``"pretrain"``.
    data_args : callable, optional
        ``data_args(shapes: DataShapes) -> dict`` of builder keyword arguments taken from
        the data (``n_chans``, ``n_rois``, ``window_s``...). Needed to train the family.
    batch : callable, optional
        ``batch(model, shapes) -> BatchIO`` (see :func:`translation_batch`); may raise a
        ``ValueError`` when the model and the data do not fit together.
    prepare_fold : callable, optional
        ``prepare_fold(model, fold: FoldContext) -> dict | None``, called on every rank
        before training: fit what the model takes from the training subjects (SAMBA's
        functional-connectivity graphs). The returned dict is logged (``split="graph"``).
    loss : callable, optional
        The family's own objective (:data:`LossHook`), used when ``train.loss.name`` asks
        for it (:func:`brainxl.objectives.uses_model_loss`).
    diagnostics : callable, optional
        ``diagnostics(model, inputs: Iterable[dict]) -> dict`` for the report: any of
        ``learned_hrfs`` (ndarray (n_rows, n_lags), unit peak), ``hrf_dt`` (s),
        ``attention`` (ndarray (n_rows, n_scales)); ``inputs`` yields forward keyword
        dicts of one evaluated subject.
    extra : dict
        Family-specific facts (e.g. ``encoder_flavors``).
    """

    name: str
    build: Callable[..., nn.Module]
    flavors: dict[str, dict[str, Any]]
    example_inputs: Callable[[nn.Module, int], dict[str, Any]]
    describe_io: Callable[[str], tuple[str, str]]
    task: str
    data_args: Callable[[DataShapes], dict[str, Any]] | None = None
    batch: Callable[[nn.Module, DataShapes], BatchIO] | None = None
    prepare_fold: Callable[[nn.Module, FoldContext], dict[str, Any] | None] | None = None
    loss: LossHook | None = None
    diagnostics: Callable[[nn.Module, Iterable[dict[str, Any]]], dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trainable(self) -> bool:
        """Whether ``brainxl train`` can train it (a translation task with data hooks)."""
        return self.task in DIRECTIONS and self.data_args is not None and self.batch is not None

    def build_for_data(
        self, flavor: str, shapes: DataShapes, overrides: dict[str, Any] | None = None
    ) -> tuple[nn.Module, BatchIO]:
        """Build the model at ``flavor`` for data of ``shapes``, and its batch adapter.

        ``overrides`` (``model.overrides``) win over the data-derived arguments.
        """
        if not self.trainable:
            raise ValueError(
                f"model {self.name!r} ({self.task}) cannot be trained by `brainxl train`: its "
                "spec declares no data_args/batch for a translation task (eeg2fmri, fmri2eeg)"
            )
        if flavor not in self.flavors:
            raise ValueError(
                f"model {self.name!r} has no flavor {flavor!r}; flavors: {', '.join(self.flavors)}"
            )
        assert self.data_args is not None and self.batch is not None
        kw = {**self.data_args(shapes), **dict(overrides or {})}
        model = self.build(flavor, **kw)
        return model, self.batch(model, shapes)


def forward_inputs(batches: Iterable[dict[str, Any]], io: BatchIO, model: nn.Module) -> Any:
    """Forward keyword dicts of ``batches`` for ``model`` (its dtype and device)."""
    p = next(model.parameters())
    for batch in batches:
        yield io.inputs(batch, p.dtype, p.device)


__all__: Sequence[str] = [
    "DIRECTIONS",
    "BatchIO",
    "DataShapes",
    "FoldContext",
    "LossHook",
    "ModelSpec",
    "forward_inputs",
    "translation_batch",
]
