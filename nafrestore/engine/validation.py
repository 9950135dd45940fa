"""Validation during training: restore whole images (optionally in overlapping tiles) and score them.

Scores follow BasicSR: outputs are clamped and rounded to 8 bits before PSNR/SSIM (the metrics' default), so the
numbers equal those of the saved PNGs and are comparable with published tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.device import autocast
from . import distributed as du


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``[0, size)`` with at least ``overlap`` pixels of overlap;
    the last tile is aligned to the end."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def blend_window(height: int, width: int, overlap: int, *, device: torch.device | None = None) -> Tensor:
    """A (1, 1, height, width) weight that ramps linearly from ~0 to 1 over ``overlap`` pixels at every edge.

    Overlapping tiles weighted by it and normalised by the summed weights cross-fade smoothly, hiding the seams
    that a hard cut at tile borders leaves (tile edges see less context, so their outputs are worse there).
    """

    def ramp(n: int) -> Tensor:
        i = torch.arange(n, dtype=torch.float32, device=device)
        if overlap <= 0:
            return torch.ones(n, device=device)
        r = torch.minimum((i + 0.5) / overlap, (n - i - 0.5) / overlap)
        return r.clamp(max=1.0)

    return (ramp(height)[:, None] * ramp(width)[None, :]).view(1, 1, height, width)


@torch.no_grad()
def restore_tiled(model: nn.Module, lq: Tensor, tile: int, overlap: int = 32) -> Tensor:
    """Restore a large image tile by tile with smooth blending.

    Args:
        model: (B, C, h, w) -> (B, C, h, w), any h, w (the networks pad internally).
        lq: (B, C, H, W) degraded images.
        tile: tile side in pixels (tiles are clipped to the image).
        overlap: pixels shared by neighbouring tiles (cross-faded).

    Returns:
        (B, C, H, W) float32, the blended restoration (not clamped).
    """
    _, _, h, w = lq.shape
    if h <= tile and w <= tile:
        return model(lq).float()
    th, tw = min(tile, h), min(tile, w)
    overlap = min(overlap, th // 2, tw // 2)
    out = torch.zeros(lq.shape, dtype=torch.float32, device=lq.device)
    weight = torch.zeros((1, 1, h, w), dtype=torch.float32, device=lq.device)
    window = blend_window(th, tw, overlap, device=lq.device)
    for y in tile_starts(h, th, overlap):
        for x in tile_starts(w, tw, overlap):
            patch = model(lq[:, :, y : y + th, x : x + tw]).float()
            out[:, :, y : y + th, x : x + tw] += patch * window
            weight[:, :, y : y + th, x : x + tw] += window
    return out / weight


def restore(model: nn.Module, lq: Tensor, tile: int | None = None, overlap: int = 32) -> Tensor:
    """``model(lq)`` on whole images, or :func:`restore_tiled` when ``tile`` is set; float32 (B, C, H, W)."""
    if tile is None:
        return model(lq).float()
    return restore_tiled(model, lq, tile, overlap)


def _batch_names(batch: dict[str, Any], count: int, offset: int) -> list[str]:
    names = batch.get("name")
    if names is None:
        return [f"rank{du.get_rank()}/{offset + i}" for i in range(count)]
    return [names] if isinstance(names, str) else [str(n) for n in names]


def _average(rows: dict[str, dict[str, float]], names: Iterable[str]) -> dict[str, float]:
    from ..metrics import mean_finite

    out: dict[str, float] = {}
    for name in names:
        values = [r[name] for r in rows.values() if name in r]
        if values:
            out[name], _ = mean_finite(values)
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    metrics: Sequence[str] = ("psnr", "ssim"),
    device: torch.device | str = "cpu",
    tile: int | None = None,
    overlap: int = 32,
    y_channel: bool = False,
    crop_border: int = 0,
    amp: str = "none",
    include_input: bool = False,
    suite: Any = None,
) -> dict[str, float]:
    """Mean per-image metrics of ``model`` over a validation loader (all ranks combined when distributed).

    Args:
        model: the (unwrapped) network; put in eval mode for the pass, its mode restored after.
        loader: batches ``{"lq": (B, 3, H, W), "gt": (B, 3, H, W), "name": [str] * B}`` in [0, 1] (B is usually 1).
        metrics: per-image metric names of :mod:`nafrestore.metrics` (psnr, ssim, ms-ssim, lpips).
        device: where the model runs.
        tile, overlap: tiled restoration (see :func:`restore_tiled`); None: whole images.
        y_channel, crop_border: scoring options (BasicSR's ``test_y_channel`` / ``crop_border``).
        amp: autocast dtype for the forward pass (``none`` | ``bf16`` | ``fp16``); scores are in float64.
        include_input: also score the degraded inputs, as ``input/<metric>`` (psnr and ssim only).
        suite: a prebuilt :class:`~nafrestore.metrics.MetricSuite` for ``metrics`` (avoids reloading LPIPS).

    Returns:
        ``{"psnr": mean, "ssim": mean, ..., "n_images": N}`` (+ ``input/psnr`` ... when asked). Infinite PSNRs
        (output identical to the ground truth) are left out of the mean.
    """
    from ..metrics import MetricSuite

    device = torch.device(device)
    if suite is None:
        suite = MetricSuite(metrics, y_channel=y_channel, crop_border=crop_border, device=device)
    names = list(suite.image_names)
    input_names = [n for n in ("psnr", "ssim") if n in names] if include_input else []
    input_suite = (
        MetricSuite(input_names, y_channel=y_channel, crop_border=crop_border, device=device) if input_names else None
    )
    was_training = model.training
    model.eval()
    rows: dict[str, dict[str, float]] = {}
    set_scores: dict[str, float] = {}
    try:
        for batch in loader:
            lq = batch["lq"].to(device, non_blocking=True)
            gt = batch["gt"].to(device, non_blocking=True)
            with autocast(device, amp):
                out = restore(model, lq, tile, overlap)
            out = out.float().clamp_(0.0, 1.0)
            scores = suite.update(out, gt)
            in_scores = input_suite.update(lq, gt) if input_suite is not None else [{} for _ in scores]
            for name, row, in_row in zip(_batch_names(batch, len(scores), len(rows)), scores, in_scores, strict=True):
                rows[name] = {**row, **{f"input/{k}": v for k, v in in_row.items()}}
        if suite.set_names and du.get_world_size() == 1 and suite.n_images:
            # Set-level metrics (rfid, kid) need every image's features in one place: single process only.
            computed = suite.compute()
            set_scores = {k: float(computed[k]) for k in suite.set_names if k in computed}
    finally:
        model.train(was_training)
        suite.reset()
    # Each image is on one rank (the val loader shards without padding); merging by name also removes any
    # duplicates a padding sampler would add.
    merged: dict[str, dict[str, float]] = {}
    for part in du.all_gather_objects(rows):
        merged.update(part)
    result = _average(merged, [*names, *(f"input/{n}" for n in input_names)])
    result.update(set_scores)
    result["n_images"] = float(len(merged))
    return result


__all__ = ["blend_window", "evaluate", "restore", "restore_tiled", "tile_starts"]
