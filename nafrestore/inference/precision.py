"""The inference precision ``infer --precision auto`` picks: bf16 on a CPU only where it pays and stays faithful.

On a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX), autocast to bf16 ran NAFNet-SIDD-width32 x1.7 faster
than fp32 at 58 dB PSNR from the fp32 output, but the LKA-NAFNet demo model only x1.16 faster; without native bf16
(AVX2 only) oneDNN emulates it and it is slower than fp32. So the choice is measured once at load, per model, and
only where the hardware has bf16: both precisions are timed alternately on a probe image, and bf16 is kept when it
is faster and its output within ``min_psnr`` dB of fp32's. Elsewhere (GPUs included) ``auto`` means fp32, so a
published number never moves unless asked: ``--precision bf16`` forces it; ``eval`` stays fp32 unless told.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..metrics.psnr import psnr
from ..models import in_channels
from ..utils.device import autocast, time_alternately

__all__ = ["PrecisionChoice", "choose_precision", "cpu_has_native_bf16"]

_CPUINFO = Path("/proc/cpuinfo")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16(cpuinfo: Path = _CPUINFO) -> bool:
    """Whether this CPU computes in bfloat16 natively (the AVX512-BF16 or AMX-BF16 flags; Linux, x86-64).

    False where ``/proc/cpuinfo`` is missing (macOS, Windows) or other: the safe answer, as ``auto`` then stays fp32.
    """
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return any(flag in line.split() for flag in _NATIVE_BF16_FLAGS)
    return False


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` chose and why.

    Attributes:
        precision: ``fp32`` or ``bf16``.
        reason: one line for the user.
        speedup: fp32 time / bf16 time on the probe (None when not measured).
        psnr: PSNR (dB) of the bf16 output against the fp32 output on the probe (None when not measured).
    """

    precision: str
    reason: str
    speedup: float | None = None
    psnr: float | None = None


def _probe(channels: int, size: int) -> torch.Tensor:
    """A fixed (1, C, size, size) image in [0, 1]: smooth gradients plus fine noise, like a noisy photograph."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, size)
    smooth = (ramp[None, :, None] * 0.6 + ramp[None, None, :] * 0.3).expand(channels, size, size)
    return (smooth + 0.05 * torch.randn(channels, size, size, generator=g)).clamp(0, 1)[None]


def measure_bf16(model: nn.Module, size: int = 256, rounds: int = 2, repeats: int = 2) -> tuple[float, float]:
    """(fp32 time / bf16 time, PSNR of bf16 against fp32 in dB) for ``model`` on a size x size probe.

    Times the two precisions alternately ``rounds`` times (``repeats`` forwards each after a warm-up) and keeps the
    best of each, so background load hits both alike.
    """
    param = next(model.parameters())
    x = _probe(in_channels(model), size).to(param.device, param.dtype)
    outputs: dict[str, torch.Tensor] = {}

    def run(precision: str) -> None:
        with autocast(x.device, precision):
            outputs[precision] = model(x)

    with torch.inference_mode():
        best = time_alternately(run, ["fp32", "bf16"], device=x.device, rounds=rounds, repeats=repeats)
    fidelity = psnr(outputs["bf16"].float().clamp(0, 1), outputs["fp32"].float().clamp(0, 1), quantize=False).item()
    return best["fp32"] / best["bf16"], fidelity


def choose_precision(
    model: nn.Module, requested: str = "auto", *, min_psnr: float = 50.0, native_bf16: bool | None = None
) -> PrecisionChoice:
    """Resolve ``requested`` (``auto``, ``fp32``, ``bf16`` or ``fp16``) for ``model`` on its device.

    Args:
        model: the network as it will run (folded, on its device, in its memory format).
        requested: a precision name; only ``auto`` is decided here, the others are returned as given (their
            device check is :func:`~nafrestore.utils.device.resolve_precision`'s).
        min_psnr: the least PSNR (dB) of the bf16 output from the fp32 output on the probe for bf16 to be kept.
        native_bf16: whether the CPU has native bf16; None reads it (:func:`cpu_has_native_bf16`).
    """
    if requested != "auto":
        return PrecisionChoice(requested, f"precision {requested} (asked for)")
    device = next(model.parameters()).device
    if device.type != "cpu":
        return PrecisionChoice("fp32", f"precision fp32 (auto: measured only on a CPU, this model runs on {device})")
    if not (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
        return PrecisionChoice("fp32", "precision fp32 (auto: this CPU has no native bf16)")
    speedup, psnr = measure_bf16(model)
    measured = f"bf16 x{speedup:.2f} the speed of fp32 at {psnr:.1f} dB from its output on a probe"
    if psnr < min_psnr:
        return PrecisionChoice("fp32", f"precision fp32 (auto: {measured}, under {min_psnr:g} dB)", speedup, psnr)
    if speedup <= 1.05:
        return PrecisionChoice("fp32", f"precision fp32 (auto: {measured}, not faster)", speedup, psnr)
    return PrecisionChoice("bf16", f"precision bf16 (auto: {measured})", speedup, psnr)
