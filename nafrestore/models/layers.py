"""Building blocks shared by NAFNet and LKA-NAFNet.

- LayerNorm2d: layer normalisation over channels at every pixel (NAFNet), with a memory-saving custom backward.
- SimpleGate and SimplifiedChannelAttention (NAFNet, Chen et al. 2022, arXiv:2204.04676), the latter with the
  test-time local converter (TLC, Chu et al. 2022, arXiv:2112.04491).
- LargeKernelAttention (VAN, Guo et al. 2022, arXiv:2202.09741), its dilated convolution a DilatedDepthwiseConv2d
  (the same function, several times faster on the CPU), and its separable variant LargeSeparableKernelAttention
  (LSKA, Lau et al. 2024, arXiv:2309.01439), both of any equivalent kernel size in LARGE_KERNELS (one
  decomposition table), DropPath and LayerScale.
- GaussianHighPass: a filter that keeps a residual's fine structure only, optionally letting the coarse part through
  in proportion to the input's estimated noise level (``noise_level``: the wavelet MAD estimate).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

# ------------------------------------------------------------------------------------------------------------
# LayerNorm2d


def layer_norm_2d_plain(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over channels with elementary ops only (mean, var, sqrt), for ONNX export and as a reference.

    Args:
        x: (B, C, H, W).
        weight, bias: (C,).
    """
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    y = (x - mu) / (var + eps).sqrt()
    return weight.view(1, -1, 1, 1) * y + bias.view(1, -1, 1, 1)


class LayerNorm2dFunction(torch.autograd.Function):
    """LayerNorm over channels whose backward keeps only the normalised input and 1/std.

    Plain autograd would keep x - mean, the variance, the normalised input and the affine product; this keeps
    one full-size tensor. The forward runs ``native_layer_norm`` on a channels-last view, which is contiguous
    over C and about 1.5x faster on CPU than separate mean/var ops; the output keeps channels-last strides.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # statistics in float32 under AMP
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        x_nhwc = x.permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C) view
        y, _, rstd = torch.native_layer_norm(x_nhwc, (x.shape[1],), None, None, eps)  # rstd: (B, H, W, 1)
        ctx.save_for_backward(y, rstd, weight)
        return torch.addcmul(bias, y, weight).permute(0, 3, 1, 2)

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        y, rstd, weight = ctx.saved_tensors
        g_nhwc = grad_out.permute(0, 2, 3, 1)
        g = g_nhwc * weight
        mean_g = g.mean(-1, keepdim=True)
        mean_gy = (g * y).mean(-1, keepdim=True)
        grad_x = rstd * (g - y * mean_gy - mean_g)
        grad_weight = (g_nhwc * y).sum(dim=(0, 1, 2))
        grad_bias = g_nhwc.sum(dim=(0, 1, 2))
        return grad_x.permute(0, 3, 1, 2), grad_weight, grad_bias, None


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of each pixel, with a per-channel affine.

    Args:
        channels: C.
        eps: added to the variance; 1e-6 as in NAFNet.

    Shapes: (B, C, H, W) -> (B, C, H, W). Parameters ``weight`` and ``bias`` of shape (C,) (official keys).
    Set ``plain = True`` (see :func:`use_plain_ops`) to trace elementary ops, e.g. for ONNX.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.plain:
            return layer_norm_2d_plain(x, self.weight, self.bias, self.eps)
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return LayerNorm2dFunction.apply(x, self.weight, self.bias, self.eps)
        # Inference: the same computation without autograd bookkeeping.
        out = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return out.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def use_plain_ops(model: nn.Module, plain: bool = True) -> nn.Module:
    """Switch every LayerNorm2d and DilatedDepthwiseConv2d in ``model`` to the library's elementary ops (for
    ONNX / TorchScript export, and as a reference) or back; returns ``model``."""
    for module in _switchable(model):
        module.plain = plain
    return model


@contextlib.contextmanager
def plain_ops(model: nn.Module) -> Iterator[nn.Module]:
    """:func:`use_plain_ops` for the duration of a ``with`` block; each module's own setting comes back after."""
    modules = _switchable(model)
    before = [m.plain for m in modules]
    use_plain_ops(model)
    try:
        yield model
    finally:
        for module, plain in zip(modules, before, strict=True):
            module.plain = plain


