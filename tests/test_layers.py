"""LayerNorm2d (custom backward), TLC pooling, LKA, DropPath, LayerScale."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nafrestore.models.layers import (
    DropPath,
    LargeKernelAttention,
    LayerNorm2d,
    LayerNorm2dFunction,
    LayerScale,
    LocalAvgPool2d,
    SimpleGate,
    layer_norm_2d_plain,
)


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
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out_custom = norm(x1)
    out_plain = layer_norm_2d_plain(x2, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out_custom, out_plain, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out_plain)
    grads_custom = torch.autograd.grad(out_custom, (x1, norm.weight, norm.bias), g)
    grads_plain = torch.autograd.grad(out_plain, (x2, norm.weight, norm.bias), g)
    for a, b in zip(grads_custom, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
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
