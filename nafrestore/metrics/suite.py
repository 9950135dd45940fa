"""The metric registry and :class:`MetricSuite`, the one object an evaluation loop needs."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nafrestore.errors import ConfigError, DataError
from nafrestore.metrics.common import check_pair, mean_finite
from nafrestore.metrics.fid import DEFAULT_PATCH, FID_DIMS, RFID
from nafrestore.metrics.lpips import LPIPS_NETS, get_lpips_model
from nafrestore.metrics.lpips import lpips as lpips_metric
from nafrestore.metrics.psnr import psnr
from nafrestore.metrics.ssim import MS_SSIM_WEIGHTS, WIN_SIZE, ms_ssim, ms_ssim_num_scales, ssim
from nafrestore.registry import Registry

METRICS: Registry = Registry("metric")
METRICS.register("psnr")(psnr)
METRICS.register("ssim")(ssim)
METRICS.register("ms-ssim")(ms_ssim)
METRICS.register("lpips")(lpips_metric)
# rFID and KID share one accumulator (and one pass of the Inception network).
METRICS.register("rfid")(RFID)
METRICS.register("kid")(RFID)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: ``kind`` is ``'image'`` (one value per image, averaged) or ``'set'`` (one value per set)."""

    kind: str
    higher_is_better: bool
    unit: str = ""


METRIC_INFO: dict[str, MetricInfo] = {
    "psnr": MetricInfo("image", True, "dB"),
    "ssim": MetricInfo("image", True),
    "ms-ssim": MetricInfo("image", True),
    "lpips": MetricInfo("image", False),
    "rfid": MetricInfo("set", False),
    "kid": MetricInfo("set", False),
}
PER_IMAGE_METRICS = tuple(n for n, i in METRIC_INFO.items() if i.kind == "image")
SET_METRICS = tuple(n for n, i in METRIC_INFO.items() if i.kind == "set")
_ALIASES = {"ms_ssim": "ms-ssim", "msssim": "ms-ssim", "mssim": "ms-ssim"}


