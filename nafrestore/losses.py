"""Training losses: PSNR (NAFNet's), L1, Charbonnier, MSE, and weighted sums of them.

Every loss maps a prediction and a target of shape (B, C, H, W) (images in [0, 1]) to a scalar tensor that is
minimised. Losses are registered in :data:`LOSSES`; :func:`build_loss` makes the weighted sum a config asks for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("psnr")
class PSNRLoss(nn.Module):
    """NAFNet's PSNR loss: ``scale * mean_b log(MSE_b + 1e-8)`` with ``scale = 10 / ln 10``.

    ``10 / ln 10 * log(mse) = 10 log10(mse) = -PSNR`` for peak 1, so the loss is minus the mean per-image PSNR
    (up to the 1e-8 that keeps a perfect image finite). Per-image logs weight every image's improvement in dB
    equally, which trains restoration nets better than the pixel MSE of the batch.
    """

    scale = 10.0 / math.log(10.0)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        mse = (pred - target).square().flatten(1).mean(dim=1)  # (B,)
        return self.scale * torch.log(mse + 1e-8).mean()


@LOSSES.register("l1")
class L1Loss(nn.Module):
    """Mean absolute error over all pixels."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - target).abs().mean()


@LOSSES.register("charbonnier")
class CharbonnierLoss(nn.Module):
    """``mean(sqrt((pred - target)^2 + eps^2))``: a smooth L1 (differentiable at zero).

    Args:
        eps: 1e-3 as in MPRNet/Restormer (on the [0, 1] scale).
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return torch.sqrt((pred - target).square() + self.eps**2).mean()


@LOSSES.register("mse")
class MSELoss(nn.Module):
    """Mean squared error over all pixels."""

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return (pred - target).square().mean()


class WeightedLoss(nn.Module):
    """``sum_i weight_i * loss_i(pred, target)``.

    Args:
        terms: (name, weight, loss module) triples.

    ``last_terms`` holds the detached value of each term of the latest call (for logging).
    """

    def __init__(self, terms: Sequence[tuple[str, float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ValueError("a loss needs at least one term")
        self.names = [name for name, _, _ in terms]
        self.weights = [float(weight) for _, weight, _ in terms]
        self.losses = nn.ModuleList([loss for _, _, loss in terms])
        self.last_terms: dict[str, Tensor] = {}

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        total: Tensor | None = None
        self.last_terms = {}
        for name, weight, loss in zip(self.names, self.weights, self.losses, strict=True):
            value = loss(pred, target)
            self.last_terms[name] = value.detach()
            total = weight * value if total is None else total + weight * value
        assert total is not None
        return total

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g} * {n}" for n, w in zip(self.names, self.weights, strict=True))


def build_loss(terms: Iterable[tuple[str, float]]) -> WeightedLoss:
    """The weighted sum of registered losses.

    Args:
        terms: (name, weight) pairs, e.g. ``[("psnr", 1.0)]`` or ``[("l1", 1.0), ("mse", 0.5)]``.

    Returns:
        A module mapping (pred, target), both (B, C, H, W), to a scalar tensor.

    Raises:
        KeyError: an unknown loss name (listing the valid ones).
    """
    built = [(str(name), float(weight), LOSSES.get(str(name))()) for name, weight in terms]
    return WeightedLoss(built)


__all__ = ["LOSSES", "CharbonnierLoss", "L1Loss", "MSELoss", "PSNRLoss", "WeightedLoss", "build_loss"]
