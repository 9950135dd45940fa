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


def restore(model: nn.Module, lq: Tensor, tile: int | None = None, overlap: int = 32) -> Tensor:
    """``model(lq)`` on whole images, or in blended tiles (:func:`nafrestore.inference.restore_tiled`) when
    ``tile`` is set: (B, C, H, W) -> float32 (B, C, H, W) on ``lq``'s device."""
    if tile is None:
        return model(lq).float()
    from ..inference.tiling import restore_tiled

    return torch.stack([restore_tiled(model, x, tile=tile, overlap=overlap) for x in lq]).to(lq.device)


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
        tile, overlap: tiled restoration (see :func:`restore`); None: whole images.
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


__all__ = ["evaluate", "restore"]
