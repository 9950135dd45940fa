"""Input conventions shared by the metrics.

Images are tensors of shape (B, C, H, W) (a single (C, H, W) image is accepted too), RGB with C = 3 (C = 1 is
accepted as grey), float in [0, 1] or uint8, on any device. By default they are clamped to [0, 1] and rounded to
8 bits before scoring, BasicSR's ``tensor2img`` convention: a model's output then scores exactly as the 8-bit PNG it
would be saved as, and scores are comparable with published tables. ``quantize=False`` scores the raw floats.

The pixel metrics (PSNR, SSIM, MS-SSIM) work in float64 on the 0-255 scale, as BasicSR and scikit-image do.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from nafrestore.errors import DataError
from nafrestore.utils.pixels import INTEGER_DTYPES, round_to_8bit, to_float

# ITU-R BT.601 luma on the "studio swing" scale, as MATLAB's rgb2ycbcr and BasicSR's rgb2ycbcr / to_y_channel:
# Y = 16 + (65.481 R + 128.553 G + 24.966 B) for R, G, B in [0, 1], i.e. Y in [16, 235] on the 0-255 scale.
BT601_Y_WEIGHTS = (65.481, 128.553, 24.966)
BT601_Y_OFFSET = 16.0


def image_to_tensor(img: np.ndarray, *, bgr: bool = False, device: torch.device | str | None = None) -> Tensor:
    """An HxWxC (or HxW) image array as a (1, C, H, W) float32 tensor in [0, 1].

    Args:
        img: uint8 or uint16 (scaled to [0, 1] by :func:`nafrestore.utils.pixels.to_float`) or float (taken as
            already in [0, 1]) array.
        bgr: the array is BGR (as from ``cv2.imread``); its channels are reversed to RGB.
        device: where to put the tensor.
    """
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise DataError(f"expected an HxW or HxWxC image array, got shape {arr.shape}")
    if bgr and arr.shape[2] >= 3:
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)  # BGR(A) -> RGB(A)
    if arr.dtype not in INTEGER_DTYPES and not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"unsupported image dtype {arr.dtype}: expected uint8, uint16 or float in [0, 1]")
    t = torch.from_numpy(to_float(arr))
    return t.permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def images_to_tensor(
    imgs: Sequence[np.ndarray], *, bgr: bool = False, device: torch.device | str | None = None
) -> Tensor:
    """Same-size HxWxC arrays (uint8/uint16/float) as one (B, C, H, W) float32 batch in [0, 1]."""
    if len(imgs) == 0:
        raise DataError("no images given")
    ts = [image_to_tensor(a, bgr=bgr) for a in imgs]
    shapes = {tuple(t.shape) for t in ts}
    if len(shapes) != 1:
        raise DataError(f"images of different sizes cannot be batched: {sorted(shapes)}")
    return torch.cat(ts).to(device)


def as_float01(x: Tensor) -> Tensor:
    """A float tensor on the [0, 1] scale: uint8 is divided by 255; float16/bfloat16 are promoted to float32."""
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a float tensor in [0, 1] or uint8, got dtype {x.dtype}")
    if x.dtype in (torch.float16, torch.bfloat16):
        # 8-bit rounding in half precision can land on the wrong side of .5; float32 is exact here.
        return x.float()
    return x


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8 bits: (B, C, H, W) float in [0, 1] (or uint8) -> the same shape, values k / 255.

    BasicSR's ``tensor2img`` rounding (see :func:`nafrestore.utils.pixels.round_to_8bit`), so it reproduces what
    ``cv2.imwrite`` would have stored.
    """
    return round_to_8bit(as_float01(x))


def tensor_to_uint8(x: Tensor) -> np.ndarray:
    """A (B, C, H, W) tensor in [0, 1] as a (B, H, W, C) uint8 array (clamped and rounded as :func:`quantize`)."""
    x = as_float01(x)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    q = round_to_8bit(x.detach()).mul(255.0).round().to(torch.uint8)
    return q.permute(0, 2, 3, 1).cpu().numpy()


def float64_device(device: torch.device) -> torch.device:
    """The device to do float64 work on: MPS has no float64, so it falls back to the CPU."""
    return torch.device("cpu") if device.type == "mps" else device


def to_255(x: Tensor, quantize: bool = True) -> Tensor:
    """(B, C, H, W) in [0, 1] -> float64 on the 0-255 scale; integer-valued when ``quantize``."""
    x = as_float01(x)
    if quantize:
        # Round in the input dtype first (as BasicSR), then widen: integers up to 255 are exact in float32.
        x = x.clamp(0.0, 1.0).mul(255.0).round()
        return x.to(device=float64_device(x.device), dtype=torch.float64)
    return x.to(device=float64_device(x.device), dtype=torch.float64) * 255.0


