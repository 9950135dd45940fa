"""The Python API: ``load_model`` (any checkpoint, export or preset + weights) and ``restore`` (one array).

Example::

    import nafrestore
    model = nafrestore.load_model("runs/my-run")                    # run dir -> checkpoints/best.pt
    model = nafrestore.load_model("configs/nafnet-sidd-width32.yaml", weights="NAFNet-SIDD-width32.pth")
    model = nafrestore.load_model("nafnet-sidd-width32")             # by name: downloaded once, sha256-checked
    clean = nafrestore.restore(model, noisy_uint8_rgb, tile=512)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.io import rgb_to_luma
from ..errors import ImageArrayError
from ..loading import ModelSpec, load_spec
from ..models import in_channels
from ..utils.device import resolve_device, resolve_precision
from ..utils.pixels import INTEGER_DTYPES, from_float, to_float
from .fold import fold_for_inference
from .tiling import DEFAULT_OVERLAP, check_max_megapixels, restore_batch

__all__ = ["load_model", "model_from_spec", "restore"]


def load_model(
    checkpoint_or_preset: str | Path,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    tlc: bool | None = None,
    fold: bool = True,
    channels_last: bool | None = None,
) -> nn.Module:
    """Load a trained network ready for inference.

    Args:
        checkpoint_or_preset: a pretrained model's name (``default``, ``nafnet-sidd-width32``, ...: see
            ``nafrestore models``; a missing file is downloaded once and sha256-checked, unless offline), a
            nafrestore checkpoint (``.pt``), a run directory (its ``checkpoints/best.pt``), a ``.safetensors`` file
            written by ``nafrestore export``, or a YAML config / preset name (e.g. ``lka-nafnet-w12`` for
            ``configs/lka-nafnet-w12.yaml``) together with ``weights``.
        weights: with a config or preset: the weights file (an official NAFNet release such as
            ``NAFNet-SIDD-width32.pth``, a nafrestore checkpoint, or any state dict of that architecture).
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
        tlc: test-time local converter on/off; None keeps the checkpoint's (or config's) setting.
        fold: return the folded inference path (:func:`~nafrestore.inference.fold.fold_for_inference`), which
            computes the same function faster; False returns the plain network.
        channels_last: memory format of the folded model; None picks per device.

    Returns:
        The network in eval mode on ``device`` with gradients off. ``model.nafrestore_spec`` holds the
        architecture and settings (without the weights).

    Raises:
        CheckpointError: see :func:`nafrestore.loading.load_spec`.
        DownloadError: a pretrained model that is not cached and cannot be downloaded (offline, no network).
        NafrestoreError: the device is not available.
    """
    return model_from_spec(
        load_spec(checkpoint_or_preset, weights), device=device, tlc=tlc, fold=fold, channels_last=channels_last
    )


def model_from_spec(
    spec: ModelSpec,
    *,
    device: str | torch.device = "cpu",
    tlc: bool | None = None,
    fold: bool = True,
    channels_last: bool | None = None,
) -> nn.Module:
    """The network a :class:`~nafrestore.loading.ModelSpec` describes, ready for inference (see
    :func:`load_model` for the arguments and the result)."""
    dev = resolve_device(device)
    net = spec.build(tlc)
    net = net.to(dev).requires_grad_(False)
    if fold:
        net = fold_for_inference(net, channels_last=channels_last)
    net.nafrestore_spec = {
        "model_name": spec.model_name,
        "model_args": spec.model_args,
        "tlc_train_size": spec.tlc_train_size,
        "tlc": bool(net.tlc_enabled) if hasattr(net, "tlc_enabled") else None,
        "source": spec.source,
    }
    return net


# ------------------------------------------------------------------------------------------------------------
# Arrays


def run_model(model: nn.Module, rgb: np.ndarray, **kwargs: Any) -> np.ndarray:
    """The network applied to one float32 (H, W, C) image (C = the model's input channels); float32 (H, W, C) out.

    ``kwargs`` as :func:`~nafrestore.inference.tiling.restore_batch` (tile, overlap, tta, precision, max_megapixels,
    tile_batch). The result is written straight into the returned array (no transpose copy of large images).
    """
    device = next(model.parameters()).device
    kwargs["precision"] = resolve_precision(kwargs.get("precision", "fp32"), device)
    result = np.empty(rgb.shape, np.float32)
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # (1, C, H, W) view of the HWC array
    restore_batch(model, image, out=torch.from_numpy(result).permute(2, 0, 1)[None], **kwargs)
    return result


def restore(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    precision: str = "fp32",
    max_megapixels: float | None = None,
    strength: float = 1.0,
) -> np.ndarray:
    """Restore one image held in memory.

    Args:
        model: from :func:`load_model` (or any NAFNet-style module in eval mode).
        image: (H, W) or (H, W, C) array, C = 1, 3 or 4 (RGB order; the 4th channel is alpha, passed through
            untouched); uint8, uint16, or float32 in [0, 1]. Gray images run through an RGB model as three equal
            channels and come back as the BT.601 luma of the output.
        tile: tile side for tiled inference (None: whole image, unless larger than ``max_megapixels``).
        overlap: tile overlap in pixels.
        tta: x8 self-ensemble (8 times slower).
        precision: fp32 | bf16 | fp16 (autocast on the model's device; fp16 not on the CPU).
        max_megapixels: automatic-tiling threshold (None: the device default, 4 MP on the CPU).
        strength: 1 gives the restored image, 0 the input, values in between blend the two (a denoise slider).

    Returns:
        The restored image with the shape and dtype of ``image`` (float output clamped to [0, 1]).

    Raises:
        ImageArrayError: (also a ValueError) an unsupported dtype or shape, an image without pixels (0 x W), NaN or
            infinite samples, or float samples beyond [-1, 2] (``FLOAT_RANGE``; another scale, e.g. 0..255):
            refused rather than blanked or clipped unnoticed.
        ConfigError: ``max_megapixels`` is not a positive number (or ``inf``).
        ValueError: a strength outside [0, 1].
    """
    array = np.asarray(image)
    hwc = _checked_image(array)
    check_max_megapixels(max_megapixels)
    channels = hwc.shape[2]
    alpha = hwc[:, :, 3] if channels == 4 else None
    colour = to_float(hwc[:, :, :3] if channels == 4 else hwc)  # (H, W, 1 | 3)
    restored = restore_rgb(
        model, colour, tile=tile, overlap=overlap, tta=tta, precision=precision, max_megapixels=max_megapixels,
        strength=strength,
    )  # fmt: skip
    if array.dtype in INTEGER_DTYPES:
        out = from_float(restored, array.dtype)
    else:
        out = np.clip(np.nan_to_num(restored, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0, out=restored)
    if alpha is not None:
        out = np.concatenate([out, alpha[:, :, None]], axis=2)
    return out.reshape(array.shape)


#: Float samples restore() accepts: [0, 1], and as far outside as unclipped synthetic noise leaves them (Gaussian
#: noise of sigma 50/255 reaches -0.8 and 1.8 at four sigma), which the networks were trained on; beyond, the image is
#: on another scale (0..255).
FLOAT_RANGE = (-1.0, 2.0)


def _checked_image(array: np.ndarray) -> np.ndarray:
    """``array`` as (H, W, C), after the checks :func:`restore` documents (see its Raises)."""
    if array.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageArrayError(f"restore takes uint8, uint16 or float32 images, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        hwc = array
    elif array.ndim == 2:
        hwc = array[:, :, None]
    else:
        raise ImageArrayError(f"restore takes an (H, W) or (H, W, C) image with C = 1, 3 or 4, got shape {array.shape}")
    if hwc.shape[0] == 0 or hwc.shape[1] == 0:
        raise ImageArrayError(f"restore takes an image of at least 1x1 pixels, got shape {array.shape} (no pixels)")
    if array.dtype == np.float32:
        colour = hwc[:, :, :3]  # the alpha channel is passed through untouched
        low, high = float(colour.min()), float(colour.max())  # NaN propagates through min and max
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = int(np.count_nonzero(~np.isfinite(colour)))
            raise ImageArrayError(
                f"The image holds {bad} NaN or infinite sample(s); one is enough to spread through the network's "
                f"normalisation and blank the whole image (or its tile), so it was not restored. Replace them first, "
                f"e.g. np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)."
            )
        if low < FLOAT_RANGE[0] or high > FLOAT_RANGE[1]:
            raise ImageArrayError(
                f"float32 images hold values in [0, 1] (a little outside is fine: unclipped noise); this one spans "
                f"[{low:.6g}, {high:.6g}], beyond [{FLOAT_RANGE[0]:g}, {FLOAT_RANGE[1]:g}], so it is on another scale "
                f"and would come back clipped to [0, 1]. Divide a 0..255 image by 255 (or pass it as uint8)."
            )
    return hwc


def restore_rgb(model: nn.Module, colour: np.ndarray, *, strength: float = 1.0, **kwargs: Any) -> np.ndarray:
    """Float32 (H, W, 1 | 3) in, float32 of the same shape out, adapting gray/RGB to the model's input channels.

    ``strength`` in [0, 1] blends the result with the input (see :func:`blend`); ``kwargs`` go to :func:`run_model`.
    """
    want = in_channels(model)
    have = colour.shape[2]
    if have == want:
        out = run_model(model, colour, **kwargs)
    elif have == 1 and want == 3:
        out = rgb_to_luma(run_model(model, np.repeat(colour, 3, axis=2), **kwargs))[:, :, None]
    elif have == 3 and want == 1:
        out = np.repeat(run_model(model, rgb_to_luma(colour)[:, :, None], **kwargs), 3, axis=2)
    else:
        raise ValueError(f"the model takes {want}-channel images; got {have} channels")
    return blend(colour, out, strength)


def blend(image: np.ndarray, restored: np.ndarray, strength: float) -> np.ndarray:
    """``image + strength * (restored - image)``: 1 is the restored image, 0 the input, in between a mix, as photo
    editors' denoise sliders do. Float arrays of one shape; ``restored`` is updated in place and returned.

    Raises:
        ValueError: ``strength`` outside [0, 1].
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength == 1.0:
        return restored
    restored -= image
    restored *= np.float32(strength)
    restored += image
    return restored
