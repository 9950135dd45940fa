"""Synthetic degradations: noise, blur and compression applied to clean images on the fly.

A degradation is built from a config mapping ``{type: <name>, **params}``; :func:`build_degradation` turns the
list ``data.degradations`` into a :class:`Pipeline` that applies them in order. Any mapping may carry ``p``, the
probability of applying it, and ``one_of`` picks one of several nested pipelines per sample, so one config can
mix noise models (camera noise, Poisson-Gaussian, Gaussian, JPEG) and blur (camera shake) with noise on top.
Every degradation is a callable ``(img, rng) -> img`` on (H, W, 3) float32 RGB arrays in [0, 1] that draws all
its randomness from the ``numpy.random.Generator`` it is given, so the same generator state gives the same output
bit for bit. Parameters written ``[lo, hi]`` are drawn uniformly per call (per sample); a single number is fixed.

Validation seeds each image's generator with :func:`seed_for` (a stable hash of its name), so validation inputs
are the same in every run, process and worker.

The package is split by kind: :mod:`.base` (registry, base class, parameters), :mod:`.noise`, :mod:`.camera`,
:mod:`.blur`, :mod:`.compression` and :mod:`.composition` (``p``, ``one_of`` and the builder). Importing the
package registers every type.
"""

from __future__ import annotations

from .base import DEGRADATIONS, Degradation, Param, Pipeline, seed_for
from .blur import (
    CameraShake,
    DefocusBlur,
    GaussianBlur,
    MotionBlur,
    defocus_kernel,
    from_linear,
    motion_kernel,
    shake_kernel,
    shake_trajectory,
    to_linear,
)
from .camera import BAYER_PATTERNS, CameraNoise, CameraParams, demosaic, mosaic, process, unprocess
from .composition import OneOf, RandomApply, build_degradation
from .compression import Jpeg
from .noise import GaussianNoise, PoissonGaussianNoise

__all__ = [
    "BAYER_PATTERNS",
    "DEGRADATIONS",
    "CameraNoise",
    "CameraParams",
    "CameraShake",
    "Degradation",
    "DefocusBlur",
    "GaussianBlur",
    "GaussianNoise",
    "Jpeg",
    "MotionBlur",
    "OneOf",
    "Param",
    "Pipeline",
    "PoissonGaussianNoise",
    "RandomApply",
    "build_degradation",
    "defocus_kernel",
    "demosaic",
    "from_linear",
    "mosaic",
    "motion_kernel",
    "process",
    "seed_for",
    "shake_kernel",
    "shake_trajectory",
    "to_linear",
    "unprocess",
]
