"""Building a training session from its config: the model (and its EMA), the optimisation (AdamW, the schedule,
the gradient scaler, the precision), the DDP/compile wrapping, the loaders and the validation metrics.

These ``build_*`` functions read the config; what they build takes plain arguments. :func:`.trainer.train` calls
them once per session, resuming the pieces from a checkpoint where one is given.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import Config
from ..data import build_datasets, build_train_loader, build_val_loader
from ..data.datasets import item_sizes
from ..errors import ConfigError, DataError, NafrestoreError
from ..loading import build_model, init_state, load_weights
from ..metrics import MetricSuite
from ..utils import distributed as du
from ..utils.device import MEMORY_FORMATS, resolve_precision, seed_everything
from .checkpoint import load_model_state
from .ema import ModelEMA
from .optim import WarmupCosineSchedule, build_optimizer

__all__ = [
    "build_loaders",
    "choose_memory_format",
    "build_optimization",
    "build_training_model",
    "build_val_suite",
    "check_validation_sizes",
    "restore_optimization",
    "wrap_model",
]


def build_training_model(
    cfg: Config,
    info: du.DistInfo,
    device: torch.device,
    ckpt: Mapping[str, Any] | None,
    source: str,
) -> tuple[nn.Module, ModelEMA | None, str, str]:
    """The network (resumed weights, ``model.init_from``'s weights or a seeded initialisation, identical on every
    process) in its training memory format, its EMA, and that format (a key of ``MEMORY_FORMATS``) with one line
    saying why (:func:`choose_memory_format`)."""
    seed_everything(cfg.run.seed)
    raw = build_model(cfg.model.name, cfg.model.args).to(device)  # DDP broadcasts rank 0's weights anyway
    if info.rank:
        seed_everything(cfg.run.seed + 1_000_003 * info.rank)  # independent stochastic layers per process
    if ckpt is not None:
        load_model_state(raw, ckpt["model"], source)
    elif cfg.model.init_from is not None:  # fine-tuning; a resumed run has its own weights
        state, where = init_state(cfg.model.init_from)
        load_weights(raw, state, where)
    memory_format, why = choose_memory_format(
        cfg.train.memory_format,
        device=device,
        precision=training_precision(cfg, device),
        resumed=ckpt.get("memory_format") if ckpt is not None else None,
    )
    raw.to(memory_format=MEMORY_FORMATS[memory_format])  # before the EMA copies it and the optimizer reads it
    ema = ModelEMA(raw, cfg.train.ema) if cfg.train.ema else None
    if ema is not None and ckpt is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    if ema is not None and cfg.model.tlc:
        ema.module.set_tlc(cfg.model.tlc_train_size)  # the EMA copy only ever runs inference
    return raw, ema, memory_format, why


def training_precision(cfg: Config, device: torch.device) -> str:
    """train.precision resolved for ``device`` (see :func:`~nafrestore.utils.device.resolve_precision`)."""
    try:
        return resolve_precision(cfg.train.precision, device)
    except NafrestoreError as exc:
        raise ConfigError(f"train.precision: {exc}") from None


def choose_memory_format(
    requested: str, *, device: torch.device, precision: str, resumed: str | None = None
) -> tuple[str, str]:
    """The training memory format (``contiguous`` or ``channels_last``) and one line saying why.

    ``auto`` keeps ``resumed`` (the checkpoint's choice) when given; otherwise it follows a fixed rule per device and
    precision, never a timing: the two formats run different kernels (oneDNN, cuDNN), whose float rounding differs,
    so a format picked by timing a step let the machine's load pick the weights of a seeded run (alone channels-last,
    busy contiguous). The rule: channels-last on the CPU (oneDNN's NHWC convolutions trained LKA-NAFNet x1.1-1.3
    faster on this project's 2-core AVX2 CPU, and folded inference x1.4-2.1) and on CUDA under bf16/fp16 autocast
    (tensor-core convolutions are NHWC, so NCHW tensors would be transposed around each); contiguous elsewhere.

    Args:
        requested: ``auto``, ``contiguous`` or ``channels_last`` (train.memory_format).
        device: the training device.
        precision: the training precision (``fp32``, ``bf16`` or ``fp16``).
        resumed: the format of the checkpoint a run resumes from, if any.
    """
    if requested != "auto":
        return requested, f"memory format {requested} (train.memory_format)"
    if resumed is not None:
        return resumed, f"memory format {resumed} (auto, kept from the checkpoint)"
    if device.type == "cpu" or (device.type == "cuda" and precision != "fp32"):
        choice = "channels_last"
    else:
        choice = "contiguous"
    return choice, (
        f"memory format {choice} (auto: the rule for {device.type} at {precision}, the same whatever the machine's "
        "load; train.memory_format sets it)"
    )


def build_optimization(
    cfg: Config, raw: nn.Module, device: torch.device, ckpt: Mapping[str, Any] | None
) -> tuple[torch.optim.Optimizer, WarmupCosineSchedule, torch.amp.GradScaler, str]:
    """AdamW, the warm-up + cosine schedule and the gradient scaler (resumed when ``ckpt``), and the precision."""
    tc = cfg.train
    precision = training_precision(cfg, device)
    optimizer = build_optimizer(raw, lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)
    budget = tc.time_budget_min * 60.0 if tc.time_budget_min else None
    scheduler = WarmupCosineSchedule(
        optimizer, total_iters=tc.iters, warmup_iters=tc.warmup_iters, min_lr=tc.min_lr, time_budget_s=budget
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if ckpt is not None:
        restore_optimization(ckpt, optimizer, scheduler, scaler)
    return optimizer, scheduler, scaler, precision


def restore_optimization(
    ckpt: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosineSchedule,
    scaler: torch.amp.GradScaler,
) -> None:
    if ckpt.get("optimizer") is None:
        raise ConfigError(
            "This checkpoint has no optimizer state (best.pt is for inference): resume from checkpoints/last.pt "
            "or the run directory."
        )
    # The optimizer state dict also carries hyperparameters; the config's (possibly overridden) ones win.
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, hparams in zip(optimizer.param_groups, fresh, strict=True):
        group.update(hparams)
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])


def wrap_model(raw: nn.Module, cfg: Config, info: du.DistInfo, device: torch.device) -> nn.Module:
    """What forward and backward go through: DDP across processes, torch.compile when asked."""
    model: nn.Module = raw
    if info.distributed:
        # Depthwise conv weights (C, 1, k, k) get gradients whose stride on the size-1 dim differs from DDP's bucket
        # views; the layouts are equivalent, so DDP's performance warning about it is a false alarm.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    return model


def build_loaders(cfg: Config, info: du.DistInfo, datasets: Any) -> tuple[DataLoader, DataLoader | None]:
    train_ds, val_ds = datasets if datasets is not None else build_datasets(cfg.data, seed=cfg.run.seed)
    if val_ds is not None:
        check_validation_sizes(val_ds, cfg)
    loader = build_train_loader(
        train_ds,
        batch_size=cfg.train.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.run.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    val_loader = build_val_loader(val_ds, rank=info.rank, world_size=info.world_size) if val_ds is not None else None
    return loader, val_loader


def check_validation_sizes(val_ds: Any, cfg: Config) -> None:
    """Every validation image is large enough for val.metrics (checked now, not at the first validation)."""
    need = MetricSuite.minimum_side(cfg.val.metrics, crop_border=cfg.val.crop_border)
    for name, height, width in item_sizes(val_ds):
        if min(height, width) < need:
            raise DataError(
                f"The validation image {name!r} is {width}x{height} px, but val.metrics {cfg.val.metrics} with "
                f"val.crop_border {cfg.val.crop_border} need at least {need} px on each side. Remove or replace the "
                f"image, or drop the metric that needs the size (ms-ssim needs 161 px, lpips 32, ssim 11)."
            )


def build_val_suite(cfg: Config, device: torch.device) -> MetricSuite:
    return MetricSuite(cfg.val.metrics, y_channel=cfg.val.y_channel, crop_border=cfg.val.crop_border, device=device)
