"""The parts every degradation shares: the registry, the base class, the pipeline and the parameter types.

A degradation is a callable ``(img, rng) -> img`` on (H, W, 3) float32 RGB arrays in [0, 1] that draws all its
randomness from the ``numpy.random.Generator`` it is given, so the same generator state gives the same output bit
for bit. Parameters written ``[lo, hi]`` are drawn uniformly per call (per sample); a single number is fixed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...registry import Registry

__all__ = ["DEGRADATIONS", "Degradation", "Param", "Pipeline", "seed_for"]

DEGRADATIONS: Registry[Callable[..., Degradation]] = Registry("degradation")


def seed_for(name: str, base_seed: int) -> int:
    """A seed in [0, 2**63) fixed by an image name and a base seed, the same in every process and run.

    Uses SHA-256, not Python's ``hash()``, which is salted per process (PYTHONHASHSEED).
    """
    digest = hashlib.sha256(f"{int(base_seed)}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Degradation:
    """Base class: a callable ``(img, rng) -> img`` on (H, W, 3) float32 arrays in [0, 1]."""

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    @property
    def margin(self) -> int:
        """Pixels of context each output pixel reads on every side (a blur's kernel radius; 0 for pointwise steps).

        A training crop is cut this much larger, degraded and cropped back, so blur near its borders comes from
        real image content, not from reflected pixels.
        """
        return 0

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class Pipeline(Degradation):
    """Applies degradations in order; an empty pipeline returns a float32 copy of its input."""

    def __init__(self, steps: Sequence[Degradation]) -> None:
        self.steps = list(steps)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.array(img, dtype=np.float32, copy=True)
        for step in self.steps:
            out = step(out, rng)
        return out

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def margin(self) -> int:
        return sum(step.margin for step in self.steps)


# ----------------------------------------------------------------------------------------------------------------
# Parameters


class Param:
    """A fixed number or a ``[lo, hi]`` range drawn uniformly per call (integers for integer parameters).

    ``low``/``high`` bound both ends (``strict_low``: ``low`` itself excluded); ``why_high`` is the reason for the
    upper bound, added to the error message."""

    def __init__(
        self,
        name: str,
        value: Any,
        *,
        low: float,
        high: float | None = None,
        integer: bool = False,
        strict_low: bool = False,
        why_high: str = "",
    ) -> None:
        if isinstance(value, bool) or not (
            isinstance(value, int | float)
            or (
                isinstance(value, list | tuple)
                and len(value) == 2
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            )
        ):
            raise ValueError(f"{name} must be a number or a [low, high] range of numbers, got {value!r}")
        lo, hi = (value, value) if isinstance(value, int | float) else value
        if integer and (lo != int(lo) or hi != int(hi)):
            raise ValueError(f"{name} must be an integer or a range of integers, got {value!r}")
        if lo > hi:
            raise ValueError(f"{name} range [{lo}, {hi}] has low > high")
        if lo < low or (strict_low and lo == low) or (high is not None and hi > high):
            bound = f"{'>' if strict_low else '>='} {low}" + (f" and <= {high}" if high is not None else "")
            raise ValueError(f"{name} must be {bound}, got {value!r}" + (f": {why_high}" if why_high else ""))
        self.name = name
        self.lo, self.hi = (int(lo), int(hi)) if integer else (float(lo), float(hi))
        self.integer = integer

    @property
    def fixed(self) -> bool:
        return self.lo == self.hi

    def sample(self, rng: np.random.Generator) -> float:
        # Fixed values draw nothing, so adding a fixed parameter never shifts the random stream of later steps.
        if self.fixed:
            return self.lo
        if self.integer:
            return int(rng.integers(self.lo, self.hi + 1))
        return float(rng.uniform(self.lo, self.hi))

    def __repr__(self) -> str:
        return repr(self.lo) if self.fixed else repr([self.lo, self.hi])


def _finish(img: np.ndarray, clip: bool, quantize: bool) -> np.ndarray:
    if clip:
        img = np.clip(img, 0.0, 1.0)
    if quantize:
        img = np.rint(img * 255.0) / 255.0
    return img.astype(np.float32, copy=False)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def _number(name: str, value: Any, low: float | None = None, high: float | None = None) -> float:
    """A single finite number in [low, high] (a scalar setting, never a drawn range)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = " and ".join(b for b in (low is not None and f">= {low}", high is not None and f"<= {high}") if b)
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return float(value)