def rgb_to_y(x255: Tensor) -> Tensor:
    """BT.601 luma as BasicSR's ``to_y_channel``: (B, 3, H, W) RGB on 0-255 -> (B, 1, H, W) Y on 0-255.

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B on the 0-255 scale (Y in [16, 235]); not rounded,
    as BasicSR. Single-channel input is returned as it is (BasicSR does the same).
    """
    if x255.shape[1] == 1:
        return x255
    if x255.shape[1] != 3:
        raise DataError(f"the Y channel needs RGB images (3 channels), got {x255.shape[1]} channels")
    w = torch.tensor(BT601_Y_WEIGHTS, dtype=x255.dtype, device=x255.device).view(1, 3, 1, 1)
    return (x255 * w).sum(dim=1, keepdim=True) / 255.0 + BT601_Y_OFFSET


def crop_border(x: Tensor, border: int) -> Tensor:
    """Remove ``border`` pixels from each side of a (B, C, H, W) tensor (BasicSR's ``crop_border``)."""
    if border < 0:
        raise ValueError(f"crop_border must be >= 0, got {border}")
    if border == 0:
        return x
    h, w = x.shape[-2:]
    if h <= 2 * border or w <= 2 * border:
        raise DataError(f"crop_border={border} leaves nothing of a {h}x{w} image; lower crop_border")
    return x[..., border:-border, border:-border]


def check_pair(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a prediction / ground-truth pair and bring both to (B, C, H, W) on gt's device."""
    if not isinstance(pred, Tensor) or not isinstance(gt, Tensor):
        raise TypeError(f"expected torch tensors, got {type(pred).__name__} and {type(gt).__name__}")
    if pred.ndim == 3:
        pred = pred.unsqueeze(0)
    if gt.ndim == 3:
        gt = gt.unsqueeze(0)
    if pred.shape != gt.shape:
        raise DataError(
            f"prediction and ground truth differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)} "
            f"(expected the same (B, C, H, W))"
        )
    if pred.ndim != 4:
        raise DataError(f"expected (B, C, H, W) images, got shape {tuple(pred.shape)}")
    if pred.shape[1] not in (1, 3):
        raise DataError(f"expected RGB (3) or grey (1) channels in dim 1, got shape {tuple(pred.shape)}")
    return pred.to(gt.device), gt


def prepare_pair(
    pred: Tensor, gt: Tensor, *, y_channel: bool = False, crop: int = 0, quantize: bool = True
) -> tuple[Tensor, Tensor]:
    """Both images as float64 on the 0-255 scale: quantised (optional), border-cropped, Y channel (optional)."""
    pred, gt = check_pair(pred, gt)
    x, y = to_255(pred, quantize), to_255(gt, quantize)
    x, y = crop_border(x, crop), crop_border(y, crop)
    if y_channel:
        x, y = rgb_to_y(x), rgb_to_y(y)
    return x, y


def mean_finite(values: Sequence[float] | np.ndarray | Tensor) -> tuple[float, int]:
    """Mean of the values that are not infinite, and how many infinite ones were left out.

    PSNR is +inf for an image identical to its ground truth; averaging it in would make the mean inf. NaN is kept
    (it signals a broken output and should show). No values -> (nan, 0); only infinite values -> (inf, n).
    """
    if isinstance(values, Tensor):
        values = values.detach().double().cpu().numpy()
    arr = np.asarray(values, dtype=np.float64).ravel()
    inf = np.isinf(arr)
    n_inf = int(inf.sum())
    if arr.size == 0:
        return math.nan, 0
    if n_inf == arr.size:
        return math.inf, n_inf
    return float(arr[~inf].mean()), n_inf


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """Plain float32 network evaluation: no autocast and, on CUDA, no TF32 convolutions.

    The metric networks (LPIPS, Inception) must not inherit a training loop's mixed precision or TF32 settings:
    scores would then depend on the GPU generation.
    """
    old = torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
    try:
        autocast = torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else None
        with autocast if autocast is not None else contextlib.nullcontext():
            yield
    finally:
        torch.backends.cudnn.allow_tf32 = old


class MetricWarning(UserWarning):
    """A score was computed but should be read with care (e.g. rFID from fewer samples than feature dimensions)."""
