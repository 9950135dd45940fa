"""Training losses: values against hand computations, the registry and weighted sums."""

from __future__ import annotations

import math

import pytest
import torch

from nafrestore.losses import LOSSES, CharbonnierLoss, PSNRLoss, build_loss


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(3, 3, 16, 16, generator=g)
    pred = (gt + 0.1 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
    return pred, gt


def test_registry_has_the_four_losses() -> None:
    assert LOSSES.names() == ["charbonnier", "l1", "mse", "psnr"]


def test_psnr_loss_is_minus_mean_per_image_psnr() -> None:
    pred, gt = _pair()
    psnrs = []
    for b in range(pred.shape[0]):
        mse = float(((pred[b].double() - gt[b].double()) ** 2).mean())
        psnrs.append(10 * math.log10(1.0 / mse))
    loss = PSNRLoss()(pred, gt)
    # Only the 1e-8 added to each MSE separates the loss from -mean(PSNR).
    assert float(loss) == pytest.approx(-sum(psnrs) / len(psnrs), abs=1e-4)


def test_psnr_loss_constant_and_perfect_prediction() -> None:
    assert PSNRLoss.scale == pytest.approx(10 / math.log(10))
    x = torch.rand(2, 3, 8, 8)
    assert float(PSNRLoss()(x, x)) == pytest.approx(-80.0)  # 10 log10(1e-8): finite for identical images


def test_l1_mse_charbonnier_values() -> None:
    pred, gt = _pair(1)
    d = pred - gt
    assert float(build_loss([("l1", 1.0)])(pred, gt)) == pytest.approx(float(d.abs().mean()), rel=1e-6)
    assert float(build_loss([("mse", 1.0)])(pred, gt)) == pytest.approx(float((d**2).mean()), rel=1e-6)
    expected = float(torch.sqrt(d**2 + 1e-6).mean())
    assert CharbonnierLoss().eps == 1e-3
    assert float(build_loss([("charbonnier", 1.0)])(pred, gt)) == pytest.approx(expected, rel=1e-6)


def test_weighted_sum_and_terms() -> None:
    pred, gt = _pair(2)
    loss = build_loss([("l1", 0.5), ("psnr", 2.0)])
    total = loss(pred, gt)
    l1 = (pred - gt).abs().mean()
    expected = 0.5 * l1 + 2.0 * PSNRLoss()(pred, gt)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert set(loss.last_terms) == {"l1", "psnr"}
    assert float(loss.last_terms["l1"]) == pytest.approx(float(l1))
    assert "0.5 * l1 + 2 * psnr" in repr(loss)


def test_losses_are_differentiable() -> None:
    pred, gt = _pair(3)
    pred.requires_grad_(True)
    build_loss([("psnr", 1.0), ("charbonnier", 1.0), ("l1", 1.0), ("mse", 1.0)])(pred, gt).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_unknown_loss_name() -> None:
    with pytest.raises(KeyError, match="Valid names"):
        build_loss([("ssim", 1.0)])