def _switchable(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (LayerNorm2d, DilatedDepthwiseConv2d))]


# ------------------------------------------------------------------------------------------------------------
# NAFNet parts


class SimpleGate(nn.Module):
    """Splits channels in two halves and multiplies them: (B, 2C, H, W) -> (B, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class LocalAvgPool2d(nn.Module):
    """Global average pool, or with TLC a sliding-window mean of the same output size.

    With ``kernel_size`` None this is ``adaptive_avg_pool2d(x, 1)``: (B, C, H, W) -> (B, C, 1, 1). With a
    kernel (kh, kw) smaller than the map, and in eval mode, each pixel gets the mean of the kh x kw window
    (computed from an integral image, valid positions only, then replicate-padded back to H x W as NAFNet's TLC
    does); when the kernel covers the whole map it falls back to the global pool.
    """

    def __init__(self) -> None:
        super().__init__()
        self.kernel_size: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size is None or self.training:  # TLC is a test-time change; training pools globally
            return F.adaptive_avg_pool2d(x, 1)
        h, w = x.shape[-2:]
        kh, kw = self.kernel_size
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        kh, kw = min(h, kh), min(w, kw)
        s = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))  # integral image, (B, C, H+1, W+1)
        out = (s[..., kh:, kw:] + s[..., :-kh, :-kw] - s[..., :-kh, kw:] - s[..., kh:, :-kw]) / (kh * kw)
        _h, _w = out.shape[-2:]
        pad = ((w - _w) // 2, (w - _w + 1) // 2, (h - _h) // 2, (h - _h + 1) // 2)
        return F.pad(out, pad, mode="replicate")

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def noise_level(image: torch.Tensor) -> torch.Tensor:
    """Each image's noise standard deviation, estimated blind: (B, C, H, W) in [0, 1] -> (B,) float32, same scale.

    Donoho's wavelet estimator (median(|HH|) / 0.6745 per channel, then the channel mean; the rule of
    ``skimage.restoration.estimate_sigma``) on the orthonormal Haar transform's diagonal detail at the **second**
    scale (2x2 blocks of the 2x2-block means). White noise reads the same at every scale; camera noise, which
    demosaicing, in-camera noise reduction and JPEG have smoothed, hardly shows at the finest one (measured on the
    PolyU pairs, about 4 levels of noise std: 0.7 levels at scale 1, 3.0 at scale 2; ``bench/noise-statistics.md``).
    The median ignores edges and texture, which fill only a small fraction of the band. Written by hand because it
    runs inside the network (every tile, traceable, exportable); ``tests/test_models.py`` checks it against
    scikit-image on white noise. Images under 4x4 pixels give 0.
    """
    x = image.float()
    h, w = x.shape[2] // 4 * 4, x.shape[3] // 4 * 4
    if h == 0 or w == 0:
        return torch.zeros(x.shape[0], device=x.device)
    x = F.avg_pool2d(x[:, :, :h, :w], 2) * 2.0  # the orthonormal Haar approximation at scale 1
    hh = (x[:, :, 0::2, 0::2] - x[:, :, 0::2, 1::2] - x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]) * 0.5
    flat = hh.abs().flatten(2)  # (B, C, N)
    # The lower median as the smallest of the top half: TopK exports to ONNX, median does not.
    k = flat.shape[2] - (flat.shape[2] - 1) // 2
    mad = torch.topk(flat, k, dim=2).values[:, :, -1]
    return (mad / 0.6745).mean(dim=1)


#: The quiet-blocks estimate's block side (px), the share of blocks it reads, and its calibration: white Gaussian
#: noise's block estimates, read at that quantile, come out at 0.903 sigma (128-1024 px, 12 draws, 0.885-0.916).
QUIET_BLOCK, QUIET_QUANTILE, QUIET_CALIBRATION = 32, 0.25, 1.0 / 0.903


def _haar_step(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One orthonormal Haar step of (B, C, H, W) (H, W even): the approximation and the diagonal detail, each
    (B, C, H / 2, W / 2)."""
    a = F.avg_pool2d(x, 2) * 2.0
    d = (x[:, :, 0::2, 0::2] - x[:, :, 0::2, 1::2] - x[:, :, 1::2, 0::2] + x[:, :, 1::2, 1::2]) * 0.5
    return a, d


