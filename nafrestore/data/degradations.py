"""Synthetic degradations: noise, blur and compression applied to clean images on the fly.

A degradation is built from a config mapping ``{type: <name>, **params}``; :func:`build_degradation` turns the
list ``data.degradations`` into a :class:`Pipeline` that applies them in order. Any mapping may carry ``p``, the
probability of applying it, and ``one_of`` picks one of several nested pipelines per sample, so one config can
mix noise models (camera noise, Poisson-Gaussian, Gaussian, JPEG). Every degradation is a callable
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
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import DataError
from ..registry import Registry

__all__ = [
    "BAYER_PATTERNS",
    "DEGRADATIONS",
    "CameraNoise",
    "CameraParams",
    "Degradation",
    "DefocusBlur",
    "GaussianBlur",
    "GaussianNoise",
    "Jpeg",
    "MotionBlur",
    "OneOf",
    "Pipeline",
    "PoissonGaussianNoise",
    "RandomApply",
    "build_degradation",
    "defocus_kernel",
    "demosaic",
    "mosaic",
    "motion_kernel",
    "process",
    "seed_for",
    "unprocess",
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
# Camera noise: an invertible camera pipeline (Brooks et al., CVPR 2019)

# XYZ -> camera colour matrices of the four cameras of the Darmstadt Noise Dataset, as in Brooks et al.'s code
# (google-research/unprocessing/unprocess.py, ``random_ccm``).
XYZ2CAMS = np.array(
    [
        [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469], [-0.0703, 0.2188, 0.6406]],
        [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906], [-0.1564, 0.2151, 0.7183]],
        [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496], [-0.0627, 0.1427, 0.5438]],
        [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933], [-0.0970, 0.1581, 0.5181]],
    ]
)
# Linear sRGB (D65) -> XYZ.
RGB2XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
# Channel (0 R, 1 G, 2 B) of the photosites at (0, 0), (0, 1), (1, 0), (1, 1) of each 2x2 Bayer cell.
BAYER_PATTERNS: dict[str, tuple[int, int, int, int]] = {
    "RGGB": (0, 1, 1, 2),
    "BGGR": (2, 1, 1, 0),
    "GRBG": (1, 0, 2, 1),
    "GBRG": (1, 2, 0, 1),
}
_CELL = ((0, 0), (0, 1), (1, 0), (1, 1))
# Bilinear demosaicing kernels applied to a colour plane that is zero off its own photosites: red and blue sites
# form a rectangular lattice (average of 2 or 4 neighbours), green sites a quincunx (average of 4).
_KERNEL_RB = np.array([[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]], np.float32)
_KERNEL_G = np.array([[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]], np.float32)
# Pixels of simulated sensor around the image (see CameraNoise.__call__); even, so the Bayer phase is unchanged.
_SENSOR_MARGIN = 2
# Brooks's safe_invert_gains: pixels whose mean (linear, camera space) exceeds this get inverse gains blended
# towards 1, so saturated highlights are not dimmed and come back saturated.
_HIGHLIGHT_INFLECTION = 0.9


@dataclass(frozen=True)
class CameraParams:
    """One draw of the camera metadata of :class:`CameraNoise` (one image's ISP settings).

    Attributes:
        rgb2cam: (3, 3) float32 matrix, linear sRGB -> camera RGB; rows sum to 1 so grey stays grey.
        rgb_gain: the ISP's brightening gain (> 0); the raw image is ``1 / rgb_gain`` times darker.
        red_gain: red white-balance gain (> 0), applied by the ISP on top of ``rgb_gain``.
        blue_gain: blue white-balance gain (> 0).
    """

    rgb2cam: np.ndarray
    rgb_gain: float
    red_gain: float
    blue_gain: float

    @property
    def gains(self) -> np.ndarray:
        """(3,) float32 per-channel gains the ISP applies to camera RGB: white balance times brightening."""
        return np.array([self.red_gain, 1.0, self.blue_gain], np.float32) * np.float32(self.rgb_gain)


def _check_bayer(pattern: str) -> tuple[int, int, int, int]:
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"bayer pattern must be one of {', '.join(BAYER_PATTERNS)}, got {pattern!r}")
    return BAYER_PATTERNS[pattern]


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse smoothstep tone curve then inverse gamma 2.2: (H, W, 3) float32 in [0, 1] -> linear."""
    # Camera noise usually comes first on a crop of an 8-bit file, so the input lies on 8-bit levels: then a
    # 256-entry table (computed in float64, so at least as accurate) replaces arcsin, sin and pow, which take
    # about 40% of a 256x256 call. Within 1e-3 of a level counts as on a level (float32 k/255 is ~1e-5 off).
    levels = x * np.float32(255.0)
    index = np.rint(levels)
    if np.abs(levels - index).max() < 1e-3:
        return cv2.LUT(index.astype(np.uint8), _LINEAR_LUT)
    # Inverse of smoothstep 3y^2 - 2y^3 on [0, 1] (the closed form of the cubic's middle root).
    y = np.float32(0.5) - np.sin(np.arcsin(np.float32(1.0) - np.float32(2.0) * x) / np.float32(3.0))
    return cv2.pow(np.maximum(y, np.float32(1e-8)), 2.2)  # cv2.pow: 5x numpy's ** on float32


def _linear_lut() -> np.ndarray:
    y = 0.5 - np.sin(np.arcsin(1.0 - 2.0 * np.arange(256) / 255.0) / 3.0)
    return (np.maximum(y, 1e-8) ** 2.2).astype(np.float32)


_LINEAR_LUT = _linear_lut()


def unprocess(img: np.ndarray, params: CameraParams) -> np.ndarray:
    """Inverts a simple camera ISP: sRGB -> linear camera RGB before white balance (Brooks et al., 2019).

    Inverse tone curve (smoothstep), inverse gamma (2.2), inverse colour correction (``rgb2cam``), then inverse
    white balance and brightening with Brooks's ``safe_invert_gains`` highlight handling, clipped to [0, 1].

    Args:
        img: (H, W, 3) sRGB in [0, 1] (values outside are clipped).
        params: the camera draw, e.g. from :meth:`CameraNoise.draw_params`.

    Returns:
        (H, W, 3) float32 linear camera RGB in [0, 1]. :func:`process` maps it back to ``img`` to float precision
        wherever nothing was clipped: colours inside the camera gamut and mean linear camera value below 0.9.
    """
    x = _srgb_to_linear(np.clip(np.asarray(img, np.float32), 0.0, 1.0))
    rgb2cam = params.rgb2cam.astype(np.float32)
    inverse = np.float32(1.0) / params.gains
    # cv2.transform applies a per-pixel matrix 10x faster than numpy's batched matmul on (H, W, 3).
    out = cv2.transform(x, inverse[:, None] * rgb2cam)
    # safe_invert_gains: where the camera-space mean exceeds the inflection, blend the gains towards 1 (never
    # below the plain inverse gains). Only those few highlight pixels are recomputed.
    gray = cv2.transform(x, rgb2cam.mean(axis=0, keepdims=True))
    bright = gray > _HIGHLIGHT_INFLECTION
    if bright.any():
        mask = np.square((gray[bright] - _HIGHLIGHT_INFLECTION) / (1.0 - _HIGHLIGHT_INFLECTION))[:, None]
        safe = np.maximum(mask + (1.0 - mask) * inverse, inverse)
        out[bright] = (x[bright] @ rgb2cam.T) * safe
    return np.clip(out, 0.0, 1.0)


def process(img: np.ndarray, params: CameraParams, bayer: str | None = None) -> np.ndarray:
    """A simple camera ISP: linear camera RGB (or a Bayer mosaic) -> sRGB; the inverse of :func:`unprocess`.

    White balance and brightening (``params.gains``), clip, bilinear demosaicing (mosaics only), colour
    correction (inverse of ``rgb2cam``), clip, gamma 1/2.2, smoothstep tone curve. Brooks et al.'s ``process``
    stops before brightening and the tone curve because their loss compares raw-processed images; here the
    target is the original sRGB image, so both are applied to land on it.

    Args:
        img: (H, W, 3) linear camera RGB, or an (H, W) Bayer mosaic when ``bayer`` is given.
        params: the camera draw used to unprocess.
        bayer: the mosaic's pattern (see ``BAYER_PATTERNS``), or None for (H, W, 3) input.

    Returns:
        (H, W, 3) float32 sRGB in [0, 1], not quantised.
    """
    gains = params.gains
    cam2rgb = np.linalg.inv(params.rgb2cam.astype(np.float64)).astype(np.float32)
    if bayer is None:
        rgb = np.clip(np.asarray(img, np.float32) * gains, 0.0, 1.0)
    else:
        raw = np.array(img, np.float32, copy=True)
        for (dy, dx), c in zip(_CELL, _check_bayer(bayer), strict=True):
            raw[dy::2, dx::2] *= gains[c]
        # Clip before demosaicing, as a camera clips at its white and black levels before interpolating.
        rgb = demosaic(np.clip(raw, 0.0, 1.0), bayer)
    rgb = np.clip(cv2.transform(rgb, cam2rgb), np.float32(1e-8), 1.0)
    rgb = cv2.pow(rgb, 1 / 2.2)
    return rgb * rgb * (np.float32(3.0) - np.float32(2.0) * rgb)


def mosaic(img: np.ndarray, bayer: str = "RGGB") -> np.ndarray:
    """Samples an RGB image on a Bayer colour filter array: one colour per pixel.

    Args:
        img: (H, W, 3) array (any size, odd included).
        bayer: pattern of the 2x2 cell starting at the top-left pixel (see ``BAYER_PATTERNS``).

    Returns:
        (H, W) float32 mosaic.
    """
    out = np.empty(img.shape[:2], np.float32)
    for (dy, dx), c in zip(_CELL, _check_bayer(bayer), strict=True):
        out[dy::2, dx::2] = img[dy::2, dx::2, c]
    return out


def demosaic(raw: np.ndarray, bayer: str = "RGGB") -> np.ndarray:
    """Bilinear demosaicing: each missing colour is the mean of its nearest photosites of that colour.

    Done here in float32 with ``cv2.filter2D`` rather than OpenCV's ``cvtColor(..., COLOR_Bayer*2RGB)``, which
    needs 8- or 16-bit input (a requantisation of the noisy linear signal), names its patterns by the second
    row (an RGGB mosaic is ``COLOR_BayerBG2RGB``), and fills the outermost pixels by copying their neighbours.
    Reflect-101 borders mirror about the edge pixel, which keeps the Bayer parity of every mirrored photosite,
    so edges and odd sizes are interpolated like the interior.

    Args:
        raw: (H, W) mosaic, as from :func:`mosaic`.
        bayer: its pattern (see ``BAYER_PATTERNS``).

    Returns:
        (H, W, 3) float32 RGB; exact at each pixel's own photosite and on any image linear in x and y away from
        the one-pixel border.
    """
    raw = np.asarray(raw, np.float32)
    planes = np.zeros((3, *raw.shape), np.float32)
    for (dy, dx), c in zip(_CELL, _check_bayer(bayer), strict=True):
        planes[c, dy::2, dx::2] = raw[dy::2, dx::2]
    out = [
        cv2.filter2D(planes[c], -1, _KERNEL_G if c == 1 else _KERNEL_RB, borderType=cv2.BORDER_REFLECT_101)
        for c in range(3)
    ]
    return np.stack(out, axis=2)


@DEGRADATIONS.register("camera_noise")
class CameraNoise(Degradation):
    """Real-camera noise by unprocessing: sRGB -> raw, shot and read noise on the Bayer mosaic, raw -> sRGB.

    Brooks, Mildenhall, Xue, Chen, Sharlet, Barron, "Unprocessing Images for Learned Raw Denoising", CVPR 2019
    (constants from their code, google-research ``unprocessing/``). Each call draws a camera (a random convex
    combination of four cameras' colour matrices, white-balance gains, an exposure), inverts the ISP with
    :func:`unprocess`, samples an RGGB (or other) Bayer mosaic, adds heteroscedastic Gaussian noise of variance
    ``shot * x + read`` per photosite, and runs the ISP forward (:func:`process`: white balance, bilinear
    demosaicing, colour correction, gamma, tone curve), then quantises to 8 bits. The noise is therefore
    signal-dependent, spatially correlated by demosaicing and coloured by the colour matrix, like a camera
    JPEG's before compression. Only the degraded input takes this path; the clean target stays the sRGB image.

    By default only the noise is carried over: the input is the clean image plus ``process(noisy raw) -
    process(clean raw)``. The round trip through a bilinear demosaic is itself lossy (zipper and false colour on
    edges: 20 to 39 dB on the sample photographs with no noise at all), and with the original sRGB image as the
    target a model trained on the full round trip mostly learns to undo bilinear-demosaicing artefacts that real
    cameras do not make (bench/real-noise-recipes.md). ``pipeline_error: true`` keeps them.

    Cameras also denoise before they write a JPEG, which removes the fine grain and leaves low-frequency,
    mostly luminance blotches (on the PolyU pairs neighbouring pixels' noise is 0.6-0.7 correlated, still 0.2-0.3
    four pixels apart, and luma noise 1.5-2x chroma noise). ``noise_reduction`` models that as a Gaussian
    low-pass of the noise with a drawn width, and ``chroma_noise_reduction`` as a stronger one on its chroma.

    Noise levels follow Brooks's log-log fit to the Darmstadt cameras: ``log shot ~ U(log lo, log hi)`` and
    ``log read = slope * log shot + intercept + N(0, jitter^2)``.

    Args:
        shot_noise: shot-noise variance per unit linear signal, fixed or ``[lo, hi]`` drawn log-uniformly;
            default ``[1e-4, 1.2e-2]`` (Brooks: about 3 to 38 8-bit levels of noise std at mid-grey). A range
            needs ``lo > 0`` (log-uniform); ``lo = 1e-5`` reaches about 1 level, almost clean, so a blind model
            also learns to leave clean photographs alone. ``0`` turns shot and read noise off (the camera
            pipeline round trip only); mix in exactly clean samples with ``p`` or a ``one_of`` branch ``[]``.
        read_noise_slope: slope of log read noise against log shot noise (default 2.18).
        read_noise_intercept: intercept of that line (default 1.20).
        read_noise_jitter: standard deviation of the Gaussian added to log read noise (default 0.26).
        exposure_mean: mean of the exposure ``e ~ N(mean, std)``, clipped to [0.1, 1]: the raw image is ``e``
            times darker than the sRGB one and the ISP brightens it back by ``1 / e`` (Brooks's ``rgb_gain``),
            so a lower exposure means relatively more noise (default 0.8). The clip at 1 (Brooks has none)
            keeps unprocessing from clipping highlights that the sRGB target keeps.
        exposure_std: its standard deviation (default 0.1; 0 fixes it).
        red_gain: red white-balance gain, fixed or ``[lo, hi]`` (default ``[1.9, 2.4]``).
        blue_gain: blue white-balance gain, fixed or ``[lo, hi]`` (default ``[1.5, 1.9]``).
        color_correction: draw a camera colour matrix (default); false uses the identity, so the noise of the
            three channels stays uncorrelated.
        bayer: colour filter pattern, ``RGGB`` (default), ``BGGR``, ``GRBG`` or ``GBRG``, or a list of them to
            draw from per sample (a crop may start on any photosite).
        quantize: round the result to 8-bit levels, as a camera JPEG or PNG would hold it (default true).
        pipeline_error: keep the ISP round trip's own error (bilinear-demosaicing artefacts) in the input, not
            just the noise (default false; see above).
        noise_reduction: standard deviation in pixels of the Gaussian low-pass applied to the noise, fixed or
            ``[lo, hi]`` drawn uniformly; 0 (the default) keeps the demosaiced noise as it is. Needs
            ``pipeline_error: false``.
        chroma_noise_reduction: the low-pass's standard deviation for the noise's chroma (each channel minus the
            mean of the three), fixed or ``[lo, hi]``; defaults to ``noise_reduction``'s.
    """

    def __init__(
        self,
        shot_noise: float | Sequence[float] = (1e-4, 1.2e-2),
        read_noise_slope: float = 2.18,
        read_noise_intercept: float = 1.20,
        read_noise_jitter: float = 0.26,
        exposure_mean: float = 0.8,
        exposure_std: float = 0.1,
        red_gain: float | Sequence[float] = (1.9, 2.4),
        blue_gain: float | Sequence[float] = (1.5, 1.9),
        color_correction: bool = True,
        bayer: str | Sequence[str] = "RGGB",
        quantize: bool = True,
        pipeline_error: bool = False,
        noise_reduction: float | Sequence[float] = 0.0,
        chroma_noise_reduction: float | Sequence[float] | None = None,
    ) -> None:
        self.shot_noise = Param("shot_noise", shot_noise, low=0, high=1)
        if not self.shot_noise.fixed and self.shot_noise.lo == 0:
            raise ValueError(
                f"shot_noise range {list(shot_noise)!r} needs a low > 0: it is drawn log-uniformly (Brooks et al.); "
                "use e.g. [1e-5, 0.012] to reach almost clean inputs, and `shot_noise: 0`, `p` or a `one_of` "
                "branch for exactly clean ones"
            )
        self.read_noise_slope = _number("read_noise_slope", read_noise_slope, low=0)
        self.read_noise_intercept = _number("read_noise_intercept", read_noise_intercept)
        self.read_noise_jitter = _number("read_noise_jitter", read_noise_jitter, low=0)
        self.exposure_mean = _number("exposure_mean", exposure_mean, low=0.1, high=1)
        self.exposure_std = _number("exposure_std", exposure_std, low=0)
        self.red_gain = Param("red_gain", red_gain, low=0, strict_low=True)
        self.blue_gain = Param("blue_gain", blue_gain, low=0, strict_low=True)
        self.color_correction = _boolean("color_correction", color_correction)
        patterns = [bayer] if isinstance(bayer, str) else bayer
        if not isinstance(patterns, list | tuple) or not patterns or not all(isinstance(b, str) for b in patterns):
            raise ValueError(f"bayer must be a pattern name or a non-empty list of them, got {bayer!r}")
        for pattern in patterns:
            _check_bayer(pattern)
        self.bayer = bayer if isinstance(bayer, str) else list(bayer)
        self._patterns = list(patterns)
        self.quantize = _boolean("quantize", quantize)
        self.pipeline_error = _boolean("pipeline_error", pipeline_error)
        self.noise_reduction = Param("noise_reduction", noise_reduction, low=0, high=10)
        self.chroma_noise_reduction = (
            None
            if chroma_noise_reduction is None
            else Param("chroma_noise_reduction", chroma_noise_reduction, low=0, high=10)
        )
        if self.pipeline_error and (self.noise_reduction.hi > 0 or chroma_noise_reduction is not None):
            raise ValueError(
                "noise_reduction and chroma_noise_reduction filter the noise alone, which needs pipeline_error: "
                "false (the default)"
            )
        self._rgb2cams = XYZ2CAMS @ RGB2XYZ  # (4, 3, 3): each camera's linear sRGB -> camera matrix

    def draw_params(self, rng: np.random.Generator) -> CameraParams:
        """Draws one camera: colour matrix, exposure and white-balance gains (Brooks's ``random_ccm``/``_gains``)."""
        if self.color_correction:
            # A convex combination of the cameras' XYZ -> camera matrices; as XYZ -> camera is linear in it,
            # combining the RGB -> camera products is the same. Rows are normalised so grey maps to grey.
            weights = rng.uniform(1e-8, 1.0, len(self._rgb2cams))
            rgb2cam = np.tensordot(weights / weights.sum(), self._rgb2cams, axes=1)
            rgb2cam /= rgb2cam.sum(axis=1, keepdims=True)
        else:
            rgb2cam = np.eye(3)
        exposure = self.exposure_mean
        if self.exposure_std > 0:
            exposure = float(np.clip(rng.normal(self.exposure_mean, self.exposure_std), 0.1, 1.0))
        return CameraParams(
            rgb2cam=rgb2cam.astype(np.float32),
            rgb_gain=1.0 / exposure,
            red_gain=self.red_gain.sample(rng),
            blue_gain=self.blue_gain.sample(rng),
        )

    def draw_noise_levels(self, rng: np.random.Generator) -> tuple[float, float]:
        """Draws ``(shot, read)`` variances on the log-log line (Brooks's ``random_noise_levels``); (0, 0) if off."""
        if self.shot_noise.fixed:
            shot = self.shot_noise.lo
        else:
            shot = math.exp(rng.uniform(math.log(self.shot_noise.lo), math.log(self.shot_noise.hi)))
        if shot == 0:
            return 0.0, 0.0  # the log-log line sends read noise to 0 with shot noise
        log_read = self.read_noise_slope * math.log(shot) + self.read_noise_intercept
        if self.read_noise_jitter > 0:
            log_read += rng.normal(0.0, self.read_noise_jitter)
        return shot, math.exp(log_read)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        params = self.draw_params(rng)
        shot, read = self.draw_noise_levels(rng)
        pattern = (
            self._patterns[int(rng.integers(len(self._patterns)))] if len(self._patterns) > 1 else self._patterns[0]
        )
        # A sensor is larger than the crop: simulate a 2-pixel margin (mirrored image content, its own noise) so
        # border pixels are demosaiced from photosites on both sides, halving the border error of mirroring the
        # mosaic itself; an even margin keeps the crop's Bayer phase.
        m = _SENSOR_MARGIN
        linear = cv2.copyMakeBorder(unprocess(img, params), m, m, m, m, cv2.BORDER_REFLECT)
        raw = mosaic(linear, pattern)
        noise = np.zeros_like(raw)
        if shot > 0 or read > 0:
            std = np.sqrt(raw * np.float32(shot) + np.float32(read))
            noise = rng.standard_normal(raw.shape, dtype=np.float32) * std
        if self.pipeline_error:
            out = process(raw + noise, params, pattern)[m:-m, m:-m]
        else:
            # Half the difference of the two antithetic draws raw + n and raw - n: the noise as the ISP shapes it
            # (signal-dependent, demosaiced, colour-corrected), but zero-mean. The plain difference with the clean
            # ISP output is biased where the black-level clip and the concave gamma bend it (shadows come out up
            # to 2 levels darker on average at moderate noise), and a model trained on that brightens the shadows
            # of real photographs, whose noise is within a level of zero-mean at every brightness (PolyU).
            noise = (process(raw + noise, params, pattern) - process(raw - noise, params, pattern)) / np.float32(2.0)
            out = np.asarray(img, np.float32) + self._reduce_noise(noise, rng)[m:-m, m:-m]
        return _finish(np.ascontiguousarray(out), clip=True, quantize=self.quantize)

    def _reduce_noise(self, noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The camera's noise reduction on an (H, W, 3) sRGB noise field: Gaussian low-passes of luma and chroma."""
        sigma = self.noise_reduction.sample(rng)
        chroma_sigma = sigma if self.chroma_noise_reduction is None else self.chroma_noise_reduction.sample(rng)
        if sigma == 0 and chroma_sigma == 0:
            return noise
        luma = noise.mean(axis=2, keepdims=True)
        chroma = noise - luma

        def low_pass(x: np.ndarray, s: float) -> np.ndarray:
            if s == 0:
                return x
            out = cv2.GaussianBlur(x, (0, 0), s, borderType=cv2.BORDER_REFLECT_101)
            return out.reshape(x.shape)  # GaussianBlur drops a trailing axis of size 1

        return low_pass(luma, sigma) + low_pass(chroma, chroma_sigma)


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
# Mixing: random application and random choice


class RandomApply(Degradation):
    """Applies a degradation with probability ``p``, else returns a copy of the input (the ``p`` config key).

    The decision takes one ``rng.random()`` draw from the sample's own generator, before the step's own draws;
    ``p`` of 0 or 1 draws nothing, so ``p: 1`` is the same as no ``p``.
    """

    def __init__(self, step: Degradation, p: float) -> None:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"p, the probability of applying the step, must be a number in [0, 1], got {p!r}")
        self.step = step
        self.p = float(p)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.p >= 1 or (self.p > 0 and rng.random() < self.p):
            return self.step(img, rng)
        return np.array(img, dtype=np.float32, copy=True)


@DEGRADATIONS.register("one_of")
class OneOf(Degradation):
    """Applies one of several pipelines, picked per sample with the given probabilities.

    One config can thus train on several noise models at once, e.g. camera noise for 60% of the samples,
    Poisson-Gaussian for 20%, and Gaussian then JPEG for the rest; an empty pipeline ``[]`` leaves the sample
    clean. ``shuffle`` applies the chosen pipeline's steps in a random order, BSRGAN's shuffled degradation
    model (Zhang et al., ICCV 2021); a single pipeline with ``shuffle: true`` is a randomly ordered pipeline.

    Args:
        pipelines: non-empty list of pipelines, each a list of degradation specs (``[]`` for none) or, from
            Python, built :class:`Degradation` objects.
        weights: one non-negative number per pipeline, normalised to probabilities (``[0.6, 0.2, 0.2]``,
            ``[3, 1, 1]``); default equal. These are not ``p``, which any step (``one_of`` included) may carry as
            the probability of applying it at all.
        shuffle: apply the chosen pipeline's steps in a random order.
    """

    def __init__(
        self,
        pipelines: Sequence[Sequence[Mapping[str, Any]] | Degradation],
        weights: Sequence[float] | None = None,
        shuffle: bool = False,
    ) -> None:
        if isinstance(pipelines, str | Mapping) or not isinstance(pipelines, Sequence) or not pipelines:
            raise ValueError(
                "pipelines must be a non-empty list of pipelines, each a list of degradations ([] for none), "
                f"got {pipelines!r}"
            )
        self.pipelines = [
            branch if isinstance(branch, Degradation) else build_degradation(branch, key=f"pipelines[{j}]")
            for j, branch in enumerate(pipelines)
        ]
        if weights is None:
            weights = [1.0] * len(self.pipelines)
        if (
            isinstance(weights, str | Mapping)
            or not isinstance(weights, Sequence)
            or len(weights) != len(self.pipelines)
            or not all(isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w < math.inf for w in weights)
            or sum(weights) <= 0
        ):
            raise ValueError(
                f"weights must be a list of {len(self.pipelines)} non-negative numbers (one per pipeline, not all "
                f"zero), got {weights!r}"
            )
        self.weights = [float(w) for w in weights]
        self.shuffle = _boolean("shuffle", shuffle)
        cumulative = np.cumsum(self.weights)
        self._cumulative = cumulative / cumulative[-1]  # ends at exactly 1, also after trailing zero weights

    @property
    def probabilities(self) -> list[float]:
        """The probability of each pipeline (the normalised weights)."""
        return [w / sum(self.weights) for w in self.weights]

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        # One uniform draw against the cumulative probabilities (searchsorted never picks a zero-weight branch);
        # a single pipeline draws nothing.
        j = (
            0
            if len(self.pipelines) == 1
            else min(int(np.searchsorted(self._cumulative, rng.random(), "right")), len(self.pipelines) - 1)
        )
        branch = self.pipelines[j]
        if self.shuffle and isinstance(branch, Pipeline) and len(branch) > 1:
            branch = Pipeline([branch.steps[k] for k in rng.permutation(len(branch))])
        return branch(img, rng)


# ----------------------------------------------------------------------------------------------------------------
# Building from config


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


_ONE_OF_EXAMPLE = (
    "{type: one_of, weights: [0.7, 0.3], pipelines: [[{type: camera_noise}], "
    "[{type: gaussian_noise, sigma: [0, 50]}, {type: jpeg, quality: [30, 95]}]]}"
)


def _build_branches(value: Any, where: str) -> list[Pipeline]:
    """Builds ``one_of``'s ``pipelines`` (a list of lists of specs), naming ``where[j][i]`` in errors."""
    if isinstance(value, str | Mapping) or not isinstance(value, Sequence) or not value:
        raise DataError(
            f"{where} must be a non-empty list of pipelines, each a list of degradations ([] for none), e.g. "
            f"{_ONE_OF_EXAMPLE}; got {value!r}."
        )
    branches = []
    for j, branch in enumerate(value):
        if isinstance(branch, str | Mapping) or not isinstance(branch, Sequence):
            raise DataError(
                f"{where}[{j}] must be a list of degradations ([] for none), e.g. "
                f"[{{type: gaussian_noise, sigma: 25}}, {{type: jpeg, quality: 50}}]; got {branch!r}."
            )
        branches.append(build_degradation(branch, key=f"{where}[{j}]"))
    return branches


def build_degradation(specs: Sequence[Mapping[str, Any]] | None, *, key: str = "data.degradations") -> Pipeline:
    """Builds the pipeline described by a list of ``{type: name, **params}`` mappings, applied in order.

    Any mapping may also carry ``p``, the probability (in [0, 1]) of applying that step to a sample; ``one_of``
    nests pipelines (``{type: one_of, weights: [...], pipelines: [[...], [...]]}``), built recursively.

    Args:
        specs: e.g. ``[{"type": "motion_blur", "kernel_size": 31}, {"type": "gaussian_noise", "sigma": [0, 10]}]``.
            None or empty gives an identity pipeline.
        key: the config key the list came from, used in error messages.

    Returns:
        A :class:`Pipeline`, callable as ``pipeline(img, rng)`` on (H, W, 3) float32 arrays in [0, 1].

    Raises:
        DataError: an entry is not a mapping, names an unknown type or parameter (with a did-you-mean and the
            valid names), or has a bad value; the message names ``key[i]``, or the nested item such as
            ``key[2].pipelines[1][0]``.
    """
    if isinstance(specs, str | Mapping) or not isinstance(specs, Sequence | None):
        raise DataError(
            f"{key} must be a list of degradations, e.g. [{{type: gaussian_noise, sigma: 25}}]; got {specs!r}."
        )
    return Pipeline([_build_step(spec, f"{key}[{i}]") for i, spec in enumerate(specs or [])])


def _build_step(spec: Any, where: str) -> Degradation:
    """One ``{type: name, p: ..., **params}`` mapping -> its degradation (wrapped in :class:`RandomApply` for ``p``);
    errors name ``where``."""
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
    params = {k: v for k, v in spec.items() if k not in ("type", "p")}
    for name in params:
        if name not in valid:
            close = difflib.get_close_matches(str(name), [*valid, "p"], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise DataError(
                f"{where} ({kind}) has unknown parameter {name!r}.{hint} "
                f"Valid parameters of {kind}: {', '.join(valid) or 'none'} (and p, the probability of applying it)."
            )
    if factory is OneOf:
        if "pipelines" not in params:
            raise DataError(
                f"{where} (one_of) needs `pipelines`, a list of pipelines each a list of degradations "
                f"([] for none), e.g. {_ONE_OF_EXAMPLE}."
            )
        params["pipelines"] = _build_branches(params["pipelines"], f"{where}.pipelines")
    try:
        step = factory(**params)
        if "p" in spec:
            if factory is OneOf and isinstance(spec["p"], list | tuple):
                raise ValueError(
                    f"p is the probability of applying the whole one_of step, a number in [0, 1], got "
                    f"{spec['p']!r}; the probabilities of its pipelines go in `weights`"
                )
            step = RandomApply(step, spec["p"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} ({kind}): {exc}. Valid parameters of {kind}: {', '.join(valid)}.") from exc
    return step
