"""NAFNet and LKA-NAFNet: U-Nets of nonlinear-activation-free blocks for image restoration.

Papers: NAFNet, "Simple Baselines for Image Restoration" (Chen et al., ECCV 2022, arXiv:2204.04676); VAN,
"Visual Attention Network" (Guo et al., 2022, arXiv:2202.09741) for the large-kernel attention block; LSKA,
"Large Separable Kernel Attention" (Lau et al., 2024, arXiv:2309.01439) for its separable variant; TLC, "Improving
Image Restoration by Revisiting Global Information Aggregation" (Chu et al., ECCV 2022).

Order: blocks (NAFBlock, LKABlock), the U-Net, then the registered variants. ``NAFNet``'s parameter names equal
the official implementation's (``intro``, ``encoders.i.j.conv1``, ``sca.1``, ``ups.i.0``, ...), so the released
checkpoints load as they are.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    DropPath,
    GaussianHighPass,
    KernelSize,
    LargeKernelAttention,
    LargeSeparableKernelAttention,
    LayerNorm2d,
    LayerScale,
    LocalAvgPool2d,
    NoiseEstimate,
    PassResidual,
    SimpleGate,
    large_kernel,
)
from .layers import SimplifiedChannelAttention as SCA
from .nonlocal_means import NonLocalMeansBlend

# ------------------------------------------------------------------------------------------------------------
# Blocks


class NAFBlock(nn.Module):
    """NAFNet's block: two residual branches (conv + SimpleGate + SCA; then a gated 1x1 FFN).

    Each branch is scaled by a per-channel ``beta`` / ``gamma`` initialised to zero, so the block starts as the
    identity. Shapes: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C.
        dw_expand: expansion of the depthwise branch (2C channels, gated back to C).
        ffn_expand: expansion of the feed-forward branch.
        dropout: dropout rate after each branch (0: none, as in the official models).
    """

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        c, dw = channels, channels * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = SCA(dw // 2)
        self.sg = SimpleGate()
        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(self.norm1(inp)))  # (B, 2C, H, W)
        x = self.sca(self.sg(x))  # (B, C, H, W)
        y = inp + self.dropout1(self.conv3(x)) * self.beta
        x = self.sg(self.conv4(self.norm2(y)))
        return y + self.dropout2(self.conv5(x)) * self.gamma


Attention = Literal["lka", "lska"]  # a Literal, so the config checks model.attention when the file loads
ATTENTIONS: tuple[str, ...] = typing.get_args(Attention)


def check_attention(attention: str, kernel_size: int | None) -> int:
    """Validate an LKABlock's attention settings; returns the equivalent large kernel to use.

    Args:
        attention: ``"lka"`` (VAN's LKA) or ``"lska"`` (its separable variant).
        kernel_size: the equivalent large kernel of either attention, a key of
            :data:`~nafrestore.models.layers.LARGE_KERNELS` (None: 23, VAN's LKA: 5x5, then 7x7 with dilation 3).

    Raises:
        ValueError: an unknown attention or an unsupported kernel size.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {', '.join(map(repr, ATTENTIONS))}; got {attention!r}.")
    kernel_size = 23 if kernel_size is None else kernel_size
    large_kernel(kernel_size)  # raises on a size outside the table
    return kernel_size


class SpatialAttention(nn.Module):
    """VAN's attention branch: 1x1 -> GELU -> LKA (or LSKA) -> 1x1, with its own shortcut.

    Shapes: (B, C, H, W) -> (B, C, H, W). The gating unit is ``spatial_gating_unit`` for both attentions (the
    official VAN and VAN-LSKA name), so LKA state-dict keys are unchanged.

    Args:
        channels: C.
        attention: ``"lka"`` (:class:`~nafrestore.models.layers.LargeKernelAttention`) or ``"lska"``
            (:class:`~nafrestore.models.layers.LargeSeparableKernelAttention`).
        kernel_size: the attention's equivalent large kernel (see :func:`check_attention`).
    """

    def __init__(self, channels: int, attention: Attention = "lka", kernel_size: KernelSize | None = None) -> None:
        super().__init__()
        kernel_size = check_attention(attention, kernel_size)
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit: nn.Module
        if attention == "lka":
            self.spatial_gating_unit = LargeKernelAttention(channels, kernel_size)
        else:
            self.spatial_gating_unit = LargeSeparableKernelAttention(channels, kernel_size)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class ConvMlp(nn.Module):
    """VAN's MLP: 1x1 -> 3x3 depthwise -> GELU -> 1x1 (hidden width ``channels * mlp_ratio``)."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class LKABlock(nn.Module):
    """VAN block with LayerNorm2d in place of BatchNorm: x + DropPath(LS(attn(LN(x)))), then the same with the MLP.

    Shapes: (B, C, H, W) -> (B, C, H, W).

    Args:
        channels: C.
        mlp_ratio: MLP hidden width as a multiple of C.
        layer_scale_init: initial value of both LayerScales (small, so the block starts near the identity).
        drop_path: stochastic depth rate of this block.
        attention: ``"lka"`` (VAN's large-kernel attention) or ``"lska"`` (large separable kernel attention).
        kernel_size: the attention's equivalent large kernel: 7, 11, 23, 35, 41, 53 or 65 (None: 23, VAN's LKA).

    Raises:
        ValueError: see :func:`check_attention`.
    """

    def __init__(
        self,
        channels: int,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-2,
        drop_path: float = 0.0,
        attention: Attention = "lka",
        kernel_size: KernelSize | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = SpatialAttention(channels, attention, kernel_size)
        self.layer_scale_1 = LayerScale(channels, layer_scale_init)
        self.norm2 = LayerNorm2d(channels)
        self.mlp = ConvMlp(channels, mlp_ratio)
        self.layer_scale_2 = LayerScale(channels, layer_scale_init)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.layer_scale_1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.layer_scale_2(self.mlp(self.norm2(x))))


# ------------------------------------------------------------------------------------------------------------
# The U-Net

BlockFactory = Callable[[int, int], nn.Module]  # (channels, index among the encoder blocks) -> block


def residual_filter(
    highpass: float | None,
    gate: Sequence[float] | None = None,
    luma: float | None = None,
    flat: Sequence[float] | None = None,
    nonlocal_means: Sequence[float] | None = None,
    gate_estimate: str = "wavelet",
    coarse: float | None = None,
) -> nn.Module:
    """What filters the network's residual: a (noise-gated, luma-split, flat-widened) Gaussian high-pass, optionally
    blended with guided non-local means, or nothing."""
    for name, value in (("residual_highpass_gate", gate), ("residual_highpass_luma", luma),
                        ("residual_highpass_flat", flat), ("residual_nonlocal_means", nonlocal_means),
                        ("residual_highpass_coarse", coarse)):  # fmt: skip
        if value is not None and highpass is None:
            raise ValueError(f"{name} needs residual_highpass")
    if highpass is None:
        return PassResidual()
    highpass_filter = GaussianHighPass(highpass, gate, luma, flat, gate_estimate, coarse)
    return highpass_filter if nonlocal_means is None else NonLocalMeansBlend(highpass_filter, nonlocal_means)


class NAFNet(nn.Module):
    """A U-Net restoration network with a global residual: output = input + ending(decoder(...)).

    Per encoder level: blocks, then a 2x2 stride-2 conv doubling the channels. Middle blocks at the bottom. Per
    decoder level: a bias-free 1x1 conv + PixelShuffle(2) halving the channels, the matching encoder features
    added, then blocks. Inputs of any size are zero-padded to a multiple of 2**levels and cropped back.

    Args:
        in_channels: image channels (3 for RGB, 1 for grayscale).
        width: channels after the intro conv (doubled at each level).
        enc_blocks: blocks per encoder level, shallow to deep.
        middle_blocks: blocks at the bottom.
        dec_blocks: blocks per decoder level, deep to shallow (as the official ``dec_blk_nums``).
        dw_expand, ffn_expand, dropout: NAFBlock settings.
        residual_highpass: if set, a Gaussian sigma in pixels: the residual added to the input is high-passed
            (``r - GaussianBlur(r, sigma)``), so the network keeps the input's coarse colour and brightness and
            changes only finer structure (None: off, as in the official NAFNet).
        residual_highpass_gate: with ``residual_highpass``, two noise levels (0-255 scale) between which the
            coarse part is let back in, per image, by the input's estimated noise level (``layers.noise_level``):
            mild noise gets fine changes only, strong noise (coarse blotches) the whole correction. None: fixed.
        residual_highpass_gate_estimate: the noise estimate the gate reads, ``"wavelet"`` (``layers.noise_level``,
            the default) or ``"quiet_blocks"`` (``layers.quiet_block_noise_level``, which texture does not fool).
        residual_highpass_coarse: with ``residual_highpass_gate``, a sigma above ``residual_highpass``: the gate
            opens up to it instead of all the way, so no noise level lets the network move the colour or
            brightness of areas larger than that. None: the gate opens fully.
        residual_highpass_luma: with ``residual_highpass``, a separate (larger) sigma for the luma of the
            residual (its channel mean); ``residual_highpass`` then filters the chroma only, so coarse luma noise
            can go while colours of large areas stay. None: one sigma for all.
        residual_highpass_flat: with ``residual_highpass``, ``[wide_sigma, energy]``: where the input is flat
            (local gradient energy below ``energy``, levels squared on the 0-255 scale) the high-pass widens to
            ``wide_sigma``, so coarser noise can go there while texture keeps only the finest changes
            (``layers.GaussianHighPass``). None: the same sigma everywhere.
        residual_nonlocal_means: with ``residual_highpass_flat``, ``[flat, texture]`` strengths in [0, 1]: the
            output is moved that far towards non-local means of the input guided by the output (``flat`` where the
            input is smooth, ``texture`` on texture; only for mild noise, ``nonlocal_means.NonLocalMeansBlend``).
            None: off.

    Shapes: (B, in_channels, H, W) float -> same; trained on [0, 1] images.
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 1, 28),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
        dw_expand: int = 2,
        ffn_expand: int = 2,
        dropout: float = 0.0,
        residual_highpass: float | None = None,
        residual_highpass_gate: Sequence[float] | None = None,
        residual_highpass_luma: float | None = None,
        residual_highpass_flat: Sequence[float] | None = None,
        residual_nonlocal_means: Sequence[float] | None = None,
        residual_highpass_gate_estimate: NoiseEstimate = "wavelet",
        residual_highpass_coarse: float | None = None,
    ) -> None:
        super().__init__()

        def naf(channels: int, index: int) -> nn.Module:
            return NAFBlock(channels, dw_expand, ffn_expand, dropout)

        filt = residual_filter(
            residual_highpass,
            residual_highpass_gate,
            residual_highpass_luma,
            residual_highpass_flat,
            residual_nonlocal_means,
            residual_highpass_gate_estimate,
            residual_highpass_coarse,
        )
        self._build(in_channels, width, enc_blocks, middle_blocks, dec_blocks, naf, naf, filt)

    def _build(
        self,
        in_channels: int,
        width: int,
        enc_blocks: Sequence[int],
        middle_blocks: int,
        dec_blocks: Sequence[int],
        encoder_block: BlockFactory,
        decoder_block: BlockFactory,
        residual_filter: nn.Module,
    ) -> None:
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks {list(enc_blocks)} and dec_blocks {list(dec_blocks)} need equal lengths")
        if min([width, *enc_blocks, middle_blocks, *dec_blocks]) < 0 or width < 1:
            raise ValueError("width must be >= 1 and block counts >= 0")
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, in_channels, 3, padding=1)
        self.residual_filter = residual_filter
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        chan, n_enc = width, 0
        for num in enc_blocks:
            self.encoders.append(nn.Sequential(*[encoder_block(chan, n_enc + i) for i in range(num)]))
            n_enc += num
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, stride=2))  # (B, C, H, W) -> (B, 2C, H/2, W/2)
            chan *= 2
        self.middle_blks = nn.Sequential(*[decoder_block(chan, -1) for _ in range(middle_blocks)])
        n_dec = 0
        for num in dec_blocks:
            # (B, C, H, W) -> (B, 2C, H, W) -> PixelShuffle -> (B, C/2, 2H, 2W)
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[decoder_block(chan, n_dec + i) for i in range(num)]))
            n_dec += num
        self.padder_size = 2 ** len(self.encoders)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        _, _, h, w = inp.shape
        x = self.intro(self.pad_to_multiple(inp))
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, reversed(skips), strict=True):
            x = decoder(up(x) + skip)
        # Cropped before the filter so that a high-pass sees the image's own borders, not the zero padding.
        return self.residual_filter(self.ending(x)[:, :, :h, :w], inp) + inp

    def pad_to_multiple(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad the bottom/right so H and W are multiples of 2**levels."""
        _, _, h, w = x.shape
        pad_h = (self.padder_size - h % self.padder_size) % self.padder_size
        pad_w = (self.padder_size - w % self.padder_size) % self.padder_size
        return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x

    def set_tlc(self, train_size: int | None) -> None:
        """Turn the test-time local converter on (``train_size``: the training patch side) or off (None).

        Each channel attention at downsampling factor f then averages, at inference only, over a window of
        1.5x its training feature size, ``(train_size // f) * int(1.5 * train_size) // train_size`` (NAFNet's
        ``Local_Base`` rule), instead of over the whole map. Training is unaffected.
        """
        levels: list[tuple[nn.Module, int]] = [(m, 2**i) for i, m in enumerate(self.encoders)]
        levels.append((self.middle_blks, self.padder_size))
        n = len(self.decoders)
        levels += [(m, 2 ** (n - 1 - j)) for j, m in enumerate(self.decoders)]
        base = int(1.5 * train_size) if train_size else 0
        for module, factor in levels:
            for pool in module.modules():
                if isinstance(pool, LocalAvgPool2d):
                    k = (train_size // factor) * base // train_size if train_size else None
                    pool.kernel_size = (k, k) if k else None

    @property
    def tlc_enabled(self) -> bool:
        return any(isinstance(m, LocalAvgPool2d) and m.kernel_size is not None for m in self.modules())


class LKANAFNet(NAFNet):
    """LKA-NAFNet: encoder levels of LKABlocks (VAN large-kernel attention), decoder levels of NAFBlocks.

    Same intro/ending, down/up convs, skips, global residual and padding as NAFNet; by default no middle blocks.

    Args:
        in_channels: image channels.
        width: channels after the intro conv.
        enc_blocks: LKABlocks per encoder level, shallow to deep.
        middle_blocks: NAFBlocks at the bottom.
        dec_blocks: NAFBlocks per decoder level, deep to shallow.
        mlp_ratio: LKABlock MLP expansion.
        layer_scale_init: initial LayerScale of the LKABlocks.
        drop_path_rate: stochastic depth of the last LKABlock; rates rise linearly from 0 across the encoder.
        dw_expand, ffn_expand, dropout: NAFBlock settings.
        attention: the LKABlocks' attention, ``"lka"`` (VAN's LKA, the default) or ``"lska"`` (LSKA: the same
            with 1-D kernel pairs, cost linear in the kernel size).
        kernel_size: the attention's equivalent large kernel, 7, 11, 23 (the default, VAN's LKA; None means the same),
            35, 41, 53 or 65;
            both attentions decompose it the same way (e.g. 35: a 5-px local kernel, then 11 px with dilation 3).
        residual_highpass, residual_highpass_gate, residual_highpass_luma, residual_highpass_flat,
            residual_nonlocal_means, residual_highpass_gate_estimate, residual_highpass_coarse: as for NAFNet.

    Raises:
        ValueError: unequal encoder/decoder depths, bad counts, or bad attention settings (checked even when
        there are no LKABlocks).
    """

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 12,
        enc_blocks: Sequence[int] = (1, 3, 4, 0),
        middle_blocks: int = 0,
        dec_blocks: Sequence[int] = (1, 1, 1, 0),
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-2,
        drop_path_rate: float = 0.0,
        dw_expand: int = 2,
        ffn_expand: int = 2,
        dropout: float = 0.0,
        attention: Attention = "lka",
        kernel_size: KernelSize | None = 23,
        residual_highpass: float | None = None,
        residual_highpass_gate: Sequence[float] | None = None,
        residual_highpass_luma: float | None = None,
        residual_highpass_flat: Sequence[float] | None = None,
        residual_nonlocal_means: Sequence[float] | None = None,
        residual_highpass_gate_estimate: NoiseEstimate = "wavelet",
        residual_highpass_coarse: float | None = None,
    ) -> None:
        nn.Module.__init__(self)
        check_attention(attention, kernel_size)  # here too, so a model without LKABlocks still rejects bad values
        n_lka = sum(enc_blocks)
        rates = torch.linspace(0, drop_path_rate, n_lka).tolist() if n_lka else []

        def lka(channels: int, index: int) -> nn.Module:
            return LKABlock(channels, mlp_ratio, layer_scale_init, rates[index], attention, kernel_size)

        def naf(channels: int, index: int) -> nn.Module:
            return NAFBlock(channels, dw_expand, ffn_expand, dropout)

        filt = residual_filter(
            residual_highpass,
            residual_highpass_gate,
            residual_highpass_luma,
            residual_highpass_flat,
            residual_nonlocal_means,
            residual_highpass_gate_estimate,
            residual_highpass_coarse,
        )
        self._build(in_channels, width, enc_blocks, middle_blocks, dec_blocks, lka, naf, filt)
