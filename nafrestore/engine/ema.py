"""An exponential moving average (EMA) of a model's weights.

Averaging the weights over the last ~1 / (1 - decay) steps smooths out the noise of the final iterations; the
average usually validates better than the raw weights, so validation and ``best.pt`` use it when enabled.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of a model whose weights track ``ema = d * ema + (1 - d) * weights`` after every step.

    The decay warms up as ``d = min(decay, (1 + step) / (10 + step))``: early on the average follows the weights
    closely (otherwise the randomly initialised weights would dominate it for thousands of steps), later it is
    ``decay``. Because the warm-up depends only on ``step``, a resumed run continues the same sequence.

    Args:
        model: the (unwrapped) model to track; it is deep-copied.
        decay: the long-run decay, e.g. 0.999.

    Attributes:
        module: the averaged model, in eval mode, with ``requires_grad`` off.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used for the update after ``step`` steps (0-based count of completed steps)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend ``model``'s (unwrapped) weights into the average; integer buffers are copied."""
        d = self.decay_at(step)
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.mul_(d).add_(value.detach().to(target.dtype), alpha=1.0 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights, as a plain model state dict."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


__all__ = ["ModelEMA"]
