"""Camera noise through an invertible camera pipeline (Brooks et al., CVPR 2019): sRGB -> raw -> noise -> sRGB."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .base import DEGRADATIONS, Degradation, Param, _boolean, _finish, _number

__all__ = ["BAYER_PATTERNS", "CameraNoise", "CameraParams", "demosaic", "mosaic", "process", "unprocess"]


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
        coarse_noise: the weight in [0, 1) of a coarse part of the luma noise, fixed or ``[lo, hi]`` (default 0,
            none): the noise's luma becomes ``sqrt(1 - w) * fine + sqrt(w) * coarse``, the coarse part its low-pass
            of ``coarse_noise_sigma`` scaled to the fine part's std, the sum scaled back to it. One Gaussian
            low-pass makes the correlation fall as ``exp(-k^2 / 4 sigma^2)``, gone 4 px away once lag 1 matches
            real noise; a real camera's falls about as ``0.65^k`` (PolyU lag 1 / 2 / 4: 0.61-0.73 / 0.31-0.45 /
            0.18-0.32, ``bench/noise-statistics.md``): its noise reduction removes the fine grain and leaves
            blotches a few pixels wide. Needs ``pipeline_error: false``.
        coarse_noise_sigma: the coarse part's low-pass standard deviation in pixels, fixed or ``[lo, hi]``
            (default 2.5).
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
        coarse_noise: float | Sequence[float] = 0.0,
        coarse_noise_sigma: float | Sequence[float] = 2.5,
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
        self.coarse_noise = Param("coarse_noise", coarse_noise, low=0, high=0.99)
        self.coarse_noise_sigma = Param("coarse_noise_sigma", coarse_noise_sigma, low=0, high=10, strict_low=True)
        filtered = self.noise_reduction.hi > 0 or chroma_noise_reduction is not None or self.coarse_noise.hi > 0
        if self.pipeline_error and filtered:
            raise ValueError(
                "noise_reduction, chroma_noise_reduction and coarse_noise filter the noise alone, which needs "
                "pipeline_error: false (the default)"
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
        """The camera's noise reduction on an (H, W, 3) sRGB noise field: Gaussian low-passes of luma and chroma,
        and the coarse part of the luma (``coarse_noise``)."""
        sigma = self.noise_reduction.sample(rng)
        chroma_sigma = sigma if self.chroma_noise_reduction is None else self.chroma_noise_reduction.sample(rng)
        weight = self.coarse_noise.sample(rng)
        coarse_sigma = self.coarse_noise_sigma.sample(rng)
        if sigma == 0 and chroma_sigma == 0 and weight == 0:
            return noise
        luma = noise.mean(axis=2, keepdims=True)
        chroma = noise - luma
        fine = _low_pass(luma, sigma)
        if weight > 0:
            coarse = _low_pass(luma, coarse_sigma)
            std = float(fine.std())
            mixed = np.sqrt(1 - weight) * fine + np.sqrt(weight) * coarse * (std / max(float(coarse.std()), 1e-12))
            fine = mixed * np.float32(std / max(float(mixed.std()), 1e-12))
        return fine + _low_pass(chroma, chroma_sigma)


def _low_pass(x: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of an (H, W, C) array (reflected borders); ``sigma`` 0 returns it as it is."""
    if sigma == 0:
        return x
    out = cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(x.shape).astype(np.float32, copy=False)  # GaussianBlur drops a trailing axis of size 1
