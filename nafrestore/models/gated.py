"""NoiseGatedPair: two restoration networks, one for mild noise (or none) and one for strong noise, mixed per image
by the input's estimated noise level.

Why two: one blind LKA-NAFNet of width 12 fine-tuned on strong noise as well learned to smooth hard and did so to
mildly noisy and clean real photographs too (PolyU -0.3 dB; clean PolyU photographs changed down to 30.8 dB from
35.5; ``bench/real-noise-recipes.md``, session 9). A pair keeps the regimes apart by construction: the mild network
never has to learn strong smoothing, and a photograph whose estimated noise is below the gate never reaches the
strong one.

Per image: ``g = clamp((noise_level(x) * 255 - low) / (high - low), 0, 1)`` (``layers.noise_level``, the wavelet
MAD estimate at the second Haar scale; ``gate = [low, high]`` on the 0-255 scale) and the output is
``(1 - g) * mild(x) + g * strong(x)``. A batch whose images are all at g = 0 (or all at 1) runs one network only,
so a photograph costs one network's time unless its level falls inside the gate; trained as one model, each
sample's gradient reaches the network(s) its g selects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .layers import check_gate, gate_weights
from .nafnet import LKANAFNet, NAFNet

#: The networks a pair can hold (the registry's single networks; the pair itself is registered beside them).
EXPERTS: dict[str, type[NAFNet]] = {"nafnet": NAFNet, "lka_nafnet": LKANAFNet}


class NoiseGatedPair(nn.Module):
    """Two networks of the same kind, ``mild`` and ``strong``, mixed per image by its estimated noise level.

    Args:
        mild: the mild network's arguments (e.g. ``width``, ``residual_highpass``).
        strong: the strong network's arguments.
        gate: ``[low, high]``, noise levels on the 0-255 scale: below ``low`` only ``mild`` runs, above ``high``
            only ``strong``, in between the outputs are blended linearly.
        model: the networks' registered name, ``lka_nafnet`` (default) or ``nafnet``.

    Shapes: (B, C, H, W) float in [0, 1] -> same.
    """

    def __init__(
        self,
        mild: dict[str, Any],
        strong: dict[str, Any],
        gate: Sequence[float] = (8.0, 16.0),
        model: str = "lka_nafnet",
    ) -> None:
        super().__init__()
        if model not in EXPERTS:
            raise ValueError(f"a noise-gated pair holds {' or '.join(EXPERTS)} networks, not {model!r}")
        self.mild = EXPERTS[model](**dict(mild))
        self.strong = EXPERTS[model](**dict(strong))
        self.gate_low, self.gate_high = check_gate(gate)
        self.padder_size = max(self.mild.padder_size, self.strong.padder_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = gate_weights(x, self.gate_low, self.gate_high)
        if bool((g == 0).all()):
            return self.mild(x)
        if bool((g == 1).all()):
            return self.strong(x)
        w = g.view(-1, 1, 1, 1).to(x.dtype)
        return self.mild(x) * (1 - w) + self.strong(x) * w

    def set_tlc(self, train_size: int | None) -> None:
        """The test-time local converter on (``train_size``) or off (None) in both networks."""
        self.mild.set_tlc(train_size)
        self.strong.set_tlc(train_size)

    @property
    def tlc_enabled(self) -> bool:
        return self.mild.tlc_enabled or self.strong.tlc_enabled


def pair_state(mild: Mapping[str, torch.Tensor], strong: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pair's state dict from its two networks' state dicts."""
    return {**{f"mild.{k}": v for k, v in mild.items()}, **{f"strong.{k}": v for k, v in strong.items()}}
