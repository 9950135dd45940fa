"""One optimisation step, agreed on by every process: forward, loss, backward, clip, update, or skip."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..utils import distributed as du
from ..utils.device import MEMORY_FORMATS, autocast

__all__ = ["train_step"]


def _grad_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def train_step(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    precision: str = "fp32",
    grad_clip: float | None = None,
    device: torch.device | str = "cpu",
    memory_format: str = "contiguous",
) -> dict[str, Any]:
    """One optimisation step on one batch.

    Forward under autocast (``precision``), loss in float32, backward through the scaler (fp16), optional clipping
    of the global gradient norm, optimizer step. A non-finite loss (on any process) skips the step: no backward, no
    update, gradients cleared. Without fp16, a non-finite gradient norm (only known when clipping) is skipped the same
    way; with fp16 the scaler handles overflowing gradients itself (skips and lowers its scale), which is not an error.

    Args:
        model: the training model (possibly DDP-wrapped / compiled), in train mode.
        batch: ``{"lq": (B, 3, P, P), "gt": (B, 3, P, P)}`` float in [0, 1].
        loss_fn: (pred, target) -> scalar.
        optimizer, scaler: the optimizer and a ``torch.amp.GradScaler`` (disabled unless fp16).
        precision: ``fp32`` | ``bf16`` | ``fp16`` (see :func:`nafrestore.utils.device.resolve_precision`).
        grad_clip: max global gradient norm, or None.
        device: where the model is.
        memory_format: the model's, a key of ``MEMORY_FORMATS``; the input is given the same.

    Returns:
        ``{"loss": float (mean over processes; nan when skipped), "skipped": bool, "grad_norm": float | None}``.
    """
    device = torch.device(device)
    lq = batch["lq"].to(device, non_blocking=True, memory_format=MEMORY_FORMATS[memory_format])
    gt = batch["gt"].to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        pred = model(lq)
    loss = loss_fn(pred.float(), gt.float())
    # One reduction tells every process the mean loss and whether any process's loss is non-finite, so that
    # all of them skip together (a process skipping backward alone would hang DDP's gradient all-reduce).
    value = loss.detach().float()
    finite = torch.isfinite(value)
    stats = torch.stack([torch.where(finite, value, torch.zeros_like(value)), (~finite).float()])
    loss_sum, n_bad = du.all_reduce_sum(stats).tolist()
    if n_bad > 0:
        optimizer.zero_grad(set_to_none=True)
        return {"loss": math.nan, "skipped": True, "grad_norm": None}
    scaler.scale(loss).backward()
    grad_norm = None
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        # After DDP's all-reduce the gradients, hence the norm, are the same on every process.
        grad_norm = float(torch.nn.utils.clip_grad_norm_(_grad_params(optimizer), grad_clip))
        if not math.isfinite(grad_norm) and not scaler.is_enabled():
            optimizer.zero_grad(set_to_none=True)
            return {"loss": loss_sum / du.get_world_size(), "skipped": True, "grad_norm": grad_norm}
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss_sum / du.get_world_size(), "skipped": False, "grad_norm": grad_norm}
