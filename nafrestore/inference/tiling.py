"""Running a network on whole images or on overlapping tiles, with x8 self-ensemble and mixed precision.

Tiling bounds memory: the network sees ``tile x tile`` crops (a few at a time) and the output is accumulated in
one float32 (C, H, W) buffer. Each tile's output is weighted by a separable raised-cosine (Hann) ramp over the
parts it shares with its neighbours (weight 1 elsewhere and along the image border), so overlapping tiles
cross-fade smoothly and no seam shows; the sum is divided by the sum of the weights. Because the tile grid is a
product of row and column positions, that sum is itself separable, ``Wy(y) * Wx(x)``, so no H x W weight map is
stored. Tile starts step by ``tile - overlap`` and the last tile is flush with the border, so tiles always cover
the image exactly with every tile the same size (one batch shape). The image is tiled as the network sees it in
one piece, zero-padded at the bottom and right to a multiple of ``2**levels`` (tiles are multiples of it too),
so the border tiles see the same zeros as a whole-image pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import NafrestoreError
from ..utils.device import autocast
from ..utils.limits import check_megapixels
from ..utils.tiles import tile_starts

__all__ = [
    "DEFAULT_TILE",
    "auto_tile",
    "check_max_megapixels",
    "check_tile",
    "default_max_megapixels",
    "forward",
    "restore_batch",
    "restore_tiled",
    "tile_weights",
]

#: Tile side and overlap used when an image is tiled automatically (it exceeds the megapixel budget).
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32


def default_max_megapixels(device: torch.device | str) -> float:
    """Largest image (in megapixels) run in one piece before automatic tiling kicks in.

    4 MP on the CPU and MPS (a width-32 NAFNet needs about 1.5 GB of activations per megapixel in float32);
    on CUDA a quarter of the GPU's memory in GB, at least 4 (e.g. 20 MP on an 80 GB GPU).
    """
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        return max(4.0, total / 4)
    return 4.0


def auto_tile(height: int, width: int, tile: int | None, max_megapixels: float | None, device) -> int | None:
    """The tile side to use: ``tile`` when given, :data:`DEFAULT_TILE` when the image exceeds the budget, else None."""
    if tile is not None:
        return tile
    budget = default_max_megapixels(device) if max_megapixels is None else max_megapixels
    return DEFAULT_TILE if height * width > budget * 1e6 else None


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, (2, 3)) if k else x
    return x.flip(3) if flip else x


def _dihedral_inverse(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = x.flip(3) if flip else x
    return torch.rot90(x, -k, (2, 3)) if k else x


def forward(model: nn.Module, x: torch.Tensor, *, tta: bool = False, precision: str = "fp32") -> torch.Tensor:
    """The network's output for a batch ``x`` (B, C, H, W) on the model's device, as float32.

    With ``tta`` the x8 self-ensemble: the mean of the outputs for the 8 dihedral transforms of the input (4
    rotations, each with and without a horizontal flip), each transformed back.
    """
    device = x.device
    with torch.inference_mode(), autocast(device, precision):
        if not tta:
            return model(x).float()
        out = None
        for k in range(4):
            for flip in (False, True):
                y = _dihedral_inverse(model(_dihedral(x, k, flip)).float(), k, flip)
                out = y if out is None else out.add_(y)
        return out.div_(8)


def _ramp(n: int) -> torch.Tensor:
    """Raised cosine from ~0 to ~1 over n samples (sample centres, never exactly 0); ramp + ramp[::-1] == 1."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    return (0.5 - 0.5 * torch.cos(math.pi * i / n)).float()


def tile_weights(starts: list[int], length: int, size: int) -> list[torch.Tensor]:
    """The 1-D blending weights of each tile along one axis.

    Each tile ramps up over the pixels it shares with the previous tile and down over those it shares with the
    next (weight 1 elsewhere, so along the image border too): two neighbours' ramps over the same stretch are
    complementary raised cosines.
    """
    length = min(length, size)
    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(length)
        if i > 0:
            shared = starts[i - 1] + length - start
            if shared > 0:
                w[:shared] = torch.minimum(w[:shared], _ramp(shared))
        if i + 1 < len(starts):
            shared = start + length - starts[i + 1]
            if shared > 0:
                w[length - shared :] = torch.minimum(w[length - shared :], _ramp(shared).flip(0))
        weights.append(w)
    return weights


def check_tile(tile: int, overlap: int) -> None:
    """Tile and overlap usable together (overlap below half the tile), or one message naming the options."""
    if tile < 16:
        raise NafrestoreError(f"--tile must be at least 16 pixels; got {tile}.")
    if overlap < 0 or overlap >= tile // 2:
        raise NafrestoreError(
            f"--overlap must be at least 0 and below half the tile ({tile // 2}); got {overlap}. "
            f"Typical: --tile 512 --overlap 32."
        )


def check_max_megapixels(value: float | None, where: str = "max_megapixels") -> float | None:
    """The automatic-tiling threshold checked once, before any image: None (the device default), a positive
    number of megapixels, or ``inf`` (never tile). NaN would turn tiling off unnoticed (no size compares above it),
    and a large image would then run out of memory in one piece.

    Raises:
        ConfigError: NaN, zero, a negative number or not a number, naming ``where`` (e.g. ``--max-megapixels``).
    """
    return None if value is None else check_megapixels(value, where, "e.g. 4; inf: never tile")


