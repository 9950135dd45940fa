"""The folded inference path: the trained function with its per-channel affines merged into 1x1 convolutions.

Every LayerNorm2d of NAFNet and LKA-NAFNet feeds a 1x1 convolution, and most residual scales multiply a 1x1
convolution's output, so at inference these per-channel multiplies and adds fold into the convolutions' weights:

- NAFBlock: ``norm1`` affine -> ``conv1``; ``norm2`` affine -> ``conv4``; ``beta`` -> ``conv3``; ``gamma`` -> ``conv5``.
- LKABlock: ``norm2`` affine -> ``mlp.fc1``; ``layer_scale_2`` -> ``mlp.fc2``. The attention branch is
  ``ls1 * (n + proj_2(lka(gelu(proj_1(n)))))`` with ``n = w * xhat + b`` (SpatialAttention's inner shortcut sees the
  affine output, so ``layer_scale_1`` cannot simply fold into ``proj_2``). Expanded, it is
  ``(ls1 * w) * xhat + proj_2'(...)`` with ``proj_1' = proj_1 . diag(w)`` (+ ``proj_1 b`` in its bias) and
  ``proj_2' = diag(ls1) . proj_2`` (+ ``ls1 * b`` in its bias): one fused multiply-add on the shortcut replaces
  the affine and the layer scale. The gating unit between them (LKA or LSKA, ``LKABlock(attention=...)``) is
  kept as it is.

What is left of each LayerNorm is the affine-free normalisation, run as ``F.layer_norm(weight=None, bias=None)``.
The result equals the unfolded model up to float rounding (about 1e-6 in float32).

Memory format: on the CPU the folded networks run 1.4-2x faster channels-last (NHWC) than contiguous (measured
with ``scripts/bench_fold.py``), so CPU models are channels-last; on CUDA, where cuDNN's NHWC/NCHW choice for
depthwise convolutions depends on GPU, dtype and size, both formats are timed once at fold time (a few forwards
on a 256 x 256 input) and the faster is kept; MPS and other devices stay contiguous (see
:func:`prefer_channels_last`). ``fold_for_inference(channels_last=...)`` overrides the rule. A channels-last
folded model converts its input itself (forward pre-hook).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models import in_channels
from ..models.layers import LayerNorm2d
from ..models.nafnet import LKABlock, NAFBlock
from ..utils.device import MEMORY_FORMATS, time_alternately

__all__ = ["FoldedLKABlock", "FoldedLayerNorm2d", "FoldedNAFBlock", "fold_for_inference", "prefer_channels_last"]


class FoldedLayerNorm2d(LayerNorm2d):
    """LayerNorm2d without its affine (which was folded into the next convolution): (B, C, H, W) -> same.

    ``weight`` and ``bias`` stay (ones and zeros, frozen) so the module still reads as a LayerNorm2d, e.g. for
    :func:`~nafrestore.models.layers.use_plain_ops`, but the forward skips them.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:  # elementary ops, for ONNX / TorchScript
            mu = x.mean(1, keepdim=True)
            var = (x - mu).pow(2).mean(1, keepdim=True)
            return (x - mu) / (var + self.eps).sqrt()
        out = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), None, None, self.eps)
        return out.permute(0, 3, 1, 2)


@torch.no_grad()
def _fold_affine_into_conv(norm: LayerNorm2d, conv: nn.Conv2d) -> None:
    """conv(w * x + b) == conv'(x): scale the input channels of a 1x1 conv by w and add W @ b to its bias."""
    weight = conv.weight  # (out, in, 1, 1)
    extra = weight[:, :, 0, 0] @ norm.bias  # (out,)
    if conv.bias is None:
        conv.bias = nn.Parameter(extra.clone())
    else:
        conv.bias.add_(extra)
    weight.mul_(norm.weight.view(1, -1, 1, 1))


@torch.no_grad()
def _fold_scale_into_conv(conv: nn.Conv2d, scale: torch.Tensor) -> None:
    """conv(x) * s == conv'(x): scale a conv's output channels (weights and bias) by s."""
    s = scale.reshape(-1)
    conv.weight.mul_(s.view(-1, 1, 1, 1))
    if conv.bias is not None:
        conv.bias.mul_(s)
    else:
        conv.bias = nn.Parameter(torch.zeros_like(s))


def _plain_norm(norm: LayerNorm2d) -> FoldedLayerNorm2d:
    out = FoldedLayerNorm2d(norm.weight.shape[0], norm.eps).to(norm.weight.device, norm.weight.dtype)
    out.plain = norm.plain
    return out


class FoldedNAFBlock(nn.Module):
    """A NAFBlock with its norm affines and beta/gamma folded into conv1/conv4 and conv3/conv5 (eval only)."""

    def __init__(self, block: NAFBlock) -> None:
        super().__init__()
        _fold_affine_into_conv(block.norm1, block.conv1)
        _fold_affine_into_conv(block.norm2, block.conv4)
        _fold_scale_into_conv(block.conv3, block.beta)
        _fold_scale_into_conv(block.conv5, block.gamma)
        self.norm1, self.norm2 = _plain_norm(block.norm1), _plain_norm(block.norm2)
        self.conv1, self.conv2, self.conv3 = block.conv1, block.conv2, block.conv3
        self.sca, self.sg = block.sca, block.sg
        self.conv4, self.conv5 = block.conv4, block.conv5

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.sca(self.sg(self.conv2(self.conv1(self.norm1(inp)))))
        y = inp + self.conv3(x)
        return y + self.conv5(self.sg(self.conv4(self.norm2(y))))


