"""DeepSpeed from our config: process group, ds_config, LR schedule, engine.

ZeRO stage 0 is plain data parallelism; 1/2/3 partition optimizer state, gradients and
parameters. The CPU accelerator (gloo) is used when no GPU is present, NCCL otherwise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from brainxl.distrib.env import DistEnv

from brainxl.heap import keep_freed_memory, return_freed_memory
from brainxl.models.pretrained import ENCODER_PREFIX, find_encoder


def init_distributed(env: DistEnv) -> str:
    """Initialise ``torch.distributed`` through DeepSpeed; returns the backend used.

    End it with :func:`end_distributed`.
    """
    import deepspeed
    import torch.distributed as dist

    # Its functions take ``group=group.WORLD`` as a default argument: imported after the
    # group exists (DeepSpeed's engine imports it), they would keep the group, and its
    # gloo threads, alive past end_distributed into interpreter shutdown.
    import torch.distributed.nn  # noqa: F401

    env.export()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
    return backend


def end_distributed() -> None:
    """Destroy every process group and let their worker threads end, before exit.

    ``deepspeed.comm.destroy_process_group`` destroys torch's groups and drops DeepSpeed's
    own references to them (its world-group clone); the collection frees groups held in
    reference cycles. A gloo group lives (with its threads) until its last reference is
    gone; one still alive at interpreter shutdown can abort the process (``terminate
    called without an active exception``) after the run has finished. No-op when
    ``torch.distributed`` is not initialised.
    """
    import gc

    import torch.distributed as dist

    if not dist.is_initialized():
        return
    import deepspeed.comm as ds_comm

    ds_comm.destroy_process_group()
    gc.collect()


#: Param-group key of :func:`param_groups`: steps the group is held at LR 0.
FROZEN_STEPS = "frozen_steps"


def lr_lambda(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at optimizer step ``step``: linear warm-up, then cosine or constant."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Schedule:
    """Picklable LR lambda (LambdaLR keeps callable objects' ``__dict__`` in its state).

    ``frozen > 0``: LR 0 for the first ``frozen`` steps, then the schedule times a linear
    warm-up of its own over ``warmup`` steps (a group that starts late starts gently).
    """

    def __init__(
        self, warmup: int, total: int, schedule: str, min_ratio: float, frozen: int = 0
    ) -> None:
        self.warmup, self.total, self.schedule, self.min_ratio = warmup, total, schedule, min_ratio
        self.frozen = frozen

    def __call__(self, step: int) -> float:
        if step < self.frozen:
            return 0.0
        factor = lr_lambda(step, self.warmup, self.total, self.schedule, self.min_ratio)
        if self.frozen > 0 and self.warmup > 0:
            factor *= min(1.0, (step - self.frozen + 1) / self.warmup)
        return factor


def check_precision(precision: str) -> None:
    """Fail early for a precision the accelerator cannot run."""
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    if precision == "fp16" and (acc.device_name() == "cpu" or not acc.is_fp16_supported()):
        raise ValueError(
            f"train.precision=fp16 is not supported by the {acc.device_name()} accelerator; "
            "use train.precision=bf16 or fp32"
        )
    if precision == "bf16" and not acc.is_bf16_supported():
        raise ValueError(
            f"train.precision=bf16 is not supported by the {acc.device_name()} accelerator; "
            "use train.precision=fp32"
        )


#: DeepSpeed's default bucket (5e8) and live-parameter (1e9) sizes, in elements: the caps.
MAX_BUCKET, MAX_LIVE = 500_000_000, 1_000_000_000


def zero_buffers(n_params: int, stage: int) -> dict[str, int]:
    """ZeRO communication-buffer sizes (elements) scaled to the model.

    DeepSpeed's defaults are fixed (``reduce_bucket_size`` 5e8, ZeRO-3
    ``stage3_max_live_parameters`` 1e9 elements): for a model of tens of millions of
    parameters those buffers alone hold more than its partitioned states, so ZeRO-3 would
    cost more memory per rank than ZeRO-0. Buckets of a tenth of the model (live
    parameters: a quarter) keep the overlap of communication with compute and stay at
    the defaults for billion-parameter models.
    """
    bucket = int(min(MAX_BUCKET, max(1_000_000, n_params // 10)))
    out = {"reduce_bucket_size": bucket}
    if stage in (1, 2):
        out["allgather_bucket_size"] = bucket
    if stage == 3:
        live = int(min(MAX_LIVE, max(1_000_000, n_params // 4)))
        out |= {
            "stage3_prefetch_bucket_size": bucket,
            "stage3_max_live_parameters": live,
            "stage3_max_reuse_distance": live,
        }
    return out


def ds_config(
    train: Any, world_size: int, *, load_universal: bool = False, n_params: int | None = None
) -> dict[str, Any]:
    """The DeepSpeed config dict for a ``TrainConfig``.

    Parameters
    ----------
    train : TrainConfig
    world_size : int
        Data-parallel size (``train_batch_size = batch_size * grad_accum * world_size``).
    load_universal : bool
        Resume from a universal checkpoint (world size changed).
    n_params : int, optional
        The model's parameter count: ZeRO buffers are sized from it (:func:`zero_buffers`);
        without it DeepSpeed's defaults apply.
    """
    zero: dict[str, Any] = {"stage": train.zero_stage}
    if train.zero_stage > 0 and n_params is not None:
        zero |= zero_buffers(n_params, train.zero_stage)
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum,
        "train_batch_size": train.batch_size * train.grad_accum * world_size,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": train.lr,
                "betas": list(train.betas),
                "eps": train.eps,
                "weight_decay": train.weight_decay,
                # FusedAdam needs CUDA; torch's AdamW runs on every accelerator, fused:
                # its foreach form allocates temporaries the size of the (flat ZeRO)
                # parameters, +2.1 GiB per rank at the peak of a 376M-parameter step.
                "torch_adam": not torch.cuda.is_available(),
                **({} if torch.cuda.is_available() else {"fused": True}),
            },
        },
        "zero_optimization": zero,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    if train.clip > 0:
        cfg["gradient_clipping"] = train.clip
    if train.precision == "bf16":
        # fp32 weights and optimizer, bf16 compute and gradient communication: DeepSpeed's
        # torch.autocast integration (works with every ZeRO stage and with model code that
        # mixes fp32 ops such as STFTs and functional layer norms).
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    elif train.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 16}
    if load_universal:
        cfg["checkpoint"] = {"load_universal": True}
    return cfg


def build_partitioned(
    build: Callable[[], nn.Module], train: Any, world_size: int, seed: int
) -> tuple[nn.Module, int]:
    """Build a model for :func:`create_engine`; with ZeRO-3, inside ``deepspeed.zero.Init``.

    Under ``zero.Init`` each module's parameters are partitioned across the ranks as soon
    as its constructor returns, so no rank ever holds the whole model (without it every
    rank first builds the full fp32 model: 4 GB at ~1B parameters). The values equal
    those of a plain build with the same seed (the models initialise their children
    through :func:`brainxl.models.blocks.gathered_for_init`).

    Parameters
    ----------
    build : callable
        Returns the model; called once on the meta device (to count parameters, which
        size ZeRO's buffers) and once for real after ``torch.manual_seed(seed)``.
    train : TrainConfig
    world_size : int
    seed : int

    Returns
    -------
    model : nn.Module
    n_params : int
    """
    if train.zero_stage != 3:
        torch.manual_seed(seed)
        model = build()
        return model, sum(p.numel() for p in model.parameters())
    import deepspeed

    return_freed_memory()

    with torch.device("meta"):
        n_params = sum(p.numel() for p in build().parameters())
    torch.manual_seed(seed)
    with deepspeed.zero.Init(config_dict_or_path=ds_config(train, world_size, n_params=n_params)):
        model = build()
    return model, n_params


def create_engine(
    model: nn.Module,
    train: Any,
    world_size: int,
    total_steps: int,
    *,
    load_universal: bool = False,
    n_params: int | None = None,
    keep_heap: bool = True,
    encoder_frozen_steps: int = 0,
) -> Any:
    """Wrap ``model`` in a DeepSpeed engine with AdamW and our warm-up/cosine schedule.

    ``n_params`` is the parameter count when ``model`` is already partitioned
    (:func:`build_partitioned`); otherwise it is counted here. Without ZeRO-3 the process
    keeps freed memory for reuse (:func:`brainxl.heap.keep_freed_memory`) unless
    ``keep_heap`` is False (``data.reader.heap_reuse: false``: glibc's defaults).
    ``encoder_frozen_steps`` (``train.encoder_frozen_steps``): see :func:`param_groups`.

    Returns
    -------
    engine : deepspeed.DeepSpeedEngine
        ``engine.lr_scheduler`` steps once per optimizer step.
    """
    import deepspeed
    from torch.optim.lr_scheduler import LambdaLR

    check_precision(train.precision)
    min_ratio = train.min_lr / train.lr if train.lr > 0 else 0.0
    groups = param_groups(model, train.lr, train.layer_decay, encoder_frozen_steps)

    def schedules(opt: torch.optim.Optimizer) -> LambdaLR:
        args = (train.warmup_steps, total_steps, train.schedule, min_ratio)
        return LambdaLR(opt, [_Schedule(*args, g.get(FROZEN_STEPS, 0)) for g in opt.param_groups])

    os.environ.setdefault("DS_SKIP_CUDA_CHECK", "1")
    if train.zero_stage == 3:
        return_freed_memory()  # the engine frees what it partitions
        register_leaf_params_external(model)
    elif keep_heap:
        keep_freed_memory()  # steps reuse their large blocks instead of faulting them in
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=groups,
        lr_scheduler=schedules,
        config=ds_config(
            train,
            world_size,
            load_universal=load_universal,
            n_params=n_params or sum(p.numel() for p in model.parameters()),
        ),
    )
    return engine


def param_groups(
    model: nn.Module, lr: float, layer_decay: float = 1.0, encoder_frozen_steps: int = 0
) -> list[Any]:
    """Trainable parameters, grouped by learning rate for layer-wise LR decay.

    A model with ``layer_id(name)`` (LaBraM, NeuroBOLT) gets one group per depth with
    ``lr * layer_decay ** (top - depth)``: embeddings learn slowest, the head at ``lr``.
    Without decay (``layer_decay == 1``) or ``layer_id`` it is the plain parameter list.
    The schedule multiplies every group's LR by the same factor, keeping the ratios.

    ``encoder_frozen_steps > 0`` puts the LaBraM encoder's parameters (``encoder.*``,
    what ``model.pretrained`` initialises) in groups marked ``frozen_steps``: the
    schedule holds them at LR 0 for that many steps while the rest trains, then warms
    them up (linear probing, then fine-tuning). Models without a LaBraM encoder raise
    a ``ValueError`` (:func:`brainxl.models.pretrained.find_encoder`).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layer_id = getattr(model, "layer_id", None)
    if encoder_frozen_steps > 0:
        find_encoder(model, "train.encoder_frozen_steps")
    if (layer_decay == 1.0 or layer_id is None) and encoder_frozen_steps == 0:
        return [p for _, p in named]
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    depth = {n: int(layer_id(n)) if layer_id and layer_decay != 1.0 else 0 for n, _ in named}
    top = max(depth.values())
    for n, p in named:
        frozen = encoder_frozen_steps > 0 and n.startswith(ENCODER_PREFIX)
        groups.setdefault((depth[n], frozen), []).append(p)
    return [
        {"params": ps, "lr": lr * layer_decay ** (top - d)}
        | ({FROZEN_STEPS: encoder_frozen_steps} if frozen else {})
        for (d, frozen), ps in sorted(groups.items())
    ]


def register_leaf_params_external(model: nn.Module) -> int:
    """ZeRO-3: gather the parameters of leaf children (Linear, LayerNorm...) when their
    parent's forward starts.

    ZeRO-3 gathers a module's parameters when *its own* forward runs. Models that read a
    child's weights directly (``F.linear(x, self.fc1.weight)``, fused norm+linear
    functions) would otherwise see empty partitions. Returns the number registered.
    """
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    n = 0
    for parent in model.modules():
        for child in parent.children():
            if next(child.children(), None) is not None:
                continue  # only leaves: deeper modules gather their own
            for p in child.parameters(recurse=False):
                register_external_parameter(parent, p)
                n += 1
    return n


def module_dtype(engine: Any) -> torch.dtype:
    """Dtype of the engine's weights (fp16 mode only; bf16 uses autocast on fp32 weights)."""
    if engine.bfloat16_enabled():
        return torch.bfloat16
    if engine.fp16_enabled():
        return torch.float16
    return torch.float32


def consolidated_state_dict(engine: Any) -> dict[str, torch.Tensor] | None:
    """Full fp32 weights on rank 0 (None elsewhere); gathers ZeRO-3 partitions.

    Must be called on every rank.
    """
    import deepspeed
    import torch.distributed as dist

    module = engine.module
    params = list(module.parameters())
    rank = dist.get_rank() if dist.is_initialized() else 0
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        if rank != 0:
            return None
        # fp32 weights; integer buffers (e.g. graph edge lists) keep their dtype
        return {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in module.state_dict().items()
        }


def all_reduce_(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (a no-op in a one-process job); returns ``t``."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def engine_forward(engine: Any, **inputs: Any) -> Any:
    """The engine's forward on keyword inputs, under autocast when its weights are
    bf16/fp16 (inputs stay fp32 and autocast casts per op)."""
    dtype = module_dtype(engine)
    if dtype == torch.float32:
        return engine(**inputs)
    with torch.autocast(torch.device(engine.device).type, dtype=dtype):
        return engine(**inputs)


def stop_agreed() -> bool:
    """True on every rank when any rank was asked to stop (see :mod:`distrib.signals`);
    collective."""
    from brainxl.distrib import signals

    flag = torch.tensor([1.0 if signals.stop_requested() else 0.0])
    return bool(all_reduce_(flag)[0] > 0)
