"""Non-local means guided by the network's own output, blended into it: a second, independent estimate for mild
real camera noise.

Why: on the PolyU real-noise pairs the errors of the shipped mild network and of non-local means (NLM) are far
from the same: averaging the two gains about 0.3 dB over either, while the network's own flip ensemble gains 0.07
(``bench/real-noise-recipes.md``, session 12). NLM averages each pixel with pixels whose neighbourhoods look alike
anywhere in a 21 x 21 window, which the network's receptive field does not do in the same way. Here the
neighbourhoods are compared on the network's output (a pilot estimate with most of the noise gone, as BM3D's second
step does), so the weights follow the image, not the noise, and the noisy input is what gets averaged.

- :func:`nonlocal_means`: the filter itself, ``(B, C, H, W)`` plain PyTorch ops (traceable and exportable).
- :class:`NonLocalMeansBlend`: a residual filter (the call of ``layers.GaussianHighPass``) that high-passes the
  residual as that filter does and then moves the output towards the guided NLM estimate, more on flat areas than
  on texture, only for mild noise.

Written by hand (not OpenCV's ``fastNlMeansDenoisingColored``) because it runs inside the model: on tiles, under
``torch.inference_mode``, in ONNX and TorchScript exports, on the GPU, guided by a second image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import GaussianHighPass, noise_level, separable_filter

#: Search window radius (px) and the stride of the offsets in it: 11 x 11 offsets spread over 21 x 21 pixels. All
#: 21 x 21 offsets cost four times as much and scored within 0.03 dB of this on the development pairs; a smaller
#: window gains less (OpenCV's NLM blended: 21 px 38.05, 11 px 37.95, 7 px 37.85 dB on PolyU; session 12).
SEARCH_RADIUS = 10
SEARCH_STRIDE = 2
#: Side (px) of the square patches whose mean squared difference weighs each offset.
PATCH = 7
#: Noise levels (0-255, ``layers.noise_level``) over which the blend fades out: above the higher one the blend is
#: off and costs nothing. The PolyU photographs read 0-6.8; the default pair's gate opens at 8, where the strong
#: network takes over, so the photographs that run both networks never run NLM too.
FADE = (6.0, 8.0)


def nonlocal_means(
    image: torch.Tensor,
    guide: torch.Tensor,
    h: torch.Tensor,
    radius: int = SEARCH_RADIUS,
    stride: int = SEARCH_STRIDE,
    patch: int = PATCH,
) -> torch.Tensor:
    """Each pixel of ``image`` as the weighted mean of the pixels at offsets ``range(-radius, radius + 1, stride)``
    in both directions, weighted by ``exp(-D / h**2)``, ``D`` the mean squared difference of ``guide`` over the two
    ``patch`` x ``patch`` neighbourhoods (the pixel itself weighs 1). Not differentiable (in-place arithmetic:
    give it tensors that need no gradient).

    Args:
        image: (B, C, H, W) float, what is averaged.
        guide: (B, G, H, W) float, what the neighbourhoods are compared on (G = 1: a luma; any G).
        h: (B,) float > 0, the filtering strength per image (in the guide's units).

    Returns:
        (B, C, H, W) float32. Borders are replicate-padded.
    """
    image, guide = image.float(), guide.float()
    height, width = image.shape[2], image.shape[3]
    # exp(-D / h^2) with D a patch mean: the patch sum times -1 / (h^2 * patch^2).
    scale = (-1.0 / (h.float().clamp_min(1e-6) ** 2 * (patch * patch * guide.shape[1]))).view(-1, 1, 1, 1)
    pad = (radius, radius, radius, radius)
    image_p, guide_p = F.pad(image, pad, mode="replicate"), F.pad(guide, pad, mode="replicate")
    total = torch.zeros_like(image)
    weights = torch.zeros_like(image[:, :1])
    box = torch.ones(patch, dtype=torch.float32, device=image.device)  # separable_filter with ones: a patch sum
    for dy in range(-radius, radius + 1, stride):  # plain loops over ints: TorchScript scripts them
        for dx in range(-radius, radius + 1, stride):
            y0, x0 = radius + dy, radius + dx
            diff = torch.sub(guide, guide_p[:, :, y0 : y0 + height, x0 : x0 + width])
            weight = separable_filter(diff.square_().sum(dim=1, keepdim=True), box).mul_(scale).exp_()
            total.addcmul_(weight, image_p[:, :, y0 : y0 + height, x0 : x0 + width])
            weights.add_(weight)
    return total / weights


def check_strengths(strengths: Sequence[float]) -> tuple[float, float]:
    """``strengths`` as ``(flat, texture)`` after checking both are in [0, 1]; ValueError otherwise."""
    if len(strengths) != 2 or not all(0.0 <= s <= 1.0 for s in strengths):
        raise ValueError(f"a non-local means blend needs strengths [flat, texture] in [0, 1], got {list(strengths)}")
    return float(strengths[0]), float(strengths[1])


class NonLocalMeansBlend(nn.Module):
    """A residual filter: ``highpass`` on the network's residual, then the output ``y = image + highpass(r)`` moved
    towards non-local means of the input guided by ``y``'s luma: ``y + m * (nonlocal_means(image, luma(y)) - y)``.

    ``m = fade * (texture + (flat - texture) * flatness(image))`` per pixel, with ``flatness`` the high-pass's own
    (1 on smooth areas, 0 on texture; it needs ``residual_highpass_flat``) and ``fade`` 1 below ``FADE[0]`` of the
    input's estimated noise level, 0 above ``FADE[1]``. The NLM strength ``h`` is that noise level (``guide`` and
    levels on the [0, 1] scale): a clean photograph reads a low level and is averaged only with its near-identical
    neighbourhoods. No parameters. Shapes: (B, C, H, W) -> same, as ``GaussianHighPass``.

    A batch whose images are all above ``FADE[1]`` skips the NLM (unless ``branchless``, which exports set: a
    traced graph must not depend on the example image).
    """

    def __init__(self, highpass: GaussianHighPass, strengths: Sequence[float]) -> None:
        super().__init__()
        if not highpass.flat:
            raise ValueError("residual_nonlocal_means needs residual_highpass_flat (its flatness weighs the blend)")
        self.highpass = highpass
        self.flat_strength, self.texture_strength = check_strengths(strengths)
        self.fade_low, self.fade_high = FADE
        self.radius, self.stride, self.patch = SEARCH_RADIUS, SEARCH_STRIDE, PATCH
        self.branchless = False

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: the residual; ``image``: the network's input; both (B, C, H, W)."""
        filtered, flatness = self.highpass.filter(x, image)
        if image is None or flatness is None:
            return filtered
        level = noise_level(image)
        fade = ((self.fade_high - level * 255.0) / (self.fade_high - self.fade_low)).clamp(0.0, 1.0).view(-1, 1, 1, 1)
        if not self.branchless and bool((fade == 0).all()):
            return filtered
        image32 = image.float()
        out = image32 + filtered.float()
        # A target for the output, not differentiated (detached: a network is trained through ``out`` only).
        guide = out.detach().mean(dim=1, keepdim=True)
        estimate = nonlocal_means(image32.detach(), guide, level.detach(), self.radius, self.stride, self.patch)
        strength = self.texture_strength + (self.flat_strength - self.texture_strength) * flatness
        return (filtered.float() + fade * strength * (estimate - out)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"strengths=[flat {self.flat_strength:g}, texture {self.texture_strength:g}]"
