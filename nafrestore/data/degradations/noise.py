"""Additive noise models: white Gaussian noise and Poisson-Gaussian (shot plus read) sensor noise."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import DEGRADATIONS, Degradation, Param, _boolean, _finish

__all__ = ["GaussianNoise", "PoissonGaussianNoise"]


@DEGRADATIONS.register("gaussian_noise")
class GaussianNoise(Degradation):
    """Additive white Gaussian noise, the standard synthetic-denoising benchmark (sigma 15/25/50).

    Args:
        sigma: standard deviation on the 0-255 scale, fixed or ``[lo, hi]`` drawn per sample.
        clip: clip the result to [0, 1] (what a saved image would hold).
        quantize: round the result to 8-bit levels, as if the noisy image were saved as an 8-bit file.
            With ``clip`` and ``quantize`` the PSNR of sigma 25 noise is about 20.2-20.6 dB (20.17 without clipping).
    """

    def __init__(self, sigma: float | Sequence[float] = 25, clip: bool = True, quantize: bool = True) -> None:
        self.sigma = Param("sigma", sigma, low=0)
        self.clip = _boolean("clip", clip)
        self.quantize = _boolean("quantize", quantize)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = self.sigma.sample(rng) / 255.0
        noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
        return _finish(img + noise, self.clip, self.quantize)


@DEGRADATIONS.register("poisson_gaussian_noise")
class PoissonGaussianNoise(Degradation):
    """Signal-dependent shot noise plus Gaussian read noise, a simple model of a camera sensor.

    ``out = Poisson(img * peak) / peak + N(0, (sigma / 255)^2)``.

    Args:
        peak: photon count of a white pixel, fixed or ``[lo, hi]``; lower means noisier (e.g. 4-100).
        sigma: read-noise standard deviation on the 0-255 scale, fixed or ``[lo, hi]``.
        clip: clip the result to [0, 1].
        quantize: round the result to 8-bit levels.
    """

    def __init__(
        self,
        peak: float | Sequence[float] = 30,
        sigma: float | Sequence[float] = 2,
        clip: bool = True,
        quantize: bool = True,
    ) -> None:
        self.peak = Param("peak", peak, low=0, strict_low=True)
        self.sigma = Param("sigma", sigma, low=0)
        self.clip = _boolean("clip", clip)
        self.quantize = _boolean("quantize", quantize)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        peak = self.peak.sample(rng)
        sigma = self.sigma.sample(rng) / 255.0
        shot = rng.poisson(np.clip(img, 0.0, None).astype(np.float64) * peak).astype(np.float32) / np.float32(peak)
        read = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
        return _finish(shot + read, self.clip, self.quantize)
