"""LayerNorm2d (custom backward), TLC pooling, LKA, LSKA, DropPath, LayerScale."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nafrestore.models.layers import (
    LARGE_KERNELS,
    DilatedDepthwiseConv2d,
    DropPath,
    GaussianHighPass,
    KernelSize,
    LargeKernelAttention,
    LargeSeparableKernelAttention,
    LayerNorm2d,
    LayerNorm2dFunction,
    LayerScale,
    LocalAvgPool2d,
    SimpleGate,
    layer_norm_2d_plain,
    use_plain_ops,
)


def assert_same_function(module, reference, x: torch.Tensor, params: torch.nn.Module) -> torch.Tensor:
    """module(x) equals reference(x) in value (1e-5) and in its gradients to x and to params' parameters (1e-4);
    returns reference(x)."""
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, want = module(x1), reference(x2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(want)
    grads_got = torch.autograd.grad(got, (x1, *params.parameters()), g)
    grads_want = torch.autograd.grad(want, (x2, *params.parameters()), g)
    for a, b in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    return want


def test_layernorm_function_passes_gradcheck_in_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: LayerNorm2dFunction.apply(x, w, b, 1e-6), (x, w, b))


def test_layernorm_paths_agree_forward_and_backward():
    torch.manual_seed(0)
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 6, 7, 5) * 3 + 1
    out_plain = assert_same_function(norm, lambda x: layer_norm_2d_plain(x, norm.weight, norm.bias, norm.eps), x, norm)
    with torch.no_grad():  # the inference path
        torch.testing.assert_close(norm(x), out_plain.detach(), atol=1e-5, rtol=1e-5)
    norm.plain = True
    torch.testing.assert_close(norm(x), out_plain, atol=0, rtol=0)


def test_layernorm_normalises_each_pixel_over_channels():
    x = torch.randn(2, 8, 3, 3) * 5 + 2
    with torch.no_grad():
        y = LayerNorm2d(8)(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 3, 3), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("kernel", "dilation", "size", "channels_last"),
    [
        (7, 3, (96, 96), False),
        (7, 3, (31, 44), True),
        (11, 3, (17, 9), False),
        (3, 2, (5, 6), True),
        (5, 1, (8, 7), False),
    ],
)
def test_dilated_depthwise_conv_equals_the_library_conv_forward_and_backward(kernel, dilation, size, channels_last):
    # Oracle: F.conv2d with the same weights, dilation and padding. Sizes that are not multiples of the dilation
    # (the phase form pads them), channels-last inputs and a kernel wider than the image included.
    torch.manual_seed(0)
    conv = DilatedDepthwiseConv2d(5, kernel, dilation)
    assert conv.padding == (dilation * (kernel - 1) // 2,) * 2 and conv.groups == 5
    x = torch.randn(2, 5, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    library = lambda x: F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, dilation=dilation, groups=5)  # noqa: E731
    want = assert_same_function(conv, library, x, conv)
    assert want.shape == x.shape
    use_plain_ops(conv)  # the export path is the library conv itself, bit for bit
    torch.testing.assert_close(conv(x), want.detach(), atol=0, rtol=0)


def test_dilated_depthwise_conv_keeps_the_conv_keys_and_refuses_even_kernels():
    lka = LargeKernelAttention(4)
    assert isinstance(lka.conv_spatial, DilatedDepthwiseConv2d)
    assert {k: tuple(v.shape) for k, v in lka.state_dict().items() if "spatial" in k} == {
        "conv_spatial.weight": (4, 1, 7, 7),
        "conv_spatial.bias": (4,),
    }
    with pytest.raises(ValueError, match="odd"):
        DilatedDepthwiseConv2d(4, 6, 3)


def test_simple_gate_multiplies_halves():
    x = torch.randn(2, 6, 4, 4)
    torch.testing.assert_close(SimpleGate()(x), x[:, :3] * x[:, 3:])


def test_local_avg_pool_is_sliding_mean_with_replicate_pad_and_global_fallback():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 12, 9, dtype=torch.float64)
    pool = LocalAvgPool2d().eval()
    torch.testing.assert_close(pool(x), x.mean((2, 3), keepdim=True))
    pool.kernel_size = (5, 4)
    expected = F.avg_pool2d(x, (5, 4), stride=1)  # valid windows: (12-5+1, 9-4+1) = (8, 6)
    expected = F.pad(expected, (1, 2, 2, 2), mode="replicate")  # centred back to 12 x 9
    torch.testing.assert_close(pool(x), expected)
    pool.kernel_size = (12, 9)
    torch.testing.assert_close(pool(x), x.mean((2, 3), keepdim=True))


def test_lka_receptive_field_is_23_pixels():
    # 5x5 (radius 2) then 7x7 dilation 3 (radius 9): radius 11, so the centre output sees a 23 x 23 window.
    torch.manual_seed(0)
    lka = LargeKernelAttention(2).double()
    x = torch.randn(1, 2, 41, 41, dtype=torch.float64, requires_grad=True)
    out = lka(x)
    assert out.shape == x.shape
    (grad,) = torch.autograd.grad(out[0, :, 20, 20].sum(), x)
    rows, cols = grad.abs().sum(1)[0].nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item()) == (9, 31)
    assert (cols.min().item(), cols.max().item()) == (9, 31)


def test_large_kernel_table_follows_the_paper_rule():
    # The official LSKA code's table (7 ... 53) and its rule: dilation d, local kernel 2d - 1, dilated kernel k // d.
    assert typing.get_args(KernelSize) == tuple(LARGE_KERNELS)  # the config checks the Literal
    assert LARGE_KERNELS[7] == (3, 3, 2) and LARGE_KERNELS[11] == (3, 5, 2) and LARGE_KERNELS[23] == (5, 7, 3)
    assert LARGE_KERNELS[35] == (5, 11, 3) and LARGE_KERNELS[53] == (5, 17, 3) and LARGE_KERNELS[65] == (5, 21, 3)
    for k, (local, dilated, d) in LARGE_KERNELS.items():
        assert local == 2 * d - 1 and dilated == k // d, k


def test_lka_default_is_vans_module():
    # kernel_size 23 (the default) keeps VAN's names, shapes, padding and dilation: old checkpoints load as they are.
    lka = LargeKernelAttention(4)
    assert lka.kernel_size == 23
    shapes = {n: tuple(p.shape) for n, p in lka.named_parameters()}
    assert shapes == {n: tuple(p.shape) for n, p in LargeKernelAttention(4, 23).named_parameters()}
    assert shapes["conv0.weight"] == (4, 1, 5, 5) and shapes["conv_spatial.weight"] == (4, 1, 7, 7)
    assert list(shapes) == ["conv0.weight", "conv0.bias", "conv_spatial.weight", "conv_spatial.bias",
                            "conv1.weight", "conv1.bias"]  # fmt: skip
    assert (lka.conv0.padding, lka.conv_spatial.padding, lka.conv_spatial.dilation) == ((2, 2), (9, 9), (3, 3))


@pytest.mark.parametrize("cls", [LargeKernelAttention, LargeSeparableKernelAttention])
@pytest.mark.parametrize("k", list(LARGE_KERNELS))
def test_large_kernel_attention_keeps_the_size_and_its_receptive_field_is_k(cls, k):
    # local radius (l-1)/2 plus dilated radius d(m-1)/2 = (k-1)/2: the centre output sees exactly a k x k window.
    torch.manual_seed(0)
    attn = cls(2, k).double()
    n = k + 10  # odd, so the centre is a pixel
    x = torch.randn(1, 2, n, n, dtype=torch.float64, requires_grad=True)
    out = attn(x)
    assert out.shape == x.shape
    assert attn(torch.randn(1, 2, 9, 4, dtype=torch.float64)).shape == (1, 2, 9, 4)  # smaller than the kernel
    (grad,) = torch.autograd.grad(out[0, :, n // 2, n // 2].sum(), x)
    rows, cols = grad.abs().sum(1)[0].nonzero(as_tuple=True)
    lo, hi = n // 2 - (k - 1) // 2, n // 2 + (k - 1) // 2
    assert (rows.min().item(), rows.max().item()) == (lo, hi)
    assert (cols.min().item(), cols.max().item()) == (lo, hi)
    assert len(rows) == k * k  # the whole window, no holes between the dilated taps


@pytest.mark.parametrize("k", list(LARGE_KERNELS))
def test_lka_parameter_count_per_layer(k):
    c = 6
    local, dilated, dilation = LARGE_KERNELS[k]
    lka = LargeKernelAttention(c, k)
    expected = (c * local**2 + c) + (c * dilated**2 + c) + (c * c + c)  # two 2-D depthwise convs and the 1x1
    assert sum(p.numel() for p in lka.parameters()) == expected
    assert tuple(lka.conv0.weight.shape) == (c, 1, local, local)
    assert tuple(lka.conv_spatial.weight.shape) == (c, 1, dilated, dilated)
    assert lka.conv_spatial.dilation == (dilation, dilation)


@pytest.mark.parametrize("k", list(LARGE_KERNELS))
def test_lska_parameter_count_per_layer(k):
    c = 6
    local, dilated, _ = LARGE_KERNELS[k]

    def depthwise_1d(size: int) -> int:  # a 1 x size (or size x 1) depthwise conv with bias
        return c * size + c

    expected = 2 * depthwise_1d(local) + 2 * depthwise_1d(dilated) + (c * c + c)  # + the 1x1 conv
    assert sum(p.numel() for p in LargeSeparableKernelAttention(c, k).parameters()) == expected
    shapes = {n: tuple(p.shape) for n, p in LargeSeparableKernelAttention(c, k).named_parameters()}
    assert shapes["conv0h.weight"] == (c, 1, 1, local) and shapes["conv0v.weight"] == (c, 1, local, 1)
    assert shapes["conv_spatial_h.weight"] == (c, 1, 1, dilated)
    assert shapes["conv_spatial_v.weight"] == (c, 1, dilated, 1)
    assert shapes["conv1.weight"] == (c, c, 1, 1)


@pytest.mark.parametrize("k", list(LARGE_KERNELS))
def test_lska_with_rank_one_kernels_equals_lka(k):
    # LSKA(k) is the separable form of LKA(k) (LSKA(23) of VAN's LKA): with LKA's 2-D kernels set to outer products
    # v h^T (and the biases of the horizontal convs zero) the two agree everywhere, borders included (both zero-pad).
    torch.manual_seed(0)
    c = 3
    lka, lska = LargeKernelAttention(c, k).double(), LargeSeparableKernelAttention(c, k).double()
    with torch.no_grad():
        for conv2d, (conv_h, conv_v) in [
            (lka.conv0, (lska.conv0h, lska.conv0v)),
            (lka.conv_spatial, (lska.conv_spatial_h, lska.conv_spatial_v)),
        ]:
            conv_h.bias.zero_()
            # (C, 1, 1, k) x (C, 1, k, 1) -> (C, 1, k, k): the outer product of each channel's two 1-D kernels
            conv2d.weight.copy_(conv_v.weight * conv_h.weight)
            conv2d.bias.copy_(conv_v.bias)
        lka.conv1.load_state_dict(lska.conv1.state_dict())
    x = torch.randn(2, c, 30, 27, dtype=torch.float64)
    torch.testing.assert_close(lska(x), lka(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls", [LargeKernelAttention, LargeSeparableKernelAttention])
def test_large_kernel_attention_rejects_unsupported_kernel_sizes(cls):
    for bad in (21, 5, 0, 64, True):
        with pytest.raises(ValueError, match=r"kernel_size must be one of 7, 11, 23, 35, 41, 53, 65; got"):
            cls(4, bad)


def test_drop_path_is_identity_in_eval_and_keeps_expectation_in_training():
    x = torch.ones(20000, 3, 2, 2)
    drop = DropPath(0.3)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    torch.manual_seed(0)
    y = drop(x)
    per_sample = y[:, 0, 0, 0]
    # each sample is either dropped (0) or scaled by 1/0.7, the whole sample at once
    assert ((per_sample == 0) | ((per_sample - 1 / 0.7).abs() < 1e-6)).all()
    assert torch.equal(y, per_sample.view(-1, 1, 1, 1).expand_as(y))
    assert abs(y.mean().item() - 1.0) < 0.02  # 4 standard errors of the mean
    assert abs((per_sample == 0).float().mean().item() - 0.3) < 0.015
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_layer_scale_scales_channels():
    ls = LayerScale(3, init_value=1e-2)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(ls(x), x * 1e-2)
    assert ls.scale.shape == (3,)


def test_gaussian_high_pass_equals_input_minus_opencv_blur():
    import cv2
    import numpy as np

    x = torch.rand(2, 3, 21, 34, dtype=torch.float64)
    for sigma in (0.8, 4.0):  # 4.0: a 25-px kernel, wider than the 21-px side
        r = int(np.ceil(3 * sigma))
        want = [
            x[b, c].numpy() - cv2.GaussianBlur(x[b, c].numpy(), (2 * r + 1, 2 * r + 1), sigma,
                                               borderType=cv2.BORDER_REPLICATE)
            for b in range(2) for c in range(3)
        ]  # fmt: skip
        got = GaussianHighPass(sigma).double()(x)
        torch.testing.assert_close(got, torch.from_numpy(np.stack(want)).view_as(x), rtol=0, atol=1e-6)
    assert GaussianHighPass(2.0).state_dict() == {}  # no checkpoint keys
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianHighPass(0.0)


def test_gaussian_high_pass_with_a_luma_sigma_filters_luma_and_chroma_apart():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(2, 3, 40, 37, dtype=torch.float64)
    got = GaussianHighPass(1.0, luma_sigma=3.0).double()(x)
    luma = x.mean(dim=1, keepdim=True)
    chroma = x - luma

    def high(t: torch.Tensor, sigma: float) -> torch.Tensor:  # scipy's "nearest" is replicate padding
        return t - torch.from_numpy(gaussian_filter(t.numpy(), (0, 0, sigma, sigma), mode="nearest", truncate=3.0))

    torch.testing.assert_close(got, high(luma, 3.0) + high(chroma, 1.0), rtol=0, atol=1e-6)
    # A residual with no chroma (grey) is high-passed by the luma sigma alone, one with no luma by the chroma sigma.
    grey = luma.expand(-1, 3, -1, -1)
    # The high-pass computes in float32, and the two paths sum in a different order: equal to ~1e-7, not bit for bit.
    torch.testing.assert_close(
        GaussianHighPass(1.0, luma_sigma=3.0).double()(grey), GaussianHighPass(3.0).double()(grey), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(
        GaussianHighPass(1.0, luma_sigma=3.0).double()(chroma),
        GaussianHighPass(1.0).double()(chroma),
        rtol=0,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="luma sigma must be > 0"):
        GaussianHighPass(1.0, luma_sigma=0.0)


def test_gaussian_high_pass_widens_where_the_image_is_flat():
    from scipy.ndimage import correlate, gaussian_filter

    g = torch.Generator().manual_seed(0)
    residual = torch.rand(2, 3, 40, 37, generator=g, dtype=torch.float64) - 0.5
    # A smooth ramp, with 4 px stripes on the right (texture).
    image = torch.linspace(0.2, 0.6, 37, dtype=torch.float64).expand(2, 3, 40, 37).clone()
    image[..., 20:] += 0.2 * (torch.arange(17) % 4 < 2).double()
    got = GaussianHighPass(1.0, flat=(3.0, 50.0)).double()(residual, image)

    def blur(t: np.ndarray, sigma: float) -> np.ndarray:  # scipy's "nearest" is replicate padding
        return gaussian_filter(t, (0, 0, sigma, sigma), mode="nearest", truncate=3.0)

    luma = blur(image.mean(dim=1, keepdim=True).numpy(), 1.0)
    sobel = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    gx, gy = (correlate(luma, k[None, None], mode="nearest") for k in (sobel, sobel.T))
    energy = blur(gx**2 + gy**2, 4.0) * 255**2
    w = np.clip(1 - energy / 50.0, 0, 1)
    r = residual.numpy()
    expected = r - (blur(r, 1.0) + w * (blur(r, 3.0) - blur(r, 1.0)))
    torch.testing.assert_close(got, torch.from_numpy(expected), rtol=0, atol=1e-5)
    assert w[..., :, :8].min() > 0.75 and w[..., :, 26:].max() < 0.1  # both regimes are in the test
    # Without the image (or on a flat one) it is the plain or the wide high-pass.
    torch.testing.assert_close(GaussianHighPass(1.0, flat=(3.0, 50.0)).double()(residual),
                               GaussianHighPass(1.0).double()(residual))  # fmt: skip
    flat = torch.full_like(image, 0.5)
    torch.testing.assert_close(
        GaussianHighPass(1.0, flat=(3.0, 50.0)).double()(residual, flat),
        GaussianHighPass(3.0).double()(residual),
        rtol=0,
        atol=1e-6,
    )
    for bad in ((1.0, 50.0), (3.0, 0.0), (3.0,)):
        with pytest.raises(ValueError, match="a flat high-pass needs"):
            GaussianHighPass(1.0, flat=bad)
