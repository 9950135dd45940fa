"""Blur: camera shake along a random trajectory, Gaussian blur and out-of-focus (defocus) blur."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from .base import DEGRADATIONS, Degradation, Param, _number

__all__ = [
    "MAX_BLUR_SIZE",
    "CameraShake",
    "DefocusBlur",
    "GaussianBlur",
    "MotionBlur",
    "defocus_kernel",
    "from_linear",
    "motion_kernel",
    "shake_kernel",
    "shake_trajectory",
    "to_linear",
]


#: The widest blur (px across: camera_shake's size, motion_blur's kernel_size, a Gaussian's kernel side, a defocus
#: disk's diameter) a blur step accepts. A blur reads its reach of context around every pixel, and each training
#: crop is cut that much larger (see ``Degradation.margin``), so memory and time grow with the square of the blur:
#: camera_shake with size 2000 took 2.7 GB for 32 px crops, size 100000 asked for 447 GiB. GoPro's longest blurs
#: are 41 px; 255 leaves room for photographs six times GoPro's 1280x720.
MAX_BLUR_SIZE = 255
_WHY_MAX = (
    f"blurs are limited to {MAX_BLUR_SIZE} px across (GoPro's longest are 41 px), because every crop is cut larger by "
    "the blur's reach and memory grows with its square; downscale the images rather than widen the blur"
)


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
    return _rasterise(path + complex(centre, centre), kernel_size)


def _rasterise(path: np.ndarray, size: int) -> np.ndarray:
    """Splats the points of a complex path (x + iy, pixel coordinates) bilinearly into a (size, size) kernel of
    equal weight per point (a path sampled at equal time steps), float32 summing to 1."""
    xs, ys = path.real, path.imag
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = xs - x0, ys - y0
    kernel = np.zeros((size, size), np.float64)
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(kernel, (np.clip(y0 + dy, 0, size - 1), np.clip(x0 + dx, 0, size - 1)), weight)
    return (kernel / kernel.sum()).astype(np.float32)


@DEGRADATIONS.register("motion_blur")
class MotionBlur(Degradation):
    """Camera-shake blur with a fresh random trajectory kernel per sample (see :func:`motion_kernel`).

    Args:
        kernel_size: odd kernel side in pixels, 3-255 (default 21); bounds the blur extent.
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
        if kernel_size > MAX_BLUR_SIZE:
            raise ValueError(f"kernel_size must be <= {MAX_BLUR_SIZE}, got {kernel_size!r}: {_WHY_MAX}")
        self.kernel_size = kernel_size
        self.length = Param("length", [kernel_size / 4, float(kernel_size)] if length is None else length, low=0)
        self.shake = Param("shake", shake, low=0, high=2)
        self.impulse = Param("impulse", impulse, low=0, high=10)

    @property
    def margin(self) -> int:
        return self.kernel_size // 2

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        kernel = motion_kernel(
            rng, self.kernel_size, self.length.sample(rng), self.shake.sample(rng), self.impulse.sample(rng)
        )
        return _convolve(img, kernel)


# ----------------------------------------------------------------------------------------------------------------
# Camera shake (Boracchi and Foi, 2012), blurred in linear light

#: Points of a simulated trajectory; Boracchi and Foi's ``numT``. The exposed part is rasterised from them.
_TRAJECTORY_STEPS = 2000