def quiet_block_noise_level(
    image: torch.Tensor,
    block: int = QUIET_BLOCK,
    quantile: float = QUIET_QUANTILE,
    calibration: float = QUIET_CALIBRATION,
    bands: str = "both",
) -> torch.Tensor:
    """Each image's noise level read where it is quietest: (B, 3, H, W) in [0, 1] -> (B,) float32, same scale.

    Fine natural texture (foliage, water, gravel, fur) fills the Haar detail bands as noise does, so a median over
    the whole image (:func:`noise_level`) reads a sharp textured photograph as noisy (a clean landscape of bushes
    at 18 levels, above PolyU's noisiest real photographs at 6.8). Noise covers an image evenly; texture does not,
    and is mostly luma. So, in the spirit of weak-texture patch selection (Liu, Tanaka and Okutomi, "Single-image
    noise level estimation for blind denoising", IEEE TIP 2013), the image is cut into ``QUIET_BLOCK`` px blocks;
    each block reads the **lower** of two estimates: its RGB diagonal detail at the second Haar scale (the channel
    mean, as :func:`noise_level`) and its opponent chroma's diagonal detail at the third scale (orthonormal rows
    (R - B) / sqrt 2 and (R - 2G + B) / sqrt 6; real and synthetic camera noise carry blotchy chroma, which texture
    rarely has); the image's level is the ``quantile`` of its blocks, times ``calibration`` so that white Gaussian
    noise reads its sigma. The defaults (arguments, so that TorchScript scripts it) are the module's; ``bands``
    ``"rgb"`` or ``"chroma"`` reads one band alone (the candidates ``scripts/bench_noise_estimators.py`` compares,
    their calibration then off by a few per cent). Each block
    estimate is the mean absolute detail times sqrt(pi / 2) (the median of 64 values is too coarse on 8-bit input).
    Measured on clean textured and noisy photographs against the other candidates: ``bench/noise-estimators.md``.

    An image narrower than one block on a side reads :func:`noise_level` instead. Plain ops and TopK only, the
    block size fixed (an exported graph needs constant pooling windows): exportable like :func:`noise_level`.
    """
    x = image.float()
    if x.shape[2] < block or x.shape[3] < block or x.shape[1] != 3:
        return noise_level(image)
    h, w = x.shape[2] // block * block, x.shape[3] // block * block
    a1, _ = _haar_step(x[:, :, :h, :w])
    a2, d2 = _haar_step(a1)
    rgb = F.avg_pool2d(d2.abs(), block // 4).mean(dim=1)  # (B, h / block, w / block)
    r, g, b = a2[:, 0:1], a2[:, 1:2], a2[:, 2:3]
    chroma = torch.cat([(r - b) / math.sqrt(2.0), (r - 2.0 * g + b) / math.sqrt(6.0)], dim=1)
    _, d3 = _haar_step(chroma)
    chroma_level = F.avg_pool2d(d3.abs(), block // 8).pow(2).mean(dim=1).sqrt()
    if bands == "rgb":
        chroma_level = rgb
    elif bands == "chroma":
        rgb = chroma_level
    blocks = torch.minimum(rgb, chroma_level).flatten(1) * math.sqrt(math.pi / 2)  # (B, N)
    n = blocks.shape[1]
    # The quantile as the smallest of the top n - rank (TopK exports; integer arithmetic on n, which is symbolic).
    rank = (n - 1) * int(quantile * 1000) // 1000
    return torch.topk(blocks, n - rank, dim=1).values[:, -1] * calibration


#: The noise estimates a gate can read, by the name a config gives (``gate_estimate``).
NOISE_ESTIMATES = {"wavelet": noise_level, "quiet_blocks": quiet_block_noise_level}
NoiseEstimate = Literal["wavelet", "quiet_blocks"]


def check_gate(gate: Sequence[float]) -> tuple[float, float]:
    """``gate`` as ``(low, high)`` noise levels (0-255) after checking ``0 <= low < high``; ValueError otherwise."""
    if len(gate) != 2 or not 0 <= gate[0] < gate[1]:
        raise ValueError(f"a noise gate needs two noise levels 0 <= low < high, got {list(gate)}")
    return float(gate[0]), float(gate[1])


#: The Gaussian sigma (px) over which a flat high-pass averages the input's gradient energy.
FLAT_WINDOW = 4.0


def check_flat(flat: Sequence[float], sigma: float) -> tuple[float, float]:
    """``flat`` as ``(wide_sigma, energy)`` after checking ``wide_sigma > sigma`` and ``energy > 0``; ValueError
    otherwise."""
    if len(flat) != 2 or not flat[0] > sigma or not flat[1] > 0:
        raise ValueError(
            f"a flat high-pass needs [wide sigma > the high-pass sigma {sigma:g}, gradient energy > 0], "
            f"got {list(flat)}"
        )
    return float(flat[0]), float(flat[1])


def check_coarse(coarse: float, sigma: float) -> float:
    """``coarse`` after checking that it is a sigma above ``sigma``; ValueError otherwise."""
    if not coarse > sigma:
        raise ValueError(f"a coarse high-pass needs a sigma above the high-pass sigma {sigma:g}, got {coarse}")
    return float(coarse)


def gate_weights(image: torch.Tensor, low: float, high: float, estimate: str = "wavelet") -> torch.Tensor:
    """Per image of (B, C, H, W) in [0, 1]: how far its estimated noise level (0-255; ``estimate`` names one of
    :data:`NOISE_ESTIMATES`) is from ``low`` to ``high``, as (B,) float32 in [0, 1]."""
    level = quiet_block_noise_level(image) if estimate == "quiet_blocks" else noise_level(image)
    return ((level * 255.0 - low) / (high - low)).clamp(0.0, 1.0)


def check_estimate(estimate: str) -> str:
    """``estimate`` after checking that it names one of :data:`NOISE_ESTIMATES`; ValueError otherwise."""
    if estimate not in NOISE_ESTIMATES:
        raise ValueError(f"a noise estimate is one of {', '.join(NOISE_ESTIMATES)}, got {estimate!r}")
    return estimate


def gaussian_taps(sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of radius ``ceil(3 * sigma)``: (2 * radius + 1,) float32 summing to 1."""
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    return taps / taps.sum()


def separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) ``x`` filtered by the 1-D ``taps`` (odd length) along rows, then columns, replicate-padded:
    a Gaussian blur with ``gaussian_taps``, a box sum with ones. Float32 in, float32 out.

    A sum of shifted copies, not a convolution: under bf16 autocast on a CPU with AVX512-BF16, oneDNN spent minutes
    JIT-compiling its bf16 depthwise kernel for long taps (for each new image size), and on the 2-core CPU here a
    7-px box sum of a 1024 px plane took 2.5 ms this way against 11.6 ms as two average pools and 64 ms as a
    convolution.
    """
    h, w = x.shape[2], x.shape[3]
    r = taps.shape[0] // 2
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    # Accumulated in place (addcmul_: one pass per tap, not three; autograd needs only the inputs).
    rows = taps[0] * padded[:, :, :, 0:w]
    for i in range(1, taps.shape[0]):  # a plain loop: TorchScript scripts it
        rows.addcmul_(padded[:, :, :, i : i + w], taps[i])
    low = taps[0] * rows[:, :, 0:h, :]
    for i in range(1, taps.shape[0]):
        low.addcmul_(rows[:, :, i : i + h, :], taps[i])
    return low


class GaussianHighPass(nn.Module):
    """x - GaussianBlur(x, sigma): removes the content coarser than about ``sigma`` pixels; optionally noise-gated.

    Used on a network's residual so that it can only change fine structure: a denoiser trained on synthetic noise
    otherwise learns colour and brightness shifts of large areas that real photographs don't need (measured on
    PolyU, ``bench/real-noise-recipes.md``). A separable Gaussian (sums of shifted copies) with a kernel of radius
    ``ceil(3 * sigma)`` and replicate padding (valid for any image size); no parameters, so checkpoint keys are
    unchanged. Shapes: (B, C, H, W) -> (B, C, H, W).

    With ``luma_sigma`` the residual is split into its luma (the channel mean) and its chroma (the rest): the
    chroma is high-passed with ``sigma``, the luma with ``luma_sigma``. The colour shifts were chroma (keeping only
    the chroma's coarse part did as well as keeping all of it), while real camera noise is coarse and mostly luma
    (at a 4 px high-pass, 18 % of the first default's error on PolyU was coarse luma noise it could not touch).

    With ``gate = (low, high)`` (noise levels on the 0-255 scale) the blurred part is let back in by
    ``g = clamp((noise_level(image) * 255 - low) / (high - low), 0, 1)`` per image, giving ``x - (1 - g) * blur``:
    a photograph with mild noise (or none) gets only fine changes, one with strong noise, whose blotches are
    coarser than ``sigma``, the network's whole correction.

    With ``flat = (wide_sigma, energy)`` the high-pass widens to ``wide_sigma`` where the input is flat, per pixel:
    ``w = clamp(1 - E / energy, 0, 1)`` with ``E`` the input's local gradient energy (levels squared, 0-255 scale:
    the luma blurred at 1 px, its Sobel gradient squared, averaged by a Gaussian of ``FLAT_WINDOW`` px), and the
    blur becomes ``blur + w * (wide_blur - blur)``. Where there is texture (E above ``energy``) the network makes only
    the finest changes, which leaves texture that looks like noise alone; where the image is smooth it can also
    remove the coarser noise. Measured on PolyU (``bench/real-noise-recipes.md``, session 11).

    ``gate_estimate`` names the noise estimate the gate reads (:data:`NOISE_ESTIMATES`): ``wavelet`` (the default,
    :func:`noise_level`) or ``quiet_blocks`` (:func:`quiet_block_noise_level`, which texture does not fool).

    With ``coarse`` (a sigma above ``sigma``, gated filters only) the gate opens up to ``coarse`` instead of all the
    way: the blur becomes ``(1 - g) * blur + g * coarse_blur``, so even the strongest noise never moves the colour or
    brightness of areas larger than about ``coarse`` pixels (a strong-noise network's whole correction turned a
    green frog grey; ``bench/real-noise-recipes.md``, session 13).
    """

    def __init__(
        self,
        sigma: float,
        gate: Sequence[float] | None = None,
        luma_sigma: float | None = None,
        flat: Sequence[float] | None = None,
        gate_estimate: str = "wavelet",
        coarse: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("sigma", sigma), ("luma sigma", luma_sigma)):
            if value is not None and not value > 0:
                raise ValueError(f"the high-pass {name} must be > 0, got {value}")
        self.sigma = float(sigma)
        self.split_luma = luma_sigma is not None
        self.gated = gate is not None
        self.gate_low, self.gate_high = check_gate(gate) if gate is not None else (0.0, 1.0)
        self.gate_estimate = check_estimate(gate_estimate)
        self.coarse = coarse is not None
        self.coarse_sigma = check_coarse(coarse, self.sigma) if coarse is not None else self.sigma
        if self.coarse and not self.gated:
            raise ValueError("a coarse high-pass limits how far a gate opens: it needs a gate")
        self.flat = flat is not None
        self.wide_sigma, self.flat_energy = check_flat(flat, self.sigma) if flat is not None else (self.sigma, 1.0)
        self.register_buffer("taps", gaussian_taps(self.sigma), persistent=False)
        self.register_buffer("luma_taps", gaussian_taps(luma_sigma or self.sigma), persistent=False)
        self.register_buffer("wide_taps", gaussian_taps(self.wide_sigma), persistent=False)
        coarse_taps = gaussian_taps(self.coarse_sigma) if self.coarse else torch.ones(1)  # (1,): unused
        self.register_buffer("coarse_taps", coarse_taps, persistent=False)
        self.register_buffer("smooth_taps", gaussian_taps(1.0), persistent=False)
        self.register_buffer("window_taps", gaussian_taps(FLAT_WINDOW), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()])[:, None], persistent=False)  # (2, 1, 3, 3)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: the residual; ``image``: the network's input (needed when gated), both (B, C, H, W)."""
        return self.filter(x, image)[0]

    def filter(self, x: torch.Tensor, image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The filtered residual (as ``forward``) and the input's flatness, (B, 1, H, W) in [0, 1] (None unless
        ``flat`` and ``image`` are given), so that a filter built on this one need not compute it again."""
        x32 = x.float()
        if self.split_luma:
            luma = x32.mean(dim=1, keepdim=True)
            low = separable_filter(x32 - luma, self.taps) + separable_filter(luma, self.luma_taps)
        else:
            low = separable_filter(x32, self.taps)
        flatness = self.flatness(image) if self.flat and image is not None else None
        if flatness is not None:
            low = low + flatness * (separable_filter(x32, self.wide_taps) - low)
        if self.gated and image is not None:
            g = gate_weights(image, self.gate_low, self.gate_high, self.gate_estimate).view(-1, 1, 1, 1)
            low = low + g * (separable_filter(x32, self.coarse_taps) - low) if self.coarse else low * (1.0 - g)
        return (x32 - low).to(x.dtype), flatness

    def flatness(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1]: 1 where ``image`` ((B, C, H, W) in [0, 1]) is smooth, 0 on texture and edges."""
        luma = separable_filter(image.float().mean(dim=1, keepdim=True), self.smooth_taps)
        grad = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), self.sobel.to(luma.dtype))  # (B, 2, H, W)
        energy = separable_filter((grad * grad).sum(dim=1, keepdim=True), self.window_taps) * (255.0 * 255.0)
        return (1.0 - energy / self.flat_energy).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        gate = f", gate=[{self.gate_low:g}, {self.gate_high:g}] ({self.gate_estimate})" if self.gated else ""
        flat = f", flat=[{self.wide_sigma:g}, {self.flat_energy:g}]" if self.flat else ""
        coarse = f", coarse={self.coarse_sigma:g}" if self.coarse else ""
        return f"sigma={self.sigma}{gate}{flat}{coarse}"


