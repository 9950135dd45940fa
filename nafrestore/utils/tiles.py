"""The tile grid: where overlapping windows of one size start along a side so that they cover it exactly.

Shared by inference's tiles (:mod:`nafrestore.inference.tiling`) and ``nafrestore prepare``'s sub-images
(:func:`nafrestore.data.prepare.crop_grid`): the same windows, with overlap ``crop_size - step`` there.
"""

from __future__ import annotations

__all__ = ["tile_starts"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``[0, size)`` with at least ``overlap`` shared pixels.

    Steps of ``tile - overlap``; the last tile ends exactly at ``size``. A size up to ``tile`` gives one tile.
    """
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts
