"""AdamW with decay only on convolution/linear weights, and a warm-up + cosine learning-rate schedule.

Weight decay pulls weights towards zero. That regularises the >= 2-D convolution kernels, but on biases, norm
affines and the per-channel residual scales (NAFBlock ``beta``/``gamma``, LayerScale ``scale``) it only fights the
parametrisation (a NAFBlock's branch scales start at zero on purpose), so those get ``weight_decay = 0``.

The schedule is a function of training *progress* p in [0, 1]: a linear warm-up to the peak rate, then a cosine
decay to the floor ``min_lr`` at p = 1. Progress counts iterations (``step / iters``), or, with a time budget,
``max(step / iters, elapsed / budget)`` so that "train for N minutes" ends its decay on time on a machine of any
speed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# Parameter names that are per-channel scales, whatever their shape (NAFBlock's are (1, C, 1, 1)).
NO_DECAY_NAMES = frozenset({"beta", "gamma", "scale"})

# Warm-up fraction of a time-budget run (the budget's first 2 %).
TIME_WARMUP_FRACTION = 0.02


def _is_norm(module: nn.Module) -> bool:
    # Covers torch's BatchNorm*/GroupNorm/LayerNorm/InstanceNorm*/RMSNorm and nafrestore's LayerNorm2d.
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    return isinstance(module, norm_types) or "norm" in type(module).__name__.lower()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split the trainable parameters into a decayed and a non-decayed group.

    Decayed: parameters with >= 2 dimensions (conv / linear weights) that neither belong to a norm layer nor are
    named ``beta``, ``gamma`` or ``scale``. Everything else (biases, norm weights/biases, scales) gets no decay.

    Returns:
        ``[{"params", "weight_decay", "group": "decay"}, {"params", "weight_decay": 0.0, "group": "no_decay"}]``
        (empty groups left out), in the model's parameter order so that optimizer state dicts are stable.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if norm or param.ndim < 2 or name in NO_DECAY_NAMES:
                no_decay.append(param)
            else:
                decay.append(param)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "group": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module, *, lr: float, betas: Sequence[float] = (0.9, 0.9), weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` of ``model`` (pass the unwrapped module, not DDP/compiled wrappers)."""
    b1, b2 = betas
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(float(b1), float(b2)))


def lr_factor(progress: float, *, warmup: float, floor: float) -> float:
    """The learning rate at ``progress`` as a fraction of the peak rate.

    Args:
        progress: p in [0, 1] (clamped).
        warmup: warm-up fraction w in [0, 1); the rate rises linearly as p / w.
        floor: ``min_lr / lr``, the value reached at p = 1.

    Returns:
        ``p / w`` during warm-up, then ``floor + (1 - floor) * (1 + cos(pi * (p - w) / (1 - w))) / 2``.
    """
    p = min(max(progress, 0.0), 1.0)
    if p < warmup:
        return p / warmup
    t = (p - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosineSchedule:
    """Iteration-based linear warm-up and cosine decay to a floor, optionally driven by a time budget.

    Call :meth:`set_step` before each optimizer step with the number of steps already taken; it writes the rate
    into every param group (each group's rate is its base rate times the same factor).

    Iteration mode (``time_budget_s`` None): for step s < ``warmup_iters`` the rate is ``lr * (s + 1) /
    warmup_iters`` (the first step is not wasted at rate 0); from there a cosine over
    ``[warmup_iters, total_iters]`` reaches ``min_lr`` at s = ``total_iters``.

    Time mode: progress is ``max(s / total_iters, elapsed / time_budget_s)`` (whichever is further along), the
    cosine follows it, and training should stop when :meth:`progress` reaches 1. The warm-up is ``warmup_iters``
    steps when given (the rate is scaled by ``(s + 1) / warmup_iters`` over them), else the first 2 % of progress.

    Args:
        optimizer: its groups' current ``lr`` are taken as the peak rates.
        total_iters: the run's length in steps.
        warmup_iters: warm-up length in steps (iteration mode).
        min_lr: the floor for a group whose peak is ``lr`` (other groups scale in proportion).
        time_budget_s: the training time budget in seconds, or None.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_iters: int,
        warmup_iters: int = 0,
        min_lr: float = 0.0,
        time_budget_s: float | None = None,
    ) -> None:
        if total_iters < 1 or not 0 <= warmup_iters < total_iters:
            raise ValueError(f"need 0 <= warmup_iters ({warmup_iters}) < total_iters ({total_iters})")
        self.optimizer = optimizer
        self.total_iters = int(total_iters)
        self.warmup_iters = int(warmup_iters)
        self.time_budget_s = time_budget_s
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.peak_lr = max(self.base_lrs)
        self.min_lr = float(min_lr)
        self.last_factor = 1.0

    def progress(self, step: int, elapsed_s: float = 0.0) -> float:
        """Training progress in [0, 1] after ``step`` steps and ``elapsed_s`` seconds of training."""
        p = step / self.total_iters
        if self.time_budget_s:
            p = max(p, elapsed_s / self.time_budget_s)
        return min(p, 1.0)

    def factor(self, step: int, elapsed_s: float = 0.0) -> float:
        """The rate of step ``step`` as a fraction of the peak rate."""
        floor = self.min_lr / self.peak_lr if self.peak_lr > 0 else 0.0
        if self.time_budget_s:
            p = self.progress(step, elapsed_s)
            warmup = 0.0 if self.warmup_iters else TIME_WARMUP_FRACTION
            ramp = min(1.0, (step + 1) / self.warmup_iters) if self.warmup_iters else 1.0
            # Never exactly 0: a step at rate 0 would be wasted.
            return max(ramp * lr_factor(p, warmup=warmup, floor=floor), 1.0 / self.total_iters)
        if step < self.warmup_iters:
            return (step + 1) / self.warmup_iters
        t = min((step - self.warmup_iters) / (self.total_iters - self.warmup_iters), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def lr_at(self, step: int, elapsed_s: float = 0.0) -> float:
        """The peak group's learning rate at ``step``."""
        return self.peak_lr * self.factor(step, elapsed_s)

    def set_step(self, step: int, elapsed_s: float = 0.0) -> float:
        """Write the rates of step ``step`` into the optimizer; returns the peak group's rate."""
        self.last_factor = self.factor(step, elapsed_s)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.last_factor
        return self.peak_lr * self.last_factor

    def get_last_lr(self) -> list[float]:
        return [base * self.last_factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        return {
            "total_iters": self.total_iters,
            "warmup_iters": self.warmup_iters,
            "min_lr": self.min_lr,
            "time_budget_s": self.time_budget_s,
            "base_lrs": list(self.base_lrs),
            "last_factor": self.last_factor,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the last factor. The schedule's shape and peak rates stay those given at construction (from the
        config), so a resumed run may change ``iters``, ``lr`` or ``min_lr`` through its config."""
        self.last_factor = float(state.get("last_factor", 1.0))


__all__ = ["NO_DECAY_NAMES", "WarmupCosineSchedule", "build_optimizer", "lr_factor", "param_groups"]