def parse_metric_names(names: str | Sequence[str]) -> list[str]:
    """Metric names from ``"psnr,ssim,ms-ssim,lpips,rfid,kid"`` (or a list), normalised, de-duplicated, in order.

    Case and ``_``/``-`` are forgiven (``MS_SSIM`` -> ``ms-ssim``); ``"all"`` means every metric.

    Raises:
        ConfigError: an unknown name (with a did-you-mean suggestion and the valid names), or no names.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name.replace("_", "-"))
        if name == "all":
            out.extend(n for n in METRIC_INFO if n not in out)
            continue
        if name not in METRICS:
            try:
                METRICS.get(name)
            except KeyError as exc:
                raise ConfigError(f"{exc.args[0]} Pass metrics as a comma-separated list, e.g. 'psnr,ssim'.") from None
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError(f"no metrics given; choose from {', '.join(METRIC_INFO)}")
    return out


class MetricSuite:
    """Computes a set of metrics over an evaluation set, batch by batch.

    Per-image metrics (psnr, ssim, ms-ssim, lpips) give one value per image, returned by :meth:`update` and
    averaged by :meth:`compute` (infinite PSNR of identical images left out and counted). Set-level metrics (rfid,
    kid) accumulate Inception features of patches and are computed once by :meth:`compute`.

    Args:
        names: metric names, e.g. ``"psnr,ssim,lpips"`` (see :func:`parse_metric_names`).
        y_channel: PSNR / SSIM / MS-SSIM on the BT.601 luma (BasicSR's ``test_y_channel``); LPIPS and rFID/KID
            always use RGB.
        crop_border: pixels removed from each side of every image before scoring (all metrics).
        quantize: clamp and round to 8 bits before scoring (BasicSR's convention, default); False scores raw floats.
        lpips_net: ``'alex'`` or ``'vgg'``.
        fid_patch: patch side for rFID / KID (None: whole images).
        weights_dir: folder searched first for the pretrained weights (then ``$NAFRESTORE_WEIGHTS_DIR``, then the
            torch hub cache).
        allow_unverified_weights: skip the sha256 check of the weights (tests / non-official weights only).
        allow_fewer_scales: MS-SSIM on images of 160 px or less with fewer scales instead of an error.
        device: where LPIPS and Inception run and where inputs are moved to.
        kid_subsets, kid_subset_size, seed: KID subsampling (see ``kernel_inception_distance``).
        fid_batch_size: patches per Inception forward pass.

    The networks are loaded (and their weights verified) here, so a missing weights file fails before any work.
    """

    def __init__(
        self,
        names: str | Sequence[str],
        *,
        y_channel: bool = False,
        crop_border: int = 0,
        quantize: bool = True,
        lpips_net: str = "alex",
        fid_patch: int | None = DEFAULT_PATCH,
        weights_dir: str | os.PathLike | None = None,
        allow_unverified_weights: bool = False,
        allow_fewer_scales: bool = False,
        device: torch.device | str = "cpu",
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
        fid_batch_size: int = 32,
    ) -> None:
        self.names = parse_metric_names(names)
        if not isinstance(crop_border, int) or crop_border < 0:
            raise ConfigError(f"crop_border must be a non-negative integer, got {crop_border!r}")
        if lpips_net not in LPIPS_NETS:
            raise ConfigError(f"lpips_net must be one of {', '.join(LPIPS_NETS)}, got {lpips_net!r}")
        if fid_patch is not None and (not isinstance(fid_patch, int) or fid_patch <= 0):
            raise ConfigError(f"fid_patch must be a positive integer (pixels) or None, got {fid_patch!r}")
        self.y_channel = y_channel
        self.crop_border = crop_border
        self.quantize = quantize
        self.lpips_net = lpips_net
        self.fid_patch = fid_patch
        self.allow_unverified_weights = allow_unverified_weights
        self.allow_fewer_scales = allow_fewer_scales
        self.device = torch.device(device)
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed

        self.image_names = [n for n in self.names if METRIC_INFO[n].kind == "image"]
        self.set_names = [n for n in self.names if METRIC_INFO[n].kind == "set"]
        self._lpips_model = (
            get_lpips_model(lpips_net, self.device, weights_dir=weights_dir, allow_unverified=allow_unverified_weights)
            if "lpips" in self.names
            else None
        )
        self._fid = (
            RFID(
                patch_size=fid_patch,
                quantize=quantize,
                crop_border=crop_border,
                device=self.device,
                weights_dir=weights_dir,
                allow_unverified=allow_unverified_weights,
                batch_size=fid_batch_size,
            )
            if self.set_names
            else None
        )
        self.reset()

    @staticmethod
    def minimum_side(
        names: str | Sequence[str],
        *,
        crop_border: int = 0,
        allow_fewer_scales: bool = False,
        fid_patch: int | None = DEFAULT_PATCH,
    ) -> int:
        """The smallest image side (``crop_border`` included) that every metric in ``names`` can score: SSIM's
        11-px window, MS-SSIM's 161 px (11 with ``allow_fewer_scales``), LPIPS-AlexNet's 31 px (rounded up to 32),
        rFID/KID's patch. Needs no network (usable to check a dataset before anything is loaded)."""
        names = parse_metric_names(names)
        need = 1
        if "ssim" in names:
            need = WIN_SIZE
        if "ms-ssim" in names:
            five_scales = (WIN_SIZE - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1
            need = max(need, WIN_SIZE if allow_fewer_scales else five_scales)
        if "lpips" in names:
            need = max(need, 32)
        if any(METRIC_INFO[n].kind == "set" for n in names) and fid_patch is not None:
            need = max(need, fid_patch)
        return need + 2 * crop_border

    def reset(self) -> None:
        """Forget everything accumulated (the networks stay loaded)."""
        self._values: dict[str, list[float]] = {n: [] for n in self.image_names}
        self._ms_ssim_scales: Counter[int] = Counter()
        self.n_images = 0
        if self._fid is not None:
            self._fid.reset()

    def _image_metric(self, name: str, pred: Tensor, gt: Tensor) -> Tensor:
        opts = {"crop_border": self.crop_border, "quantize": self.quantize}
        if name == "lpips":
            return lpips_metric(pred, gt, model=self._lpips_model, **opts)
        if name == "ms-ssim":
            h, w = pred.shape[-2] - 2 * self.crop_border, pred.shape[-1] - 2 * self.crop_border
            self._ms_ssim_scales[ms_ssim_num_scales(h, w, self.allow_fewer_scales)] += pred.shape[0]
            return ms_ssim(pred, gt, y_channel=self.y_channel, allow_fewer_scales=self.allow_fewer_scales, **opts)
        return METRICS.get(name)(pred, gt, y_channel=self.y_channel, **opts)

    def update(self, pred: Tensor, gt: Tensor) -> list[dict[str, float]]:
        """Score a batch.

        Args:
            pred: (B, C, H, W) restored images, float in [0, 1] (or uint8), any device (moved to ``device``).
            gt: (B, C, H, W) ground truth, same shape.

        Returns:
            one dict per image with the per-image metrics, e.g. ``[{"psnr": 31.2, "ssim": 0.91}, ...]``
            (PSNR may be inf). Empty dicts when only set-level metrics were asked for.
        """
        pred, gt = check_pair(pred.to(self.device), gt.to(self.device))
        batch = pred.shape[0]
        rows: list[dict[str, float]] = [{} for _ in range(batch)]
        for name in self.image_names:
            vals = self._image_metric(name, pred, gt).detach().cpu().tolist()
            self._values[name].extend(vals)
            for row, v in zip(rows, vals, strict=True):
                row[name] = float(v)
        if self._fid is not None:
            self._fid.update(pred, gt)
        self.n_images += batch
        return rows

    def values(self, name: str) -> np.ndarray:
        """All per-image values of a per-image metric so far, (N,) float64."""
        return np.asarray(self._values[name], dtype=np.float64)

    def compute(self) -> dict[str, Any]:
        """Aggregate everything seen since the last :meth:`reset`.

        Returns:
            a dict with one float per requested metric (per-image ones averaged without infinities; ``rfid``;
            ``kid`` and ``kid_std``), and ``n_images``, ``n_inf`` (per-image metric -> number of infinite values
            left out of its mean), ``fid_samples`` (patches per set, when rfid/kid were asked), ``ms_ssim_scales``
            (scales -> number of images, when ms-ssim was asked), ``settings`` (the options that change values) and
            ``notes`` (human-readable caveats, possibly empty).

        Raises:
            DataError: nothing was scored.
        """
        if self.n_images == 0:
            raise DataError("no images were scored: call update() with at least one batch before compute()")
        out: dict[str, Any] = {}
        notes: list[str] = []
        n_inf: dict[str, int] = {}
        for name in self.image_names:
            mean, k = mean_finite(self._values[name])
            out[name] = mean
            n_inf[name] = k
            if k:
                notes.append(
                    f"{name}: {k} of {self.n_images} images are identical to their ground truth ({name} = inf) and "
                    f"were left out of the mean"
                )
        if "ms-ssim" in self.names:
            scales = dict(sorted(self._ms_ssim_scales.items()))
            out["ms_ssim_scales"] = scales
            fewer = {s: c for s, c in scales.items() if s < len(MS_SSIM_WEIGHTS)}
            if fewer:
                notes.append(
                    f"ms-ssim: {sum(fewer.values())} images were too small for {len(MS_SSIM_WEIGHTS)} scales and used "
                    f"{', '.join(f'{s} ({c} images)' for s, c in fewer.items())} scales with renormalised weights"
                )
        if self._fid is not None:
            res = self._fid.compute(
                kid="kid" in self.set_names,
                kid_subsets=self.kid_subsets,
                kid_subset_size=self.kid_subset_size,
                seed=self.seed,
            )
            if "rfid" in self.set_names:
                out["rfid"] = res["rfid"]
            if "kid" in self.set_names:
                out["kid"], out["kid_std"] = res["kid"], res["kid_std"]
            out["fid_samples"] = res["n_samples"]
            if res["n_samples"] < FID_DIMS:
                notes.append(
                    f"rfid/kid: only {res['n_samples']} patch samples (< {FID_DIMS}); compare only with values from "
                    f"the same number of samples"
                )
        if self.allow_unverified_weights and ("lpips" in self.names or self.set_names):
            notes.append("pretrained weights were not sha256-verified: lpips/rfid/kid may not match published values")
        if not self.quantize:
            notes.append("images were scored as raw floats, not rounded to 8 bits")
        out["n_images"] = self.n_images
        out["n_inf"] = n_inf
        out["settings"] = {
            "y_channel": self.y_channel,
            "crop_border": self.crop_border,
            "quantize": self.quantize,
            "lpips_net": self.lpips_net if "lpips" in self.names else None,
            "fid_patch": self.fid_patch if self.set_names else None,
            "weights_verified": not self.allow_unverified_weights,
        }
        out["notes"] = notes
        return out