def restore_tiled(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = 1,
    tta: bool = False,
    precision: str = "fp32",
    out: torch.Tensor | None = None,
    on_tile: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``image`` tile by tile and blend the tiles.

    Args:
        model: the network, in eval mode, on its device (``image`` tiles are moved there a batch at a time).
        image: (C, H, W) float tensor in [0, 1] on any device (typically a CPU view of a NumPy image).
        tile: tile side in pixels, rounded down to a multiple of the model's ``padder_size`` (2**levels) and
            clipped to the image size.
        overlap: pixels shared by neighbouring tiles, cross-faded; 32 hides seams for NAFNet-sized receptive
            fields.
        batch_size: tiles per forward pass.
        tta: x8 self-ensemble on each tile.
        precision: fp32 | bf16 | fp16 (autocast on the model's device).
        out: optional float32 (C, H, W) CPU buffer to accumulate into (e.g. a view of an (H, W, C) array, so the
            result needs no transpose copy); zeroed here.
        on_tile: called with the number of pixels of each finished tile (progress reporting).

    Returns:
        (C, H, W) float32 CPU tensor (``out`` when given).
    """
    check_tile(tile, overlap)
    if image.ndim != 3:
        raise ValueError(f"restore_tiled expects a (C, H, W) tensor, got shape {tuple(image.shape)}")
    channels, height, width = image.shape
    param = next(model.parameters(), None)
    device = param.device if param is not None else image.device  # a parameter-free model runs where the image is
    # Tile the image as the network sees it whole: zero-padded at the bottom/right to a multiple of its
    # padder_size. Tiles are multiples of it too, so no tile is padded again inside the network, and the tiles
    # along the bottom/right border see the same zeros as a whole-image pass.
    p = int(getattr(model, "padder_size", 1))
    padded_h, padded_w = -(-height // p) * p, -(-width // p) * p
    tile = max(p, tile - tile % p)
    th, tw = min(tile, padded_h), min(tile, padded_w)
    ys, xs = tile_starts(padded_h, tile, overlap), tile_starts(padded_w, tile, overlap)
    wys, wxs = tile_weights(ys, th, padded_h), tile_weights(xs, tw, padded_w)

    if out is None:
        out = torch.zeros(channels, height, width, dtype=torch.float32)
    else:
        if out.shape != (channels, height, width) or out.dtype != torch.float32:
            raise ValueError(f"out must be float32 {(channels, height, width)}, got {out.dtype} {tuple(out.shape)}")
        out.zero_()
    norm_y, norm_x = torch.zeros(padded_h), torch.zeros(padded_w)
    for y, wy in zip(ys, wys, strict=True):
        norm_y[y : y + th] += wy
    for x, wx in zip(xs, wxs, strict=True):
        norm_x[x : x + tw] += wx
    norm_y, norm_x = norm_y[:height], norm_x[:width]

    positions = [(iy, ix) for iy in range(len(ys)) for ix in range(len(xs))]

    def batches() -> Iterator[list[tuple[int, int]]]:
        for i in range(0, len(positions), batch_size):
            yield positions[i : i + batch_size]

    for group in batches():
        crops = torch.zeros(len(group), channels, th, tw, dtype=torch.float32)
        extents = []
        for k, (iy, ix) in enumerate(group):
            y, x = ys[iy], xs[ix]
            h, w = min(th, height - y), min(tw, width - x)  # the part inside the image (the rest stays zero)
            crops[k, :, :h, :w] = image[:, y : y + h, x : x + w]
            extents.append((h, w))
        result = forward(model, crops.to(device, non_blocking=True), tta=tta, precision=precision).cpu()
        for k, (iy, ix) in enumerate(group):
            y, x = ys[iy], xs[ix]
            h, w = extents[k]
            weight = wys[iy][:h].view(1, h, 1) * wxs[ix][:w].view(1, 1, w)
            out[:, y : y + h, x : x + w].addcmul_(result[k, :, :h, :w], weight)
            if on_tile is not None:
                on_tile(h * w)
        del crops, result
    out.div_(norm_y.view(1, height, 1))
    out.div_(norm_x.view(1, 1, width))
    return out


def restore_batch(
    model: nn.Module,
    lq: torch.Tensor,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    precision: str = "fp32",
    max_megapixels: float | None = None,
    tile_batch: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The network's output for a batch of images: whole, or in blended tiles. The one restore helper of
    ``infer``, ``eval`` and training validation.

    Args:
        model: the network, in eval mode, on its device.
        lq: (B, C, H, W) float in [0, 1] on any device.
        tile: tile side; None runs whole images unless they exceed ``max_megapixels`` (:func:`auto_tile`).
        overlap, tta, precision: see :func:`restore_tiled`.
        max_megapixels: the automatic-tiling threshold (None: the device default; ``math.inf``: never).
        tile_batch: tiles per forward pass (None: 1 on the CPU, where batching gains no speed and each 512-pixel
            LKA-NAFNet tile costs about 280 MB, 4 elsewhere).
        out: optional float32 (B, C, H, W) CPU buffer for the result (e.g. a view of an (H, W, C) array).

    Returns:
        (B, C, H, W) float32 on the CPU (``out`` when given), not clamped. A whole-image pass that runs out of
        memory falls back to tiles.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else lq.device
    _, _, height, width = lq.shape
    use_tile = auto_tile(height, width, tile, max_megapixels, device)
    if use_tile is None:
        try:
            result = forward(model, lq.to(device), tta=tta, precision=precision).cpu()
            return result if out is None else out.copy_(result)
        except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(exc).lower():
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            use_tile = min(1024, max(height, width) // 2)
    if tile_batch is None:
        tile_batch = 1 if device.type == "cpu" else 4
    if out is None:
        out = torch.empty(lq.shape, dtype=torch.float32)
    for i, image in enumerate(lq):
        restore_tiled(
            model,
            image,
            tile=use_tile,
            overlap=overlap,
            batch_size=tile_batch,
            tta=tta,
            precision=precision,
            out=out[i],
        )
    return out