class FoldedLKABlock(nn.Module):
    """An LKABlock with norm affines and layer scales folded (see the module docstring); eval only."""

    def __init__(self, block: LKABlock) -> None:
        super().__init__()
        attn, mlp = block.attn, block.mlp
        ls1 = block.layer_scale_1.scale.detach()
        with torch.no_grad():
            # Shortcut term of the attention branch: ls1 * (w * xhat + b) -> (ls1 * w) * xhat, + ls1 * b in proj_2.
            self.shortcut_scale = nn.Parameter((ls1 * block.norm1.weight).clone(), requires_grad=False)
            shortcut_bias = ls1 * block.norm1.bias
            _fold_affine_into_conv(block.norm1, attn.proj_1)
            _fold_scale_into_conv(attn.proj_2, ls1)
            attn.proj_2.bias.add_(shortcut_bias)
        _fold_affine_into_conv(block.norm2, mlp.fc1)
        _fold_scale_into_conv(mlp.fc2, block.layer_scale_2.scale)
        self.norm1, self.norm2 = _plain_norm(block.norm1), _plain_norm(block.norm2)
        self.proj_1, self.activation = attn.proj_1, attn.activation
        self.spatial_gating_unit, self.proj_2 = attn.spatial_gating_unit, attn.proj_2
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm1(x)
        a = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(n))))
        x = x + torch.addcmul(a, n, self.shortcut_scale.view(1, -1, 1, 1))
        return x + self.mlp(self.norm2(x))


def prefer_channels_last(device: torch.device | str) -> bool | None:
    """The memory-format rule per device type: True (channels-last), False (contiguous) or None (measure).

    CPU: channels-last, measured 1.4-2.1x faster for the folded NAFNet / LKA-NAFNet presets with
    ``scripts/bench_fold.py`` (oneDNN's NHWC convolutions; the normalisation reads a channels-last view anyway).
    CUDA: measured once at load (:func:`measure_channels_last`), as cuDNN's choice between NHWC and NCHW for
    depthwise convolutions depends on the GPU, dtype and size. MPS and others: contiguous.
    """
    kind = torch.device(device).type
    if kind == "cpu":
        return True
    if kind == "cuda":
        return None
    return False


def measure_channels_last(model: nn.Module, size: int = 256, repeats: int = 3) -> bool:
    """Whether ``model`` (a folded network, on its device) runs faster channels-last on a size x size image.

    Times ``repeats`` forwards per format after one warm-up each, alternating; leaves the model contiguous.
    """
    param = next(model.parameters())
    x = torch.rand(1, in_channels(model), size, size, device=param.device, dtype=param.dtype)
    inputs = {name: x.contiguous(memory_format=fmt) for name, fmt in MEMORY_FORMATS.items()}
    with torch.inference_mode():
        best = time_alternately(
            lambda name: model(inputs[name]),
            list(MEMORY_FORMATS),
            device=param.device,
            prepare=lambda name: model.to(memory_format=MEMORY_FORMATS[name]),
            repeats=repeats,
        )
    model.to(memory_format=torch.contiguous_format)
    return best["channels_last"] < best["contiguous"]


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    (x, *rest) = args
    return (x.contiguous(memory_format=torch.channels_last), *rest)


def fold_for_inference(model: nn.Module, *, channels_last: bool | str | None = None) -> nn.Module:
    """A folded copy of ``model`` for inference: same outputs, fewer element-wise passes.

    Args:
        model: a NAFNet or LKANAFNet (any other module is deep-copied with only its blocks folded).
        channels_last: run in channels-last memory format (the input is converted by a forward pre-hook);
            ``"measure"`` times both formats once (:func:`measure_channels_last`); None follows
            :func:`prefer_channels_last` for the model's device (which measures on CUDA).

    Returns:
        A new module in eval mode with frozen parameters; ``model`` is left unchanged. Its ``folded`` attribute
        is True and ``channels_last`` says the memory format chosen. Not trainable: dropout and drop-path are
        gone and the parameters no longer match the training layout (export the unfolded weights instead).
    """
    if getattr(model, "folded", False):
        return model
    folded = copy.deepcopy(model).eval()
    folded.requires_grad_(False)

    def replace(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, NAFBlock):
                setattr(parent, name, FoldedNAFBlock(child))
            elif isinstance(child, LKABlock):
                setattr(parent, name, FoldedLKABlock(child))
            else:
                replace(child)

    replace(folded)
    folded.requires_grad_(False)
    param = next(folded.parameters(), None)
    if channels_last is None:
        channels_last = prefer_channels_last(param.device if param is not None else "cpu")
        channels_last = "measure" if channels_last is None else channels_last
    if channels_last == "measure":
        channels_last = param is not None and measure_channels_last(folded)
    if channels_last:
        folded.to(memory_format=torch.channels_last)
        folded.register_forward_pre_hook(_to_channels_last)
    folded.folded = True
    folded.channels_last = bool(channels_last)
    return folded
