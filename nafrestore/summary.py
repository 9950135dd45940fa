"""Model summaries for ``nafrestore info``: parameters, MACs and the level/block layout."""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models.layers import plain_ops


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, size: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a (1, in_channels, size, size) input.

    Counted with ``torch.utils.flop_counter`` (its FLOPs / 2), which sees convolutions and matrix products;
    element-wise ops (norms, gates) are not included, as is usual for reported MACs.
    """
    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_channels, size, size, device=next(model.parameters()).device)
    try:
        # Count the function, not a faster way to compute it: DilatedDepthwiseConv2d pads to a multiple of d.
        with plain_ops(model), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def layout(model: nn.Module) -> list[str]:
    """One line per U-Net stage: channels and the blocks it holds, e.g. ``enc 1  24 ch  3 x LKABlock``; for a
    noise-gated pair, each network's lines under its name."""
    if not hasattr(model, "intro"):  # a NoiseGatedPair: its two networks
        return [f"{name}: {line}" for name in ("mild", "strong") for line in layout(getattr(model, name))]
    lines = []

    def blocks(seq: nn.Module) -> str:
        kinds = Counter(type(b).__name__ for b in seq)
        return ", ".join(f"{n} x {k}" for k, n in kinds.items()) or "no blocks"

    width = model.intro.out_channels
    for i, enc in enumerate(model.encoders):
        lines.append(f"encoder {i}  {width * 2**i:4d} ch  {blocks(enc)}")
    depth = len(model.encoders)
    lines.append(f"middle     {width * 2**depth:4d} ch  {blocks(model.middle_blks)}")
    for j, dec in enumerate(model.decoders):
        lines.append(f"decoder {depth - 1 - j}  {width * 2 ** (depth - 1 - j):4d} ch  {blocks(dec)}")
    return lines
