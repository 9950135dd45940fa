"""SSIM and MS-SSIM on the 0-255 scale.

SSIM follows Wang et al. 2004 as BasicSR's ``calculate_ssim`` and scikit-image's ``structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255``: an 11-tap Gaussian window
(sigma 1.5), K1 = 0.01, K2 = 0.03, "valid" filtering (no padding: the SSIM map is (H-10)x(W-10), which is exactly
scikit-image's map with its 5-pixel border cropped), the map averaged per channel, then over channels.

MS-SSIM follows Wang et al. 2003 as implemented by ``pytorch_msssim.ms_ssim`` (the usual PyTorch reference):
5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales (with one pixel
of zero padding, counted in the average, on a side of odd length, as pytorch_msssim does), the contrast-structure
term at the first 4 scales and the full SSIM at the last, negative terms clipped to 0, per channel, then averaged over
channels.

Everything is computed in float64 so that results agree with the float64 references to ~1e-12.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nafrestore.errors import DataError
from nafrestore.metrics.common import prepare_pair

WIN_SIZE = 11
WIN_SIGMA = 1.5
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window(
    size: int = WIN_SIZE, sigma: float = WIN_SIGMA, *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """1-D normalised Gaussian of ``size`` taps centred on the middle tap: shape (size,)."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter_valid(x: Tensor, win: Tensor) -> Tensor:
    """Separable Gaussian blur of every channel of (B, C, H, W) without padding -> (B, C, H-k+1, W-k+1)."""
    c, k = x.shape[1], win.numel()
    x = F.conv2d(x, win.view(1, 1, k, 1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, win.view(1, 1, 1, k).repeat(c, 1, 1, 1), groups=c)


def _ssim_and_cs(x: Tensor, y: Tensor, win: Tensor) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term per channel of two (B, C, H, W) images: two (B, C) tensors."""
    c = x.shape[1]
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    # One grouped convolution for the five local moments.
    mu_x, mu_y, e_xx, e_yy, e_xy = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), win).split(c, dim=1)
    # Population (not sample) covariances, as use_sample_covariance=False / BasicSR / pytorch_msssim.
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    cs_map = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    ssim_map = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1) * cs_map
    return ssim_map.flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _check_min_size(x: Tensor, what: str, crop: int) -> None:
    h, w = x.shape[-2:]
    if min(h, w) < WIN_SIZE:
        raise DataError(
            f"{what} needs images of at least {WIN_SIZE}x{WIN_SIZE} px (its Gaussian window), got {h}x{w} "
            f"(after crop_border={crop}); use larger images or a smaller crop_border"
        )


@torch.no_grad()
def ssim(pred: Tensor, gt: Tensor, *, y_channel: bool = False, crop_border: int = 0, quantize: bool = True) -> Tensor:
    """Per-image SSIM on the 0-255 scale (see the module docstring for the exact definition).

    Args:
        pred, gt: (B, C, H, W) float in [0, 1] (or uint8), RGB or grey, same shape, at least 11x11 after cropping.
        y_channel: score the BT.601 luma only (BasicSR's ``test_y_channel``).
        crop_border: pixels removed from each side before scoring.
        quantize: clamp and round both images to 8 bits first (default); False scores raw floats (still x255).

    Returns:
        (B,) float64 tensor, values in [-1, 1] (1 for identical images).
    """
    x, y = prepare_pair(pred, gt, y_channel=y_channel, crop=crop_border, quantize=quantize)
    _check_min_size(x, "SSIM", crop_border)
    win = gaussian_window(device=x.device)
    # One image at a time: the five float64 moment maps of a batch of large images would not fit comfortably.
    return torch.stack([_ssim_and_cs(x[i : i + 1], y[i : i + 1], win)[0].mean() for i in range(x.shape[0])])


def ms_ssim_num_scales(height: int, width: int, allow_fewer_scales: bool = False) -> int:
    """How many MS-SSIM scales an image of ``height`` x ``width`` (after cropping) gets.

    Scale ``k`` (0-based) is ceil(side / 2^k) px; the 11-px window must fit at the last one, so ``L`` scales need
    min(height, width) > 10 * 2^(L-1): more than 160 px for the standard 5 (pytorch_msssim's condition).

    Raises:
        DataError: smaller than 161 px without ``allow_fewer_scales``, or smaller than 11 px at all.
    """
    side = min(height, width)
    full = len(MS_SSIM_WEIGHTS)
    if side > (WIN_SIZE - 1) * 2 ** (full - 1):
        return full
    if not allow_fewer_scales:
        raise DataError(
            f"MS-SSIM needs images larger than {(WIN_SIZE - 1) * 2 ** (full - 1)} px on each side for its {full} "
            f"scales, got {height}x{width} (after crop_border). Use larger images, or allow fewer scales "
            f"(--allow-fewer-scales on the command line, allow_fewer_scales=True in Python), with the weights "
            f"renormalised to sum to 1; such scores are not comparable with {full}-scale MS-SSIM."
        )
    for levels in range(full - 1, 0, -1):
        if side > (WIN_SIZE - 1) * 2 ** (levels - 1):
            return levels
    raise DataError(f"MS-SSIM needs images of at least {WIN_SIZE}x{WIN_SIZE} px, got {height}x{width}")


def ms_ssim_weights(levels: int) -> Tensor:
    """The scale weights for ``levels`` scales: the standard 5, or the first ``levels`` renormalised to sum to 1."""
    w = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float64)
    # The standard weights sum to 1.0001; they are used as published (as pytorch_msssim), only truncated sets are
    # renormalised.
    return w if levels == len(MS_SSIM_WEIGHTS) else w / w.sum()


@torch.no_grad()
def ms_ssim(
    pred: Tensor,
    gt: Tensor,
    *,
    y_channel: bool = False,
    crop_border: int = 0,
    quantize: bool = True,
    allow_fewer_scales: bool = False,
) -> Tensor:
    """Per-image multi-scale SSIM on the 0-255 scale (see the module docstring).

    Args:
        pred, gt: (B, C, H, W) float in [0, 1] (or uint8), RGB or grey, same shape; more than 160 px on each side
            after cropping unless ``allow_fewer_scales``.
        y_channel, crop_border, quantize: as for :func:`ssim`.
        allow_fewer_scales: for smaller images use as many scales as fit (see :func:`ms_ssim_num_scales`, which also
            tells how many were used) with the weights renormalised to sum to 1, instead of raising DataError.

    Returns:
        (B,) float64 tensor, values in [0, 1] (1 for identical images).
    """
    x, y = prepare_pair(pred, gt, y_channel=y_channel, crop=crop_border, quantize=quantize)
    levels = ms_ssim_num_scales(x.shape[-2], x.shape[-1], allow_fewer_scales)
    weights = ms_ssim_weights(levels).to(x.device).view(-1, 1)
    win = gaussian_window(device=x.device)
    out = []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]
        terms = []
        for level in range(levels):
            s, cs = _ssim_and_cs(xi, yi, win)
            if level < levels - 1:
                terms.append(torch.relu(cs[0]))
                # pytorch_msssim pads an odd side with one zero (counted in the average) so no pixel is dropped.
                pad = [xi.shape[2] % 2, xi.shape[3] % 2]
                xi = F.avg_pool2d(xi, kernel_size=2, padding=pad)
                yi = F.avg_pool2d(yi, kernel_size=2, padding=pad)
        terms.append(torch.relu(s[0]))
        per_channel = torch.prod(torch.stack(terms) ** weights, dim=0)  # (C,)
        out.append(per_channel.mean())
    return torch.stack(out)