def to_linear(img: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma-encoded values in [0, 1] -> linear light: ``img ** gamma`` (float32; ``gamma`` 1 is the identity).

    Nah, Kim and Lee (GoPro, CVPR 2017) approximate a camera's response by gamma 2.2 to average video frames in
    linear light; the same curve is used here so synthetic shake and averaged frames blur alike.
    """
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    return img if gamma == 1 else cv2.pow(img, float(gamma))


def from_linear(img: np.ndarray, gamma: float) -> np.ndarray:
    """The inverse of :func:`to_linear`: linear light -> gamma-encoded float32 in [0, 1]."""
    img = np.clip(np.asarray(img, np.float32), 0.0, 1.0)
    return img if gamma == 1 else cv2.pow(img, 1.0 / float(gamma))


def shake_trajectory(
    rng: np.random.Generator,
    *,
    anxiety: float = 0.05,
    centripetal: float = 0.35,
    gaussian: float = 5.0,
    jerk: float = 0.1,
    steps: int = _TRAJECTORY_STEPS,
) -> np.ndarray:
    """A random camera trajectory: Boracchi and Foi's model ("Modeling the performance of image restoration from
    motion blur", IEEE TIP 2012, their ``createTrajectory``).

    The camera moves at constant speed; at each step its velocity gains a Gaussian push (``gaussian``), a pull back
    towards the start (``centripetal``: a hand steadies itself), both scaled by ``anxiety``, and with probability
    ``jerk * anxiety`` an abrupt, roughly reversing shake. The velocity carries over between steps: inertia.

    Returns:
        (steps,) complex128 positions ``x + iy`` starting at 0, a path 60 units long (only its shape matters:
        :func:`shake_kernel` rescales it).
    """
    # Boracchi and Foi's units (MaxTotalLength 60 over numT steps): the centripetal pull depends on the position,
    # so the path's shape depends on them; only its size is rescaled later.
    speed = 60.0 / (steps - 1)
    heading = rng.uniform(0.0, 2 * math.pi)
    velocity = complex(math.cos(heading), math.sin(heading)) * (anxiety if anxiety > 0 else speed)
    pushes = (rng.standard_normal(steps) + 1j * rng.standard_normal(steps)) * gaussian
    jerks = rng.random(steps) < jerk * anxiety
    jerk_turns = np.exp(1j * (math.pi + rng.uniform(-0.5, 0.5, steps)))
    path = np.zeros(steps, np.complex128)
    position = 0j
    for t in range(steps - 1):  # a recurrence (velocity depends on position): no vectorised form
        dv = anxiety * (pushes[t] - centripetal * position) * speed
        if jerks[t]:
            dv += 2 * velocity * jerk_turns[t]
        velocity += dv
        velocity *= speed / (abs(velocity) or 1.0)
        position += velocity
        path[t + 1] = position
    return path


def shake_kernel(
    path: np.ndarray, extent: float, exposure: float = 1.0, start: float = 0.0, frames: int | None = None
) -> np.ndarray:
    """The blur kernel of the exposed part of a trajectory: a (k, k) float32 kernel, non-negative, summing to 1.

    Args:
        path: complex positions sampled at equal time steps (:func:`shake_trajectory`).
        extent: the kernel's size in pixels: the exposed path is scaled so the larger side of its bounding box is
            ``extent - 2``, so the kernel's support (bilinear splatting adds a pixel) spans ``extent - 1`` to
            ``extent`` pixels along its larger side. At least 2.
        exposure: the fraction of the trajectory the shutter is open for, in (0, 1].
        start: where in the trajectory the exposure starts, as a fraction of what is left after it, in [0, 1].
        frames: None for a continuous exposure; else the number of video frames (at least 2) averaged into the
            blurry frame, as GoPro-style datasets make it: the exposed path is sampled at that many equally spaced
            instants (each frame's own exposure taken as instantaneous), so the kernel is that many dots.

    The kernel is centred on the position at the middle of the exposure, as the sharp target of a real blurry
    frame is the middle one of the frames a video camera averaged (GoPro): blurring moves no content relative to
    the target at mid-exposure. ``k`` is odd, just large enough to hold the path around that centre.
    """
    count = len(path)
    length = max(2, round(exposure * count))
    first = round(start * (count - length))
    part = path[first : first + length]
    if frames is not None:
        # Frame k at time k / (frames - 1) of the exposure; the middle (or, for an even count, the later of the two
        # middle) frame is the sharp target, as GoPro's middle frame is.
        at = np.linspace(0.0, length - 1.0, frames)
        steps = np.arange(length)
        part = np.interp(at, steps, part.real) + 1j * np.interp(at, steps, part.imag)
    span = max(np.ptp(part.real), np.ptp(part.imag))
    part = (part - part[len(part) // 2]) * ((extent - 2) / span if span > 0 else 0.0)
    reach = max(np.abs(part.real).max(), np.abs(part.imag).max())
    half = math.ceil(reach) + 1  # one pixel for the bilinear footprint
    return _rasterise(part + complex(half, half), 2 * half + 1)


def _smooth_masks(rng: np.random.Generator, count: int, shape: tuple[int, int]) -> np.ndarray:
    """(count, H, W) float32 weights summing to 1 at each pixel that vary smoothly over the image: a softmax of
    random fields drawn on a 3x3 grid and upsampled bicubically, so regions meet in gradual transitions."""
    height, width = shape
    fields = rng.standard_normal((count, 3, 3)).astype(np.float32) * np.float32(3.0)
    up = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in fields])
    up = np.exp(up - up.max(axis=0, keepdims=True))
    return up / up.sum(axis=0, keepdims=True)


@DEGRADATIONS.register("camera_shake")
class CameraShake(Degradation):
    """Blur of a shaking hand-held camera: a random Boracchi-Foi trajectory per sample, blurred in linear light.

    Each sample draws a trajectory (:func:`shake_trajectory`), exposes a fraction of it, scales it to a drawn
    kernel size and rasterises it at sub-pixel precision (:func:`shake_kernel`). The image is converted to linear
    light (inverse gamma), convolved, and converted back, as an exposure integrates light, not gamma-encoded
    values: bright lights smear into streaks rather than grey smudges. With ``regions`` above 1, several kernels
    are drawn and blended by smooth random masks, a blur that changes over the image as a camera's rotation
    makes it.

    Defaults are Boracchi and Foi's draws (centripetal ``0.7 * U``, Gaussian ``10 * U``, jerk frequency
    ``0.2 * U``) except the anxiety: theirs reaches 0.1, whose paths are tangles that a hand-held exposure does not
    make; up to 0.01 they are the smooth curves and hooks of recorded shake (DeblurGAN's generator uses 0.005).
    Kernel sizes reach 41 px: the longer blurs of GoPro's 1280x720 frames. For images of another scale, scale
    ``size``.

    Args:
        size: the kernel's size in pixels (the larger side of the blur's bounding box), fixed or ``[lo, hi]``,
            each in 3-255 (default ``[3, 41]``; see :data:`MAX_BLUR_SIZE`).
        exposure: fraction of the trajectory during which the shutter is open, fixed or ``[lo, hi]`` in (0, 1]
            (default ``[0.25, 1]``); short exposures are straighter.
        anxiety: how much the hand shakes, fixed or ``[lo, hi]`` in [0, 1]; 0 gives straight lines
            (default ``[0, 0.01]``).
        centripetal: pull back towards the starting point, fixed or ``[lo, hi]`` >= 0 (default ``[0, 0.7]``).
        gaussian: strength of the random pushes, fixed or ``[lo, hi]`` >= 0 (default ``[0, 10]``).
        jerk: frequency of abrupt shakes (per step, times ``anxiety``), fixed or ``[lo, hi]`` in [0, 1]
            (default ``[0, 0.2]``).
        regions: number of kernels blended over the image, fixed or ``[lo, hi]`` integers in 1-8 (default 1:
            one kernel for the whole image).
        gamma: the gamma of the linear-light conversion, >= 1 (default 2.2; 1 convolves the encoded values).
        frames: null (default) for a photograph's continuous exposure; or a number of video frames averaged, fixed
            or ``[lo, hi]`` integers in 2-64, for the dotted kernels of GoPro-style data (8-10 frames of a 240 fps
            video: a dot per frame along the path; see :func:`shake_kernel`).
    """

    def __init__(
        self,
        size: float | Sequence[float] = (3, 41),
        exposure: float | Sequence[float] = (0.25, 1.0),
        anxiety: float | Sequence[float] = (0.0, 0.01),
        centripetal: float | Sequence[float] = (0.0, 0.7),
        gaussian: float | Sequence[float] = (0.0, 10.0),
        jerk: float | Sequence[float] = (0.0, 0.2),
        regions: int | Sequence[int] = 1,
        gamma: float = 2.2,
        frames: int | Sequence[int] | None = None,
    ) -> None:
        self.size = Param("size", size, low=3, high=MAX_BLUR_SIZE, why_high=_WHY_MAX)
        self.exposure = Param("exposure", exposure, low=0, high=1, strict_low=True)
        self.anxiety = Param("anxiety", anxiety, low=0, high=1)
        self.centripetal = Param("centripetal", centripetal, low=0)
        self.gaussian = Param("gaussian", gaussian, low=0)
        self.jerk = Param("jerk", jerk, low=0, high=1)
        self.regions = Param("regions", regions, low=1, high=8, integer=True)
        self.gamma = _number("gamma", gamma, low=1)
        self.frames = None if frames is None else Param("frames", frames, low=2, high=64, integer=True)

    @property
    def margin(self) -> int:
        # A kernel's half-side is at most its size (the mid-exposure centre may sit at one end of the path).
        return math.ceil(self.size.hi)

    def draw_kernel(self, rng: np.random.Generator) -> np.ndarray:
        """One kernel: a fresh trajectory, exposure and size (see the class docstring)."""
        path = shake_trajectory(
            rng,
            anxiety=self.anxiety.sample(rng),
            centripetal=self.centripetal.sample(rng),
            gaussian=self.gaussian.sample(rng),
            jerk=self.jerk.sample(rng),
        )
        frames = None if self.frames is None else int(self.frames.sample(rng))
        return shake_kernel(path, self.size.sample(rng), self.exposure.sample(rng), float(rng.random()), frames)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        count = int(self.regions.sample(rng))
        linear = to_linear(img, self.gamma)
        blurred = [_convolve(linear, self.draw_kernel(rng)) for _ in range(count)]
        if count == 1:
            out = blurred[0]
        else:
            masks = _smooth_masks(rng, count, img.shape[:2])
            out = sum(m[:, :, None] * b for m, b in zip(masks, blurred, strict=True))
        return from_linear(out, self.gamma)


@DEGRADATIONS.register("gaussian_blur")
class GaussianBlur(Degradation):
    """Isotropic Gaussian blur; the kernel side is the odd number ``2 * ceil(3 * sigma) + 1`` (about 6 sigma).

    Args:
        sigma: standard deviation in pixels, fixed or ``[lo, hi]`` in [0, 42] (a kernel of at most 255 px); 0 leaves
            the image unchanged.
    """

    def __init__(self, sigma: float | Sequence[float] = 1.5) -> None:
        self.sigma = Param("sigma", sigma, low=0, high=(MAX_BLUR_SIZE - 1) // 6, why_high=_WHY_MAX)

    @property
    def margin(self) -> int:
        return math.ceil(3 * self.sigma.hi)

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
        radius: disk radius in pixels, fixed or ``[lo, hi]`` in (0, 127] (a disk of at most 255 px).
    """

    def __init__(self, radius: float | Sequence[float] = 3.0) -> None:
        self.radius = Param("radius", radius, low=0, strict_low=True, high=(MAX_BLUR_SIZE - 1) // 2, why_high=_WHY_MAX)

    @property
    def margin(self) -> int:
        return math.ceil(self.radius.hi + 0.5)

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _convolve(img, defocus_kernel(self.radius.sample(rng)))
