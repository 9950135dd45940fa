"""Compression artefacts: JPEG encoding and decoding."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .base import DEGRADATIONS, Degradation, Param

__all__ = ["Jpeg"]


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
