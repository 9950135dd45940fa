"""Guided non-local means (models/nonlocal_means.py): the filter against a per-pixel reference, what it does to a
noisy photograph, and its blend into a network's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nafrestore.data.sample import sample_images
from nafrestore.models.layers import GaussianHighPass, noise_level
from nafrestore.models.nonlocal_means import FADE, NonLocalMeansBlend, check_strengths, nonlocal_means


def reference(image: np.ndarray, guide: np.ndarray, h: float, radius: int, stride: int, patch: int) -> np.ndarray:
    """Non-local means pixel by pixel, as the docstring defines it: for each offset o, the squared guide difference
    at q, mean over channels, averaged over the patch of q around p (positions clamped to the image: replicate
    padding), weight exp(-D / h^2); the output the weighted mean of image(p + o). (C, H, W) float64."""
    _, hh, ww = image.shape
    r = patch // 2
    offsets = range(-radius, radius + 1, stride)

    def at(a: np.ndarray, y: int, x: int) -> np.ndarray:
        return a[:, min(max(y, 0), hh - 1), min(max(x, 0), ww - 1)]

    out = np.zeros_like(image)
    for y in range(hh):
        for x in range(ww):
            total, weights = np.zeros(image.shape[0]), 0.0
            for dy in offsets:
                for dx in offsets:
                    d = []
                    for qy in range(y - r, y + r + 1):
                        for qx in range(x - r, x + r + 1):
                            cy, cx = min(max(qy, 0), hh - 1), min(max(qx, 0), ww - 1)
                            d.append(np.mean((at(guide, cy, cx) - at(guide, cy + dy, cx + dx)) ** 2))
                    w = np.exp(-np.mean(d) / h**2)
                    total += w * at(image, y + dy, x + dx)
                    weights += w
            out[:, y, x] = total / weights
    return out


@pytest.mark.parametrize("radius, stride, patch", [(2, 1, 3), (3, 2, 3), (2, 2, 5)])
def test_nonlocal_means_equals_the_per_pixel_definition(radius, stride, patch):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 9, 8, generator=g, dtype=torch.float64)
    guide = torch.rand(2, 1, 9, 8, generator=g, dtype=torch.float64)
    h = torch.tensor([0.2, 0.5], dtype=torch.float64)
    got = nonlocal_means(image, guide, h, radius, stride, patch)
    for b in range(2):
        want = reference(image[b].numpy(), guide[b].numpy(), float(h[b]), radius, stride, patch)
        np.testing.assert_allclose(got[b].numpy(), want, rtol=0, atol=1e-6)


def test_nonlocal_means_limits_a_box_mean_and_the_identity():
    image = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # A huge h weighs every offset alike: the mean of the image shifted over the (replicate-padded) offsets.
    shifted = torch.nn.functional.pad(image, (2, 2, 2, 2), mode="replicate")
    box = sum(shifted[:, :, 2 + dy : 14 + dy, 2 + dx : 12 + dx] for dy in (-2, 0, 2) for dx in (-2, 0, 2)) / 9
    got = nonlocal_means(image, image, torch.tensor([1e6]), radius=2, stride=2, patch=3)
    torch.testing.assert_close(got, box.float(), rtol=0, atol=1e-6)
    # A tiny h on a guide without repeated patches leaves every pixel to itself.
    got = nonlocal_means(image, image, torch.tensor([1e-4]), radius=2, stride=1, patch=3)
    torch.testing.assert_close(got, image.float(), rtol=0, atol=1e-6)


def test_guided_nonlocal_means_denoises_a_photograph_and_a_better_guide_does_better():
    clean = torch.from_numpy(dict(sample_images("val"))["astronaut"][:96, :96]).permute(2, 0, 1)[None].float()
    noisy = clean + 10 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))

    def psnr(x: torch.Tensor) -> float:
        return float(10 * torch.log10(1 / ((x - clean) ** 2).mean()))

    h = torch.tensor([10 / 255])
    self_guided = nonlocal_means(noisy, noisy.mean(dim=1, keepdim=True), h)
    clean_guided = nonlocal_means(noisy, clean.mean(dim=1, keepdim=True), h)
    assert psnr(self_guided) > psnr(noisy) + 2.0
    assert psnr(clean_guided) > psnr(self_guided) + 0.1


def smooth_image(noise: float, seed: int = 0) -> torch.Tensor:
    """(1, 3, 40, 44): a colour ramp with a 4 px stripe pattern on the right, plus Gaussian noise of std ``noise``."""
    image = torch.linspace(0.2, 0.6, 44).expand(1, 3, 40, 44).clone() * torch.tensor([1.0, 0.9, 0.7]).view(3, 1, 1)
    image[..., 26:] += 0.15 * (torch.arange(18) % 4 < 2).float()
    return image + noise * torch.randn(image.shape, generator=torch.Generator().manual_seed(seed))


def test_blend_moves_the_output_towards_guided_nonlocal_means_by_flatness_for_mild_noise_only():
    highpass = GaussianHighPass(2.0, flat=(4.0, 16.0))
    blend = NonLocalMeansBlend(highpass, (0.6, 0.3))
    residual = 0.02 * torch.randn(1, 3, 40, 44, generator=torch.Generator().manual_seed(4))
    mild = smooth_image(2 / 255)
    assert float(noise_level(mild)) * 255 < FADE[0]
    filtered, flatness = highpass.filter(residual, mild)
    out = mild + filtered
    strength = 0.3 + 0.3 * flatness
    assert strength.max() > 0.55 and strength.min() < 0.35  # flat and texture are both in the test
    expected = filtered + strength * (nonlocal_means(mild, out.mean(dim=1, keepdim=True), noise_level(mild)) - out)
    torch.testing.assert_close(blend(residual, mild), expected, rtol=0, atol=1e-6)
    assert (blend(residual, mild) - filtered).abs().max() > 1e-3  # it did something
    # Trainable through the output (the estimate is a fixed target): d blend / d residual = (1 - m) d highpass.
    grad = torch.randn_like(residual)
    r1, r2 = residual.clone().requires_grad_(True), residual.clone().requires_grad_(True)
    (blend(r1, mild) * grad).sum().backward()
    (highpass(r2, mild) * (1 - strength) * grad).sum().backward()
    torch.testing.assert_close(r1.grad, r2.grad, rtol=0, atol=1e-6)
    # Strong noise: the high-pass alone, with or without the branch (exports run branchless).
    strong = smooth_image(20 / 255)
    assert float(noise_level(strong)) * 255 > FADE[1]
    torch.testing.assert_close(blend(residual, strong), highpass(residual, strong), rtol=0, atol=0)
    blend.branchless = True
    torch.testing.assert_close(blend(residual, strong), highpass(residual, strong), rtol=0, atol=0)
    # Zero strengths, or no image: the high-pass alone.
    torch.testing.assert_close(NonLocalMeansBlend(highpass, (0, 0))(residual, mild), highpass(residual, mild))
    torch.testing.assert_close(blend(residual), highpass(residual))


def test_blend_needs_a_flat_high_pass_and_strengths_in_range():
    with pytest.raises(ValueError, match="needs residual_highpass_flat"):
        NonLocalMeansBlend(GaussianHighPass(2.0), (0.6, 0.3))
    assert check_strengths([1, 0]) == (1.0, 0.0)
    for bad in ((0.6,), (1.2, 0.3), (0.6, -0.1)):
        with pytest.raises(ValueError, match="strengths"):
            check_strengths(bad)
