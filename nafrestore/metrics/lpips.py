"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, with the backbone read from a verified local file.

``lpips.LPIPS(pretrained=True)`` would download torchvision's ImageNet backbone; here the network is built with
``pnet_rand=True`` (random backbone, no download) and the backbone is loaded from ``alexnet-owt-7be5be79.pth`` /
``vgg16-397923af.pth`` (see :mod:`nafrestore.metrics.weights`). The calibrated linear layers ("lin" layers,
version 0.1) ship inside the lpips package and are loaded by it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from nafrestore.errors import WeightsError
from nafrestore.metrics.common import as_float01, check_pair, exact_fp32, float64_device
from nafrestore.metrics.common import crop_border as _crop
from nafrestore.metrics.common import quantize as _quantize
from nafrestore.metrics.weights import read_weights_file, resolve_weights

LPIPS_NETS = ("alex", "vgg")
BACKBONE_WEIGHTS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

_MODELS: dict[tuple[str, str, str], nn.Module] = {}


def _check_net(net: str) -> None:
    if net not in LPIPS_NETS:
        raise ValueError(f"unknown LPIPS network {net!r}; use one of {', '.join(LPIPS_NETS)}")


def load_lpips_backbone(model: nn.Module, state_dict: dict[str, Any], source: str = "the state dict") -> None:
    """Copy a torchvision AlexNet/VGG16 state dict's ``features.*`` tensors into an ``lpips.LPIPS`` backbone.

    The lpips wrappers (``lpips.pretrained_networks.alexnet`` / ``vgg16``) split torchvision's ``features``
    Sequential into ``slice1..5`` that keep the original child indices, so ``net.sliceK.<i>.<param>`` is
    ``features.<i>.<param>``. Every backbone tensor must be found, with the right shape.
    """
    target = model.net
    mapped = {}
    for key in target.state_dict():
        _, idx, param = key.split(".", 2)  # "slice2.3.weight" -> features.3.weight
        src = f"features.{idx}.{param}"
        if src not in state_dict:
            raise WeightsError(
                f"{source} lacks {src!r}: it is not a torchvision {model.pnet_type} state dict. Download the "
                f"official file again."
            )
        mapped[key] = state_dict[src]
    try:
        target.load_state_dict(mapped, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source} does not fit the LPIPS {model.pnet_type} backbone: {exc}") from exc


def build_lpips(net: str = "alex", backbone_state_dict: dict[str, Any] | None = None, source: str = "") -> nn.Module:
    """An ``lpips.LPIPS(net=net, version='0.1')`` on the CPU in eval mode, with no download.

    Args:
        net: ``'alex'`` or ``'vgg'``.
        backbone_state_dict: torchvision ImageNet state dict of the backbone; None leaves it random (tests only).
        source: the file it came from, for error messages.
    """
    _check_net(net)
    import lpips as lpips_pkg  # here, not at the top: it and torchvision add ~3 s to a command's start (measured)

    with warnings.catch_warnings():
        # lpips 0.1.4 still passes torchvision's deprecated `pretrained=` argument.
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_pkg.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if backbone_state_dict is not None:
        load_lpips_backbone(model, backbone_state_dict, source or "the backbone state dict")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def get_lpips_model(
    net: str = "alex",
    device: torch.device | str = "cpu",
    *,
    weights_dir: str | os.PathLike | None = None,
    allow_unverified: bool = False,
) -> nn.Module:
    """The LPIPS network for ``net`` on ``device``, built once per (net, device, weights file) and cached.

    Raises:
        WeightsError: the backbone weights file is missing or fails its checksum (see ``resolve_weights``).
    """
    _check_net(net)
    path = resolve_weights(BACKBONE_WEIGHTS[net], weights_dir, verify=not allow_unverified)
    device = torch.device(device)
    key = (net, str(device), os.path.abspath(path))
    if key not in _MODELS:
        _MODELS[key] = build_lpips(net, read_weights_file(path), str(path)).to(device)
    return _MODELS[key]


@torch.no_grad()
def lpips(
    pred: Tensor,
    gt: Tensor,
    *,
    net: str = "alex",
    quantize: bool = True,
    crop_border: int = 0,
    weights_dir: str | os.PathLike | None = None,
    allow_unverified: bool = False,
    model: nn.Module | None = None,
) -> Tensor:
    """Per-image LPIPS distance (version 0.1, spatially averaged).

    Args:
        pred, gt: (B, 3, H, W) float in [0, 1] (or uint8), same shape, any device; grey images are repeated to RGB.
            They are mapped to [-1, 1] as the lpips package expects.
        net: backbone, ``'alex'`` (the usual choice for restoration papers) or ``'vgg'``.
        quantize: clamp and round to 8 bits first (default).
        crop_border: pixels removed from each side before scoring.
        weights_dir: where to look for the backbone weights first.
        allow_unverified: skip the sha256 check of the backbone file (tests / non-official weights only).
        model: an LPIPS network to use instead of the cached one (from :func:`get_lpips_model`).

    Returns:
        (B,) float64 tensor on the input's device (the CPU for MPS inputs: MPS has no float64); 0 for identical
        images, larger is more different.
    """
    pred, gt = check_pair(pred, gt)
    device = gt.device
    if model is None:
        model = get_lpips_model(net, device, weights_dir=weights_dir, allow_unverified=allow_unverified)
    model_device = next(model.parameters()).device
    x, y = (_quantize(t) if quantize else as_float01(t) for t in (pred, gt))
    x, y = _crop(x, crop_border), _crop(y, crop_border)
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    x, y = x.to(model_device, torch.float32), y.to(model_device, torch.float32)
    with exact_fp32(model_device):
        d = model(x * 2.0 - 1.0, y * 2.0 - 1.0)
    return d.reshape(-1).to(device=float64_device(device), dtype=torch.float64)
