"""Peak signal-to-noise ratio, as BasicSR's ``calculate_psnr``."""

from __future__ import annotations

import torch
from torch import Tensor

from nafrestore.metrics.common import prepare_pair


@torch.no_grad()
def psnr(pred: Tensor, gt: Tensor, *, y_channel: bool = False, crop_border: int = 0, quantize: bool = True) -> Tensor:
    """Per-image PSNR in dB.

    PSNR = 10 log10(255^2 / MSE) with the MSE over all pixels and channels of an image on the 0-255 scale
    (equivalently peak 1 on [0, 1] data). Average the result with :func:`~nafrestore.metrics.mean_finite`:
    an image identical to its ground truth scores +inf.

    Args:
        pred, gt: (B, C, H, W) float in [0, 1] (or uint8), RGB or grey, same shape, any device.
        y_channel: score the BT.601 luma (BasicSR's ``test_y_channel``; see :func:`~.common.rgb_to_y`).
        crop_border: pixels removed from each side before scoring.
        quantize: clamp and round both images to 8 bits first (BasicSR's convention); False scores raw floats.

    Returns:
        (B,) float64 tensor of PSNR values in dB (+inf where the images are identical).
    """
    x, y = prepare_pair(pred, gt, y_channel=y_channel, crop=crop_border, quantize=quantize)
    mse = (x - y).square().flatten(1).mean(dim=1)
    # 255^2 / 0 = inf -> inf dB, the convention BasicSR uses for identical images.
    return 10.0 * torch.log10((255.0**2) / mse)