class PassResidual(nn.Module):
    """The residual unchanged (no high-pass); the same call as :class:`GaussianHighPass`."""

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        return x


class SimplifiedChannelAttention(nn.Sequential):
    """x * conv1x1(pool(x)): channel attention without activation (NAFNet's SCA).

    A Sequential of (pool, conv) so the parameter keys are ``sca.1.weight`` / ``sca.1.bias`` as in the
    official checkpoints. Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(LocalAvgPool2d(), nn.Conv2d(channels, channels, kernel_size=1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x * self[1](self[0](x))


# ------------------------------------------------------------------------------------------------------------
# VAN parts


class DilatedDepthwiseConv2d(nn.Conv2d):
    """A depthwise convolution with dilation d and "same" zero padding, computed on the image's d x d phase grids.

    A tap of a kernel dilated by d only meets pixels whose row and column are congruent (mod d) to the output
    pixel's, so the image splits into d * d sub-images (every d-th row and column, from each offset), each
    convolved with the same kernel undilated. On the CPU oneDNN's dilated depthwise kernels are much slower than
    its dense ones: for LKA's 7 x 7, dilation 3, this form was x1.9-2.8 faster for a training step's forward and
    backward and x2.5-16 for inference (x7.8 at 512 x 512 channels-last), measured on a 2-core AVX2 EPYC with
    torch 2.14. It is used on the CPU only; on other devices, and with ``plain = True`` (export, see
    :func:`use_plain_ops`), the layer is ``nn.Conv2d`` itself.

    Args:
        channels: C (groups = C).
        kernel_size: k, odd.
        dilation: d >= 1; padding is d * (k - 1) / 2, so H and W are kept.

    Shapes: (B, C, H, W) -> (B, C, H, W), any H and W (padded to a multiple of d at the bottom and right, which the
    zero padding does anyway). Parameters ``weight`` (C, 1, k, k) and ``bias`` (C,), the keys of ``nn.Conv2d``.
    The result equals ``nn.Conv2d``'s up to float rounding (summation order).
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(channels, channels, kernel_size, padding=pad, dilation=dilation, groups=channels)
        self.plain = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation[0]
        if self.plain or d == 1 or x.device.type != "cpu":
            return self._conv_forward(x, self.weight, self.bias)
        b, c, h, w = x.shape
        ph, pw = (d - h % d) % d, (d - w % d) % d
        if ph > 0 or pw > 0:
            x = F.pad(x, [0, pw, 0, ph])
        hs, ws = (h + ph) // d, (w + pw) // d
        # (B, C, hs*d, ws*d) -> (B*d*d, C, hs, ws): phase (i, j) holds pixels (d*y + i, d*x + j).
        phases = x.reshape(b, c, hs, d, ws, d).permute(0, 3, 5, 1, 2, 4).reshape(b * d * d, c, hs, ws)
        k = self.kernel_size[0]
        y = F.conv2d(phases, self.weight, self.bias, padding=(k - 1) // 2, groups=c)
        y = y.reshape(b, d, d, c, hs, ws).permute(0, 3, 4, 1, 5, 2).reshape(b, c, hs * d, ws * d)
        return y[:, :, :h, :w]


# Equivalent large kernel k -> (local kernel, dilated kernel, dilation), shared by LKA and LSKA. From the official
# LSKA code (the ``LSKA`` class of the VAN-LSKA repository) for 7 ... 53; 23 is VAN's LKA (5x5, then 7x7 dilation
# 3). Every entry follows the paper's rule: dilation d, a local kernel of 2d - 1 and a dilated kernel of k // d, so
# the composed receptive field is exactly k x k. 65 is not in the official code; it is the same rule carried on
# (d = 3: 5 and 21).
LARGE_KERNELS: dict[int, tuple[int, int, int]] = {
    7: (3, 3, 2),
    11: (3, 5, 2),
    23: (5, 7, 3),
    35: (5, 11, 3),
    41: (5, 13, 3),
    53: (5, 17, 3),
    65: (5, 21, 3),
}
# The keys of LARGE_KERNELS as a type, so a config's model.kernel_size is checked when the file loads (a test keeps
# the two in step).
KernelSize = Literal[7, 11, 23, 35, 41, 53, 65]


def large_kernel(kernel_size: int) -> tuple[int, int, int]:
    """The (local kernel, dilated kernel, dilation) decomposition of an equivalent large kernel.

    Raises:
        ValueError: ``kernel_size`` is not a key of :data:`LARGE_KERNELS`.
    """
    if isinstance(kernel_size, bool) or kernel_size not in LARGE_KERNELS:
        valid = ", ".join(str(k) for k in LARGE_KERNELS)
        raise ValueError(f"kernel_size must be one of {valid}; got {kernel_size!r}.")
    return LARGE_KERNELS[kernel_size]


class LargeKernelAttention(nn.Module):
    """VAN's LKA: a k x k receptive field from a local depthwise conv, a dilated depthwise conv and a 1x1 conv.

    With the default ``kernel_size=23`` this is VAN's module: 5x5 depthwise, then 7x7 depthwise with dilation 3
    (VAN's paper calls it 21; the composed window is 23 x 23). Other sizes use the decomposition of
    :data:`LARGE_KERNELS`, the same as LSKA's, e.g. 35: 5x5 then 11x11 dilation 3. Module names and shapes at 23
    are those of the official code, so existing checkpoints load unchanged.

    Args:
        channels: C.
        kernel_size: the equivalent large kernel k, one of :data:`LARGE_KERNELS` (7, 11, 23, 35, 41, 53, 65).

    Shapes: (B, C, H, W) -> (B, C, H, W); output = input * attention, every conv keeps H and W (zero padding).
    Parameters: 2 depthwise convs of C * size^2 + C each, and C * C + C for ``conv1``.

    Raises:
        ValueError: ``kernel_size`` is not one of the supported sizes.
    """

    def __init__(self, channels: int, kernel_size: int = 23) -> None:
        super().__init__()
        local, dilated, dilation = large_kernel(kernel_size)
        self.kernel_size = kernel_size
        c = channels
        self.conv0 = nn.Conv2d(c, c, local, padding=(local - 1) // 2, groups=c)
        self.conv_spatial = DilatedDepthwiseConv2d(c, dilated, dilation)
        self.conv1 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv1(self.conv_spatial(self.conv0(x)))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class LargeSeparableKernelAttention(nn.Module):
    """LSKA: LKA with each 2-D depthwise kernel split into a 1 x k and a k x 1 depthwise convolution.

    From "Large Separable Kernel Attention: Rethinking the Large Kernel Attention Design in CNN" (Lau, Po, Rehman,
    Expert Systems with Applications 2024, arXiv:2309.01439). The local depthwise kernel (size l) and the dilated
    one (size m, dilation d) of VAN's LKA each become a horizontal then a vertical 1-D convolution, so the
    depthwise cost per pixel is 2l + 2m instead of l^2 + m^2 and grows linearly with the kernel. Order (as in the
    official code): ``conv0h`` (1 x l), ``conv0v`` (l x 1), ``conv_spatial_h`` (1 x m, dilated),
    ``conv_spatial_v`` (m x 1, dilated), ``conv1`` (1 x 1); output = input * attention. With ``kernel_size=23``
    (l = 5, m = 7, d = 3) it is the separable form of VAN's LKA and has the same 23 x 23 receptive field.

    Args:
        channels: C.
        kernel_size: the equivalent large kernel k, one of :data:`LARGE_KERNELS` (7, 11, 23, 35, 41, 53, 65); the
            composed receptive field is k x k.

    Shapes: (B, C, H, W) -> (B, C, H, W); every convolution keeps H and W (zero padding). Parameters:
    4 depthwise convs of C * size + C each, and C * C + C for ``conv1``.

    Raises:
        ValueError: ``kernel_size`` is not one of the supported sizes.
    """

    def __init__(self, channels: int, kernel_size: int = 23) -> None:
        super().__init__()
        local, dilated, dilation = large_kernel(kernel_size)
        self.kernel_size = kernel_size
        c, p_local, p_dilated = channels, (local - 1) // 2, ((dilated - 1) // 2) * dilation
        self.conv0h = nn.Conv2d(c, c, (1, local), padding=(0, p_local), groups=c)
        self.conv0v = nn.Conv2d(c, c, (local, 1), padding=(p_local, 0), groups=c)
        self.conv_spatial_h = nn.Conv2d(c, c, (1, dilated), padding=(0, p_dilated), groups=c, dilation=dilation)
        self.conv_spatial_v = nn.Conv2d(c, c, (dilated, 1), padding=(p_dilated, 0), groups=c, dilation=dilation)
        self.conv1 = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.conv_spatial_v(self.conv_spatial_h(self.conv0v(self.conv0h(x))))
        return x * self.conv1(attn)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch for a random subset of samples during training.

    Kept samples are scaled by 1 / (1 - p), so the expectation is unchanged; identity in eval mode.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # one draw per sample
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class LayerScale(nn.Module):
    """Learned per-channel scale of a residual branch (CaiT), initialised small: (B, C, H, W) -> same."""

    def __init__(self, channels: int, init_value: float = 1e-2) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1)
