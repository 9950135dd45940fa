"""NoiseGatedPair: two restoration networks, one for mild noise (or none) and one for strong noise, mixed per image
by the input's estimated noise level.

Why two: one blind LKA-NAFNet of width 12 fine-tuned on strong noise as well learned to smooth hard and did so to
mildly noisy and clean real photographs too (PolyU -0.3 dB; clean PolyU photographs changed down to 30.8 dB from
35.5; ``bench/real-noise-recipes.md``, session 9). A pair keeps the regimes apart by construction: the mild network
never has to learn strong smoothing, and a photograph whose estimated noise is below the gate never reaches the
strong one.

Per image: ``g = clamp((level(x) * 255 - low) / (high - low), 0, 1)`` (``gate = [low, high]`` on the 0-255 scale;
``level`` the estimate ``gate_estimate`` names: ``layers.noise_level``, the wavelet MAD estimate at the second Haar
scale, or ``layers.quiet_block_noise_level``, read on the image's quietest blocks) and the output is
``(1 - g) * mild(x) + g * strong(x)``. A batch whose images are all at g = 0 (or all at 1) runs one network only,
so a photograph costs one network's time unless its level falls inside the gate; trained as one model, each
sample's gradient reaches the network(s) its g selects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .layers import NoiseEstimate, check_estimate, check_gate, gate_weights, noise_level
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
        gate_estimate: the noise estimate the gate reads, ``wavelet`` (default) or ``quiet_blocks``
            (:data:`layers.NOISE_ESTIMATES`).
        texture_fade: ``[low, high, floor]``: the mild network's correction is scaled from 1, where the input's
            wavelet noise level (``layers.noise_level``, 0-255) is at ``low`` or below, down to ``floor`` at ``high``
            and above (:func:`texture_fade_weights`). None: unscaled.

    Shapes: (B, C, H, W) float in [0, 1] -> same.
    """

    def __init__(
        self,
        mild: dict[str, Any],
        strong: dict[str, Any],
        gate: Sequence[float] = (8.0, 16.0),
        model: str = "lka_nafnet",
        gate_estimate: NoiseEstimate = "wavelet",
        texture_fade: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if model not in EXPERTS:
            raise ValueError(f"a noise-gated pair holds {' or '.join(EXPERTS)} networks, not {model!r}")
        self.mild = EXPERTS[model](**dict(mild))
        self.strong = EXPERTS[model](**dict(strong))
        self.gate_low, self.gate_high = check_gate(gate)
        self.gate_estimate = check_estimate(gate_estimate)
        self.texture_fade = check_texture_fade(texture_fade) if texture_fade is not None else None
        self.padder_size = max(self.mild.padder_size, self.strong.padder_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = gate_weights(x, self.gate_low, self.gate_high, self.gate_estimate)
        if bool((g == 1).all()):
            return self.strong(x)
        mild = self.mild(x) if self.texture_fade is None else faded(x, self.mild(x), self.texture_fade)
        if bool((g == 0).all()):
            return mild
        w = g.view(-1, 1, 1, 1).to(x.dtype)
        return mild * (1 - w) + self.strong(x) * w

    def set_tlc(self, train_size: int | None) -> None:
        """The test-time local converter on (``train_size``) or off (None) in both networks."""
        self.mild.set_tlc(train_size)
        self.strong.set_tlc(train_size)

    @property
    def tlc_enabled(self) -> bool:
        return self.mild.tlc_enabled or self.strong.tlc_enabled


def check_texture_fade(fade: Sequence[float]) -> tuple[float, float, float]:
    """``fade`` as ``(low, high, floor)`` after checking ``0 <= low < high`` (noise levels, 0-255) and
    ``0 <= floor <= 1``; ValueError otherwise."""
    if len(fade) != 3 or not 0 <= fade[0] < fade[1] or not 0 <= fade[2] <= 1:
        raise ValueError(
            f"a texture fade needs [low, high, floor] with 0 <= low < high and 0 <= floor <= 1, got {list(fade)}"
        )
    return float(fade[0]), float(fade[1]), float(fade[2])


def texture_fade_weights(image: torch.Tensor, low: float, high: float, floor: float) -> torch.Tensor:
    """How much of the mild network's correction a photograph keeps: (B, C, H, W) in [0, 1] -> (B,) float32 in
    [floor, 1], falling linearly from 1 at wavelet noise level ``low`` to ``floor`` at ``high`` (0-255).

    Why: the pair sends a photograph to its mild network unless its quiet blocks read noisy
    (``layers.quiet_block_noise_level``). One that the mild network gets although the whole-image wavelet estimate
    (``layers.noise_level``) reads it far above real mild camera noise (PolyU's 100 noisy photographs read at most
    6.8) is textured: foliage, gravel and film grain fill the detail bands. The mild network's full correction
    smoothed such texture (a clean photograph of grass changed to 29.3 dB from itself); scaled down there, the
    texture stays, while photographs with real mild noise, below ``low``, keep the whole correction.
    """
    ramp = ((noise_level(image) * 255.0 - low) / (high - low)).clamp(0.0, 1.0)
    return 1.0 - (1.0 - floor) * ramp


def faded(x: torch.Tensor, restored: torch.Tensor, fade: tuple[float, float, float]) -> torch.Tensor:
    """``x + s * (restored - x)`` with ``s = texture_fade_weights(x, *fade)`` per image; (B, C, H, W) each."""
    s = texture_fade_weights(x, *fade).view(-1, 1, 1, 1).to(x.dtype)
    return x + s * (restored - x)


def pair_state(mild: Mapping[str, torch.Tensor], strong: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pair's state dict from its two networks' state dicts."""
    return {**{f"mild.{k}": v for k, v in mild.items()}, **{f"strong.{k}": v for k, v in strong.items()}}
