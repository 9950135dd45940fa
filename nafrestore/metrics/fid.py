"""rFID and KID between restored images and their ground truth, on Inception features of patches.

Features are pytorch-fid's: the TensorFlow FID Inception-v3 (``pt_inception-2015-12-05-6726825d.pth``), input
resized to 299x299 bilinearly and mapped to [-1, 1], the 2048-d output of the final average pool. The network is
assembled here from torchvision's Inception3 and pytorch-fid's patched blocks exactly as
``pytorch_fid.inception.fid_inception_v3`` does, but loaded from a verified local file instead of downloaded.

A restoration test set has far fewer images than the 2048 feature dimensions, so (as HiFiC and later compression
papers do) each image is cut into non-overlapping ``patch`` x ``patch`` tiles, plus a second tiling of the image
shifted by ``patch / 2`` (the image cropped by ``patch / 2`` px at the top and left), and each tile is one sample.

The Frechet distance uses eigenvalues of symmetric matrices rather than ``scipy.linalg.sqrtm``:
tr(sqrt(S1 S2)) = sum(sqrt(eig(sqrt(S1) S2 sqrt(S1)))), where sqrt(S1) S2 sqrt(S1) is symmetric positive
semi-definite and has the eigenvalues of S1 S2. ``eigh`` is stable for the rank-deficient covariances of small sample
sets, where ``sqrtm`` returns complex parts or fails.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nafrestore.errors import DataError, WeightsError
from nafrestore.metrics.common import MetricWarning, as_float01, check_pair, exact_fp32
from nafrestore.metrics.common import crop_border as _crop
from nafrestore.metrics.common import quantize as _quantize
from nafrestore.metrics.weights import read_weights_file, resolve_weights

FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
FID_DIMS = 2048
DEFAULT_PATCH = 256

_EXTRACTORS: dict[tuple[str, str], nn.Module] = {}


# --------------------------------------------------------------------------------------------------- network


def build_fid_inception(state_dict: dict[str, Any] | None = None, source: str = "") -> nn.Module:
    """pytorch-fid's FID Inception-v3 (torchvision Inception3 with the FID-patched blocks), without any download.

    Args:
        state_dict: the ``pt_inception-2015-12-05-6726825d.pth`` state dict (loaded strictly); None leaves the
            network randomly initialised (tests only).
        source: the file it came from, for error messages.
    """
    # Here, not at the top: torchvision adds ~2.5 s to the start of every command that scores (measured), and
    # only rfid and kid need it.
    import torchvision
    from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    # As pytorch_fid.inception.fid_inception_v3: 1008 classes, no aux head, no (slow, useless) weight init.
    inception = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    inception.Mixed_5b = FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = FIDInceptionE_1(1280)
    inception.Mixed_7c = FIDInceptionE_2(2048)
    if state_dict is not None:
        try:
            inception.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise WeightsError(
                f"{source or 'the state dict'} is not pytorch-fid's FID Inception state dict ({exc}). Download "
                f"{FID_WEIGHTS} again."
            ) from exc
    return inception


class FIDInceptionFeatures(nn.Module):
    """pytorch-fid's ``InceptionV3([3], resize_input=True, normalize_input=True)``: pool3 features.

    Same blocks (and state-dict layout, ``blocks.0`` .. ``blocks.3``) as pytorch-fid's wrapper.

    Input: (N, 3, H, W) float in [0, 1]. Output: (N, 2048) float32.
    """

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        i = inception
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
                nn.Sequential(i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
                nn.Sequential(
                    i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e
                ),
                nn.Sequential(i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))),
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0  # [0, 1] -> [-1, 1], the range the TensorFlow network was trained on
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)


def get_fid_extractor(
    device: torch.device | str = "cpu",
    *,
    weights_dir: str | os.PathLike | None = None,
    allow_unverified: bool = False,
) -> nn.Module:
    """The FID feature network on ``device`` in eval mode, built once per (device, weights file) and cached.

    Raises:
        WeightsError: the Inception weights file is missing or fails its checksum.
    """
    path = resolve_weights(FID_WEIGHTS, weights_dir, verify=not allow_unverified)
    device = torch.device(device)
    key = (str(device), os.path.abspath(path))
    if key not in _EXTRACTORS:
        net = FIDInceptionFeatures(build_fid_inception(read_weights_file(path), str(path))).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        _EXTRACTORS[key] = net.to(device)
    return _EXTRACTORS[key]


# --------------------------------------------------------------------------------------------------- patches


def _tile(x: Tensor, patch: int) -> Tensor:
    b, c, h, w = x.shape
    nh, nw = h // patch, w // patch
    if nh == 0 or nw == 0:
        return x.new_empty((0, c, patch, patch))
    x = x[:, :, : nh * patch, : nw * patch]
    # (B, C, nh, p, nw, p) -> (B, nh, nw, C, p, p): image-major, then row-major tiles.
    return x.reshape(b, c, nh, patch, nw, patch).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, patch, patch)


def extract_patches(x: Tensor, patch: int, shift: int | None = None) -> Tensor:
    """Non-overlapping ``patch`` tiles of (B, C, H, W) plus those of the image shifted by ``shift`` px.

    Args:
        x: (B, C, H, W) images.
        patch: tile side in px. Incomplete tiles at the right and bottom are dropped.
        shift: offset of the second tiling (crop ``shift`` px at the top and left, tile again); default
            ``patch // 2``; 0 disables the second tiling.

    Returns:
        (N, C, patch, patch) with N = B * :func:`count_patches` (H, W, patch, shift).
    """
    if patch <= 0:
        raise ValueError(f"patch must be positive, got {patch}")
    shift = patch // 2 if shift is None else shift
    parts = [_tile(x, patch)]
    if shift > 0:
        parts.append(_tile(x[:, :, shift:, shift:], patch))
    return torch.cat(parts)


def count_patches(height: int, width: int, patch: int, shift: int | None = None) -> int:
    """How many samples :func:`extract_patches` takes from one ``height`` x ``width`` image."""
    shift = patch // 2 if shift is None else shift
    n = (height // patch) * (width // patch)
    if shift > 0:
        n += (max(height - shift, 0) // patch) * (max(width - shift, 0) // patch)
    return n


# --------------------------------------------------------------------------------------------------- distances


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) in float64 of (N, D) features, as pytorch-fid (``np.cov``)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"feature statistics need at least 2 samples of shape (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), with tr(sqrt(S1 S2)) from the eigenvalues of the
    symmetric PSD matrix sqrt(S1) S2 sqrt(S1) (negative round-off eigenvalues clipped to 0). Computed in float64;
    a round-off negative result is clipped to 0.

    Args:
        mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}")
    # Symmetrise: np.cov output is symmetric only up to round-off, and eigh reads one triangle.
    s1, s2 = (s1 + s1.T) / 2.0, (s2 + s2.T) / 2.0
    root1 = _sqrt_psd(s1)
    m = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(d, 0.0)


def frechet_distance_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted (mean, unbiased covariance) to two feature sets.

    Equal to ``frechet_distance(*feature_statistics(features1), *feature_statistics(features2))``. With fewer
    samples than dimensions it avoids the D x D eigendecompositions: writing S_i = A_i^T A_i with
    A_i = (F_i - mean_i) / sqrt(N_i - 1), the non-zero eigenvalues of S1 S2 are the squared singular values of the
    N1 x N2 matrix A1 A2^T, so tr(sqrt(S1 S2)) is its nuclear norm (exact, and cheap for N << D).

    Args:
        features1, features2: (N1, D) and (N2, D) features, N1, N2 >= 2.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    (n1, d), (n2, d2) = f1.shape, f2.shape
    if d != d2 or n1 < 2 or n2 < 2:
        raise DataError(f"need two (N, D) feature sets with N >= 2 and the same D, got {f1.shape} and {f2.shape}")
    if max(n1, n2) >= d:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a1 = (f1 - mu1) / np.sqrt(n1 - 1)
    a2 = (f2 - mu2) / np.sqrt(n2 - 1)
    tr_covmean = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    diff = mu1 - mu2
    d_val = float(diff @ diff + np.sum(a1 * a1) + np.sum(a2 * a2) - 2.0 * tr_covmean)
    return max(d_val, 0.0)


def _poly_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3 between two equal-size samples."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    off_xx = k_xx.sum() - np.trace(k_xx)
    off_yy = k_yy.sum() - np.trace(k_yy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al. 2018) as torchmetrics / clean-fid compute it.

    The unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3 (degree 3, gamma 1/d, coef 1), averaged over
    ``subsets`` random subsets of min(subset_size, N1, N2) samples drawn without replacement from each set
    (numpy ``default_rng(seed)``). When the subset is the whole of both sets every subset gives the same value, so
    it is computed once.

    Args:
        features1, features2: (N1, D) and (N2, D) features.

    Returns:
        (mean, population standard deviation) over the subsets.
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    n1, n2 = f1.shape[0], f2.shape[0]
    m = min(subset_size, n1, n2)
    if m < 2:
        raise DataError(f"KID needs at least 2 samples in each set, got {n1} and {n2}")
    if m == n1 == n2:
        return _poly_mmd2_unbiased(f1, f2), 0.0
    rng = np.random.default_rng(seed)
    vals = np.array(
        [
            _poly_mmd2_unbiased(f1[rng.choice(n1, m, replace=False)], f2[rng.choice(n2, m, replace=False)])
            for _ in range(subsets)
        ]
    )
    return float(vals.mean()), float(vals.std())


# --------------------------------------------------------------------------------------------------- accumulator


class RFID:
    """Set-level rFID (and KID) accumulator over (restored, ground-truth) batches.

    Call :meth:`update` per batch, then :meth:`compute`. Both sets are cut into the same patches (see
    :func:`extract_patches`), so ``n_samples`` is the number of patches per set.

    Args:
        patch_size: tile side in px (``fid_patch``); None scores whole images (each resized to 299x299), one
            sample per image.
        quantize: clamp and round to 8 bits before extracting features (default).
        crop_border: pixels removed from each side first.
        device: where the Inception network runs.
        weights_dir, allow_unverified: see :func:`nafrestore.metrics.weights.resolve_weights`.
        batch_size: patches per forward pass (memory bound).
        extractor: a feature network to use instead of the cached one (e.g. :func:`get_fid_extractor`).

    Raises:
        WeightsError: on construction, if the Inception weights are missing or fail their checksum.
    """

    def __init__(
        self,
        *,
        patch_size: int | None = DEFAULT_PATCH,
        quantize: bool = True,
        crop_border: int = 0,
        device: torch.device | str = "cpu",
        weights_dir: str | os.PathLike | None = None,
        allow_unverified: bool = False,
        batch_size: int = 32,
        extractor: nn.Module | None = None,
    ) -> None:
        if patch_size is not None and patch_size <= 0:
            raise ValueError(f"patch_size must be positive or None, got {patch_size}")
        self.patch_size = patch_size
        self.quantize = quantize
        self.crop_border = crop_border
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.extractor = (
            extractor
            if extractor is not None
            else get_fid_extractor(self.device, weights_dir=weights_dir, allow_unverified=allow_unverified)
        )
        self._device = next(self.extractor.parameters()).device
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated features."""
        self._pred: list[Tensor] = []
        self._gt: list[Tensor] = []
        self.n_images = 0

    @property
    def n_samples(self) -> int:
        """Number of samples (patches) accumulated per set."""
        return sum(len(f) for f in self._pred)

    def _samples(self, x: Tensor) -> Tensor:
        x = _quantize(x) if self.quantize else as_float01(x)
        x = _crop(x, self.crop_border)
        if self.patch_size is not None:
            x = extract_patches(x, self.patch_size)
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    @torch.no_grad()
    def _features(self, samples: Tensor) -> Tensor:
        out = []
        with exact_fp32(self._device):
            for i in range(0, samples.shape[0], self.batch_size):
                chunk = samples[i : i + self.batch_size].to(self._device, torch.float32)
                out.append(self.extractor(chunk).float().cpu())
        return torch.cat(out) if out else torch.empty((0, FID_DIMS))

    def update(self, pred: Tensor, gt: Tensor) -> int:
        """Add a batch: pred, gt (B, C, H, W) float in [0, 1] (or uint8), same shape. Returns the patches added."""
        pred, gt = check_pair(pred, gt)
        fp, fg = self._features(self._samples(pred)), self._features(self._samples(gt))
        self._pred.append(fp)
        self._gt.append(fg)
        self.n_images += pred.shape[0]
        return fp.shape[0]

    def features(self) -> tuple[np.ndarray, np.ndarray]:
        """The accumulated (N, 2048) float32 features of the restored and the ground-truth sets."""
        cat = (lambda fs: torch.cat(fs).numpy()) if self._pred else (lambda fs: np.empty((0, FID_DIMS), np.float32))
        return cat(self._pred), cat(self._gt)

    def compute(
        self, *, kid: bool = False, kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0
    ) -> dict[str, Any]:
        """rFID (and optionally KID) of the accumulated sets.

        Returns:
            ``{"rfid": float, "n_samples": int}``, plus ``"kid"``, ``"kid_std"`` and ``"kid_subset_size"`` with
            ``kid=True``. Warns (:class:`MetricWarning`) when n_samples < 2048.

        Raises:
            DataError: fewer than 2 samples (e.g. every image smaller than the patch size).
        """
        n = self.n_samples
        if n < 2:
            raise DataError(
                f"rFID needs at least 2 samples but {self.n_images} image(s) gave {n} patch(es) of "
                f"{self.patch_size} px; use more or larger images, or a smaller fid_patch."
            )
        if n < FID_DIMS:
            warnings.warn(
                f"rFID from {n} samples, fewer than the {FID_DIMS} feature dimensions: the covariance estimates "
                f"are rank-deficient and the value is biased upward; compare it only with values computed from the "
                f"same number of samples (more or larger images, or a smaller fid_patch, give more).",
                MetricWarning,
                stacklevel=2,
            )
        fp, fg = self.features()
        out: dict[str, Any] = {"rfid": frechet_distance_from_features(fp, fg), "n_samples": n}
        if kid:
            mean, std = kernel_inception_distance(fp, fg, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
            out.update(kid=mean, kid_std=std, kid_subset_size=min(kid_subset_size, n))
        return out
