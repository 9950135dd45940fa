"""Training-sample geometry: random crops (reflect-padding small images) and the eight dihedral variants.

Functions work on numpy (H, W, C) arrays of any dtype and apply the *same* random choice to every array they are
given (the degraded input and its target), drawing from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dihedral", "pad_to", "random_crop", "random_dihedral"]


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pads (mirror without repeating the edge) both sides so height and width are at least ``size``.

    Padding is split evenly between the two sides. Works for any shortfall (numpy reflects repeatedly), and a
    1-pixel-wide image is replicated, since there is nothing to mirror.
    """
    height, width = array.shape[:2]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not pad_h and not pad_w:
        return array
    widths = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="reflect")


def random_crop(arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` window from each array (all of the same height and width).

    Arrays smaller than ``size`` are first reflect-padded (:func:`pad_to`). Returns views where possible.
    """
    padded = [pad_to(a, size) for a in arrays]
    height, width = padded[0].shape[:2]
    if any(a.shape[:2] != (height, width) for a in padded):
        raise ValueError(f"cannot crop arrays of different sizes together: {[a.shape for a in arrays]}")
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    return [a[top : top + size, left : left + size] for a in padded]


def dihedral(array: np.ndarray, op: int) -> np.ndarray:
    """One of the 8 symmetries of the square: ``op % 4`` quarter turns counter-clockwise, then a left-right
    mirror when ``op >= 4``. ``op = 0`` is the identity. Returns a view."""
    out = np.rot90(array, op % 4, axes=(0, 1))
    return out[:, ::-1] if op >= 4 else out


def random_dihedral(
    arrays: Sequence[np.ndarray], rng: np.random.Generator, *, flip: bool, rot90: bool
) -> list[np.ndarray]:
    """Applies one random symmetry, the same to every array.

    ``flip`` and ``rot90`` together choose among all 8 dihedral variants; ``flip`` alone among identity, left-right,
    top-bottom and both (a half turn); ``rot90`` alone among the 4 quarter-turn rotations. Neither: unchanged (no
    random number is drawn).
    """
    if flip and rot90:
        op = int(rng.integers(8))
    elif flip:
        op = (0, 4, 6, 2)[int(rng.integers(4))]  # identity, mirror, mirror + half turn (= top-bottom), half turn
    elif rot90:
        op = int(rng.integers(4))
    else:
        return list(arrays)
    return [dihedral(a, op) for a in arrays]
