"""Pixel values: integer samples <-> float in [0, 1], for arrays and tensors. The one place that knows the scales.

Everything inside nafrestore computes on float32 in [0, 1]. Files hold 8- or 16-bit integers, so values cross this
boundary twice: on reading (:func:`to_float`, :func:`to_tensor`) and on writing (:func:`from_float`, which clamps
and rounds to the nearest level). The metrics' 8-bit rounding (:func:`round_to_8bit`) is kept apart on purpose: it
reproduces BasicSR's ``tensor2img`` (rounding in the tensor's own dtype), which published scores depend on.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["INTEGER_DTYPES", "from_float", "peak", "round_to_8bit", "to_float", "to_tensor"]

#: The integer sample types image files hold.
INTEGER_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_PEAK = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


def peak(dtype: np.dtype | type | int) -> int:
    """The largest sample of an integer type: 255 for uint8 (or ``8`` bits), 65535 for uint16 (or ``16``).

    Raises:
        ValueError: any other type or bit depth.
    """
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        dtype = {8: np.uint8, 16: np.uint16}.get(dtype, dtype)
    try:
        return _PEAK[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise ValueError(f"expected uint8 or uint16 samples (8 or 16 bits), got {dtype!r}") from None


def to_float(array: np.ndarray) -> np.ndarray:
    """uint8 / uint16 samples -> float32 in [0, 1] (a new array); float input comes back as float32, unscaled."""
    array = np.asarray(array)
    if array.dtype in INTEGER_DTYPES:
        return array.astype(np.float32) / np.float32(peak(array.dtype))
    return array.astype(np.float32, copy=False)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) array (uint8 / uint16 / float in [0, 1]) -> contiguous (C, H, W) float32 tensor in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(to_float(array).transpose(2, 0, 1)))


def from_float(values: np.ndarray, dtype: np.dtype | type | int = np.uint8) -> np.ndarray:
    """Float samples in [0, 1] -> uint8 / uint16 (``dtype`` or a bit depth 8 / 16): clamped, rounded to nearest.

    NaN becomes 0 and +-inf the nearest bound. Computed in float64 a band of rows at a time: whole-image float64
    temporaries of a 24-megapixel photograph would take over 1.5 GB, the bands a few MB.
    """
    top = peak(dtype)
    values = np.asarray(values)
    out = np.empty(values.shape, np.uint8 if top == 255 else np.uint16)
    if values.size == 0:
        return out
    step = max(1, (1 << 21) // max(1, values[0].size))  # about 2 M values (16 MB of float64) per band
    for r in range(0, values.shape[0], step):
        band = np.nan_to_num(values[r : r + step].astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(band, 0.0, 1.0, out=band)
        band *= top
        np.rint(band, out=band)
        out[r : r + step] = band
    return out


def round_to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit levels k / 255, in ``x``'s float dtype (BasicSR's ``tensor2img``).

    ``(x * 255).round()`` rounds half to even in the tensor's dtype, exactly as BasicSR does before ``cv2.imwrite``;
    that is what makes scores of a model's output equal those of its saved PNG and of published tables.
    """
    return x.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
