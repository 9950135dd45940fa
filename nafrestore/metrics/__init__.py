"""Image-restoration metrics: PSNR, SSIM, MS-SSIM, LPIPS (per image) and rFID, KID (per set).

Conventions (see :mod:`nafrestore.metrics.common`): images are (B, C, H, W) RGB tensors, float in [0, 1] (or
uint8), on any device; by default they are clamped and rounded to 8 bits before scoring, as BasicSR does. Per-image
metrics return a (B,) float64 tensor; average them with :func:`mean_finite`, which leaves out (and counts) the
infinite PSNR of identical images. Pretrained networks are downloaded once (unless offline) and sha256-checked: see
:mod:`nafrestore.metrics.weights`.

Typical use in an evaluation loop::

    suite = MetricSuite("psnr,ssim,lpips,rfid", y_channel=False, crop_border=0, device="cuda")
    for pred, gt in batches:
        rows = suite.update(pred, gt)   # [{"psnr": ..., "ssim": ..., "lpips": ...}, ...] one per image
    summary = suite.compute()           # {"psnr": mean, ..., "rfid": ..., "n_images": N, "notes": [...], ...}

Heavy dependencies (lpips, pytorch_fid, torchvision) are imported only when a network is built.

Note: the package attributes ``psnr``, ``ssim`` and ``lpips`` are the metric functions, which shadow the submodules
of the same names; reach the submodules with ``from nafrestore.metrics.ssim import ...`` or ``importlib``.
"""

from nafrestore.metrics.common import (
    MetricWarning,
    image_to_tensor,
    images_to_tensor,
    mean_finite,
    quantize,
    rgb_to_y,
    tensor_to_uint8,
)
from nafrestore.metrics.fid import (
    RFID,
    count_patches,
    extract_patches,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    get_fid_extractor,
    kernel_inception_distance,
)
from nafrestore.metrics.lpips import get_lpips_model, lpips
from nafrestore.metrics.psnr import psnr
from nafrestore.metrics.ssim import ms_ssim, ms_ssim_num_scales, ssim
from nafrestore.metrics.suite import (
    METRIC_INFO,
    METRICS,
    PER_IMAGE_METRICS,
    SET_METRICS,
    MetricInfo,
    MetricSuite,
    parse_metric_names,
)
from nafrestore.metrics.weights import KNOWN_WEIGHTS, resolve_weights, weights_status

__all__ = [
    "KNOWN_WEIGHTS",
    "METRICS",
    "METRIC_INFO",
    "PER_IMAGE_METRICS",
    "RFID",
    "SET_METRICS",
    "MetricInfo",
    "MetricSuite",
    "MetricWarning",
    "count_patches",
    "extract_patches",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_from_features",
    "get_fid_extractor",
    "get_lpips_model",
    "image_to_tensor",
    "images_to_tensor",
    "kernel_inception_distance",
    "lpips",
    "mean_finite",
    "ms_ssim",
    "ms_ssim_num_scales",
    "parse_metric_names",
    "psnr",
    "quantize",
    "resolve_weights",
    "rgb_to_y",
    "ssim",
    "tensor_to_uint8",
    "weights_status",
]
