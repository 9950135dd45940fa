"""Synthetic degradations: noise, blur and compression applied to clean images on the fly.

A degradation is built from a config mapping ``{type: <name>, **params}``; :func:`build_degradation` turns the
list ``data.degradations`` into a :class:`Pipeline` that applies them in order. Every degradation is a callable
``(img, rng) -> img`` on (H, W, 3) float32 RGB arrays in [0, 1] that draws all its randomness from the
``numpy.random.Generator`` it is given, so the same generator state gives the same output bit for bit. Parameters
written ``[lo, hi]`` are drawn uniformly per call (per sample); a single number is fixed.

Validation seeds each image's generator with :func:`seed_for` (a stable hash of its name), so validation inputs
are the same in every run, process and worker.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from ..errors import DataError
from ..registry import Registry

__all__ = [
    "DEGRADATIONS",
    "Degradation",
    "DefocusBlur",
    "GaussianBlur",
    "GaussianNoise",
    "Jpeg",
    "MotionBlur",
    "Pipeline",
    "PoissonGaussianNoise",
    "build_degradation",
    "defocus_kernel",
    "motion_kernel",
    "seed_for",
]

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


# ----------------------------------------------------------------------------------------------------------------
# Parameters


class Param:
    """A fixed number or a ``[lo, hi]`` range drawn uniformly per call (integers for integer parameters)."""

    def __init__(
        self,
        name: str,
        value: Any,
        *,
        low: float,
        high: float | None = None,
        integer: bool = False,
        strict_low: bool = False,
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
            raise ValueError(f"{name} must be {bound}, got {value!r}")
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


# ----------------------------------------------------------------------------------------------------------------
# Noise


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


# ----------------------------------------------------------------------------------------------------------------
# Blur


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """True convolution (filter2D correlates, so the kernel is flipped) with reflected borders, clipped to [0, 1]."""
    out = cv2.filter2D(
        img, -1, np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32), borderType=cv2.BORDER_REFLECT_101
    )
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def motion_kernel(
    rng: np.random.Generator, kernel_size: int = 21, length: float = 15.0, shake: float = 0.5, impulse: float = 0.5
) -> np.ndarray:
    """A camera-shake blur kernel: a random trajectory rasterised into a (k, k) float32 kernel summing to 1.

    The trajectory follows the spirit of Boracchi & Foi (2012), as used by DeblurGAN: a path of constant speed
    whose heading drifts by Gaussian steps (``shake`` scales them) and occasionally turns sharply (``impulse`` such
    turns expected along the path). It is drawn with sub-pixel (bilinear) splatting, then centred on its centre of
    mass so the blur does not shift the image relative to the sharp target, and shrunk if it would leave the
    kernel.

    Args:
        rng: randomness source.
        kernel_size: odd side of the kernel.
        length: path length in pixels.
        shake: heading noise, 0 (straight line) to about 1 (very curvy).
        impulse: expected number of abrupt turns (by about 180 degrees) along the path.
    """
    steps = max(32, int(math.ceil(4 * length)))  # ~4 points per pixel keeps the rasterised path continuous
    start = rng.uniform(0.0, 2 * math.pi)
    turns = rng.standard_normal(steps) * (shake * 2.5 / math.sqrt(steps))
    abrupt = rng.random(steps) < impulse / steps
    turns = turns + abrupt * (math.pi + rng.uniform(-0.5, 0.5, steps))
    heading = start + np.cumsum(turns)
    path = np.cumsum(np.exp(1j * heading)) * (length / steps)
    path = np.concatenate([[0j], path])
    path -= path.mean()
    centre = (kernel_size - 1) / 2
    reach = max(np.abs(path.real).max(), np.abs(path.imag).max())
    limit = centre - 1.0  # keep one pixel of margin for the bilinear footprint
    if reach > limit > 0:
        path *= limit / reach
    xs, ys = path.real + centre, path.imag + centre
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros((kernel_size, kernel_size), np.float64)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.clip(y0 + dy, 0, kernel_size - 1), np.clip(x0 + dx, 0, kernel_size - 1)), weight)
    return (kernel / kernel.sum()).astype(np.float32)


@DEGRADATIONS.register("motion_blur")
class MotionBlur(Degradation):
    """Camera-shake blur with a fresh random trajectory kernel per sample (see :func:`motion_kernel`).

    Args:
        kernel_size: odd kernel side in pixels (default 21); bounds the blur extent.
        length: trajectory length in pixels, fixed or ``[lo, hi]`` (default ``[kernel_size / 4, kernel_size]``).
        shake: trajectory curviness, fixed or ``[lo, hi]`` in [0, 2] (default ``[0, 1]``).
        impulse: expected number of abrupt turns along the trajectory, fixed or ``[lo, hi]`` in [0, 10]
            (default 0.5).
    """

    def __init__(
        self,
        kernel_size: int = 21,
        length: float | Sequence[float] | None = None,
        shake: float | Sequence[float] = (0.0, 1.0),
        impulse: float | Sequence[float] = 0.5,
    ) -> None:
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size!r}")
        self.kernel_size = kernel_size
        self.length = Param("length", [kernel_size / 4, float(kernel_size)] if length is None else length, low=0)
        self.shake = Param("shake", shake, low=0, high=2)
        self.impulse = Param("impulse", impulse, low=0, high=10)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kernel = motion_kernel(
            rng, self.kernel_size, self.length.sample(rng), self.shake.sample(rng), self.impulse.sample(rng)
        )
        return _convolve(img, kernel)


@DEGRADATIONS.register("gaussian_blur")
class GaussianBlur(Degradation):
    """Isotropic Gaussian blur; the kernel side is the odd number ``2 * ceil(3 * sigma) + 1`` (about 6 sigma).

    Args:
        sigma: standard deviation in pixels, fixed or ``[lo, hi]``; 0 leaves the image unchanged.
    """

    def __init__(self, sigma: float | Sequence[float] = 1.5) -> None:
        self.sigma = Param("sigma", sigma, low=0)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = self.sigma.sample(rng)
        if sigma <= 0:
            return img.astype(np.float32, copy=True)
        size = 2 * math.ceil(3 * sigma) + 1
        out = cv2.GaussianBlur(img, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def defocus_kernel(radius: float, supersample: int = 16) -> np.ndarray:
    """An antialiased disk (out-of-focus) kernel: each tap is the fraction of its pixel the disk covers.

    Returns:
        (k, k) float32 kernel summing to 1, ``k = 2 * (ceil(radius + 0.5) - 1) + 1``: just large enough for every
        pixel the disk touches.
    """
    half = max(0, math.ceil(radius + 0.5) - 1)
    size = 2 * half + 1
    # Sub-pixel sample centres: supersample x supersample points inside each pixel.
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = (np.arange(size) - half)[:, None] + offsets[None, :]
    yy, xx = grid.reshape(-1)[:, None], grid.reshape(-1)[None, :]
    inside = (yy**2 + xx**2 <= radius**2).astype(np.float64)
    coverage = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    if coverage.sum() == 0:  # radius far below a pixel: no blur
        coverage[half, half] = 1.0
    return (coverage / coverage.sum()).astype(np.float32)


@DEGRADATIONS.register("defocus_blur")
class DefocusBlur(Degradation):
    """Out-of-focus blur: convolution with an antialiased disk (see :func:`defocus_kernel`).

    Args:
        radius: disk radius in pixels, fixed or ``[lo, hi]``.
    """

    def __init__(self, radius: float | Sequence[float] = 3.0) -> None:
        self.radius = Param("radius", radius, low=0, strict_low=True)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _convolve(img, defocus_kernel(self.radius.sample(rng)))


# ----------------------------------------------------------------------------------------------------------------
# Compression


@DEGRADATIONS.register("jpeg")
class Jpeg(Degradation):
    """JPEG compression artefacts: encode and decode as an 8-bit JPEG with OpenCV (libjpeg, 4:2:0 chroma).

    Args:
        quality: JPEG quality 1-100, fixed or ``[lo, hi]`` (integers, both ends included).
    """

    def __init__(self, quality: int | Sequence[int] = 50) -> None:
        self.quality = Param("quality", quality, low=1, high=100, integer=True)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        quality = int(self.quality.sample(rng))
        bgr = np.rint(np.clip(img[:, :, ::-1], 0.0, 1.0) * 255.0).astype(np.uint8)  # RGB -> BGR for OpenCV
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - libjpeg does not fail on valid 8-bit input
            raise RuntimeError("OpenCV failed to JPEG-encode an image")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        return np.ascontiguousarray(decoded[:, :, ::-1]).astype(np.float32) * np.float32(1 / 255)


# ----------------------------------------------------------------------------------------------------------------
# Building from config


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def build_degradation(specs: Sequence[Mapping[str, Any]] | None, *, key: str = "data.degradations") -> Pipeline:
    """Builds the pipeline described by a list of ``{type: name, **params}`` mappings, applied in order.

    Args:
        specs: e.g. ``[{"type": "motion_blur", "kernel_size": 31}, {"type": "gaussian_noise", "sigma": [0, 10]}]``.
            None or empty gives an identity pipeline.
        key: the config key the list came from, used in error messages.

    Returns:
        A :class:`Pipeline`, callable as ``pipeline(img, rng)`` on (H, W, 3) float32 arrays in [0, 1].

    Raises:
        DataError: an entry is not a mapping, names an unknown type or parameter (with a did-you-mean and the
            valid names), or has a bad value; the message names ``key[i]``.
    """
    steps: list[Degradation] = []
    for i, spec in enumerate(specs or []):
        where = f"{key}[{i}]"
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise DataError(
                f"{where} must be a mapping with a `type` key, e.g. {{type: gaussian_noise, sigma: 25}}; got "
                f"{spec!r}. Valid types: {', '.join(DEGRADATIONS.names())}."
            )
        kind = spec["type"]
        if not isinstance(kind, str) or kind not in DEGRADATIONS:
            close = difflib.get_close_matches(str(kind), DEGRADATIONS.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"{where} has unknown degradation type {kind!r}.{hint} Valid types: {', '.join(DEGRADATIONS.names())}."
            )
        factory = DEGRADATIONS.get(kind)
        valid = [p for p in inspect.signature(factory).parameters if p != "self"]
        params = {k: v for k, v in spec.items() if k != "type"}
        for name in params:
            if name not in valid:
                close = difflib.get_close_matches(str(name), valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise DataError(
                    f"{where} ({kind}) has unknown parameter {name!r}.{hint} "
                    f"Valid parameters of {kind}: {', '.join(valid) or 'none'}."
                )
        try:
            steps.append(factory(**params))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where} ({kind}): {exc}. Valid parameters of {kind}: {', '.join(valid)}.") from exc
    return Pipeline(steps)
