"""Scoring restored images against ground truth: ``nafrestore eval``.

Two sources of pairs: two folders of images (restored and ground truth, optionally the degraded input), or a
model restoring a dataset (the configured validation set, or a folder of clean images degraded by the config's
synthetic pipeline, fixed per image by its name). Every pair is scored by a :class:`MetricSuite`; the degraded
input is scored too (the ``input`` row) so the gain is visible. Same-size images are batched together.

The result is an :class:`EvalResult`, written as a table, JSON, a per-image CSV and a comparison figure.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError
from .utils.files import atomic_write

Restore = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) [0, 1] -> same


@dataclass
class EvalItem:
    """One image to score: ``gt`` and either ``pred`` or ``lq`` (restored by the model), (3, H, W) in [0, 1]."""

    name: str
    gt: torch.Tensor
    lq: torch.Tensor | None = None
    pred: torch.Tensor | None = None


@dataclass
class EvalResult:
    """What ``eval`` measured; :meth:`to_json` gives the documented JSON layout."""

    summary: dict[str, float]
    input_summary: dict[str, float] | None
    n_images: int
    images: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "input_summary": self.input_summary,
            "n_images": self.n_images,
            "images": self.images,
            "settings": self.settings,
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------------------
# Sources of pairs


def folder_items(pred_dir: str | Path, gt_dir: str | Path, lq_dir: str | Path | None = None) -> Iterator[EvalItem]:
    """Pairs of restored and ground-truth images matched by relative path and stem (and the input, if given).

    Raises:
        DataError: unmatched names, or a pair of different sizes (naming it).
    """
    from .data import match_pairs, read_image

    pairs = match_pairs(pred_dir, gt_dir)
    inputs = {name: lq for name, lq, _ in match_pairs(lq_dir, gt_dir)} if lq_dir is not None else {}
    for name, pred_path, gt_path in pairs:
        pred, gt = read_image(pred_path), read_image(gt_path)
        lq = read_image(inputs[name]) if name in inputs else None
        for label, image, path in (("restored", pred, pred_path), ("input", lq, inputs.get(name))):
            if image is not None and image.shape != gt.shape:
                raise DataError(
                    f"The {label} image {path} is {image.shape[2]}x{image.shape[1]} but its ground truth {gt_path} is "
                    f"{gt.shape[2]}x{gt.shape[1]}; pairs must have the same size."
                )
        yield EvalItem(name, gt, lq=lq, pred=pred)


def dataset_items(dataset: torch.utils.data.Dataset) -> Iterator[EvalItem]:
    """Items of a validation dataset (dicts with ``lq``, ``gt``, ``name``), to be restored by a model."""
    for i in range(len(dataset)):
        item = dataset[i]
        yield EvalItem(item["name"], item["gt"], lq=item["lq"])


# ------------------------------------------------------------------------------------------------------------
# Scoring


def _batches(items: Iterable[EvalItem], batch_size: int) -> Iterator[list[EvalItem]]:
    """Group same-size items into batches of at most ``batch_size``, keeping memory bounded."""
    buckets: dict[tuple[int, ...], list[EvalItem]] = {}
    for item in items:
        bucket = buckets.setdefault(tuple(item.gt.shape), [])
        bucket.append(item)
        if len(bucket) == batch_size:
            yield buckets.pop(tuple(item.gt.shape))
    yield from buckets.values()


def score(
    items: Iterable[EvalItem],
    metrics: str,
    *,
    restore: Restore | None = None,
    batch_size: int = 4,
    save_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    progress: bool = True,
    total: int | None = None,
    **suite_options: Any,
) -> EvalResult:
    """Score every item; restore ``lq`` with ``restore`` where there is no ``pred``.

    Args:
        items: the pairs (see :func:`folder_items`, :func:`dataset_items`).
        metrics: comma-separated names, e.g. ``"psnr,ssim,ms-ssim,lpips,rfid"``.
        restore: the model, as a function of a (B, 3, H, W) batch in [0, 1].
        batch_size: images per batch (same-size images only).
        save_dir: write each restored image there as ``<name>.png``.
        report_dir: write ``comparison.png`` there (input | restored | ground truth, best and worst images).
        progress: show a progress bar.
        total: number of items, for the progress bar.
        **suite_options: passed to :class:`~nafrestore.metrics.MetricSuite` (y_channel, crop_border, quantize,
            lpips_net, fid_patch, weights_dir, allow_unverified_weights, allow_fewer_scales, device).

    Raises:
        DataError: no items, or a restored image of another size than its ground truth.
    """
    from tqdm import tqdm

    from .metrics import MetricSuite

    suite = MetricSuite(metrics, **suite_options)
    # The input row needs its own accumulators; LPIPS and Inception are cached per device, so not built twice.
    input_suite: MetricSuite | None = None
    rows: list[dict[str, Any]] = []
    extremes = _Extremes(suite.image_names[0] if suite.image_names else None)
    bar = tqdm(total=total, unit="img", disable=not progress, desc="eval")
    for batch in _batches(items, batch_size):
        gt = torch.stack([it.gt for it in batch])
        lq = torch.stack([it.lq for it in batch]) if all(it.lq is not None for it in batch) else None
        if all(it.pred is not None for it in batch):
            pred = torch.stack([it.pred for it in batch])
        elif restore is not None and lq is not None:
            pred = restore(lq).float().clamp(0, 1).cpu()
        else:
            raise DataError(f"No restored image for {batch[0].name}: give restored images or a model.")
        if pred.shape != gt.shape:
            raise DataError(
                f"The restored {batch[0].name} has shape {tuple(pred.shape[1:])}, not {tuple(gt.shape[1:])}."
            )
        values = suite.update(pred, gt)
        input_values: list[dict[str, float]] = [{} for _ in batch]
        if lq is not None:
            input_suite = input_suite or MetricSuite(metrics, **suite_options)
            input_values = input_suite.update(lq, gt)
        for i, item in enumerate(batch):
            rows.append({"name": item.name, **values[i], **{f"input_{k}": v for k, v in input_values[i].items()}})
            extremes.offer(values[i], item.name, lq[i] if lq is not None else None, pred[i], gt[i])
            if save_dir is not None:
                from .data import save_image

                save_image(Path(save_dir) / f"{item.name}.png", pred[i])
        bar.update(len(batch))
    bar.close()
    if not rows:
        raise DataError("Nothing to evaluate: the image source is empty.")
    summary = suite.compute()
    input_summary = input_suite.compute() if input_suite is not None else None
    if report_dir is not None:
        extremes.draw(Path(report_dir) / "comparison.png")
    rows.sort(key=lambda r: r["name"])
    return EvalResult(
        summary={k: summary[k] for k in _scalar_keys(summary)},
        input_summary={k: input_summary[k] for k in _scalar_keys(input_summary)} if input_summary else None,
        n_images=summary["n_images"],
        images=rows,
        settings={**summary["settings"], "metrics": suite.names, **_extra_settings(summary)},
        notes=summary["notes"],
    )


def _scalar_keys(summary: dict[str, Any]) -> list[str]:
    from .metrics import METRIC_INFO

    return [k for k in summary if k in METRIC_INFO or k == "kid_std"]


def _extra_settings(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary[k] for k in ("fid_samples", "ms_ssim_scales", "n_inf") if k in summary}


class _Extremes:
    """Keeps crops of the best and worst image by one metric, for the comparison figure."""

    def __init__(self, metric: str | None, crop: int = 192) -> None:
        self.metric, self.crop = metric, crop
        self.best: tuple[float, str, list[np.ndarray]] | None = None
        self.worst: tuple[float, str, list[np.ndarray]] | None = None

    def _crops(self, *images: torch.Tensor | None) -> list[np.ndarray]:
        out = []
        for image in images:
            if image is None:
                continue
            _, h, w = image.shape
            c = min(self.crop, h, w)
            top, left = (h - c) // 2, (w - c) // 2
            out.append(image[:, top : top + c, left : left + c].permute(1, 2, 0).clamp(0, 1).numpy())
        return out

    def offer(self, values: dict[str, float], name: str, *images: torch.Tensor | None) -> None:
        if self.metric is None or not math.isfinite(values[self.metric]):
            return
        v = values[self.metric]
        sign = 1 if self.metric != "lpips" else -1  # lower LPIPS is better
        if self.best is None or sign * v > sign * self.best[0]:
            self.best = (v, name, self._crops(*images))
        if self.worst is None or sign * v < sign * self.worst[0]:
            self.worst = (v, name, self._crops(*images))

    def draw(self, path: Path) -> None:
        if self.best is None or self.worst is None:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = len(self.best[2])
        titles = ["input", "restored", "ground truth"][-columns:]
        fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.8), squeeze=False)
        for row, (label, (value, name, crops)) in enumerate((("best", self.best), ("worst", self.worst))):
            for col, crop in enumerate(crops):
                axes[row][col].imshow(crop)
                axes[row][col].set_axis_off()
                axes[row][col].set_title(
                    f"{titles[col]}" + (f"\n{label}: {name} ({self.metric} {value:.2f})" if col == 0 else ""),
                    fontsize=9,
                )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=100)
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------------
# Output


def write_json(result: EvalResult, path: str | Path) -> None:
    """The documented JSON (infinite PSNR written as the string "inf", since JSON has no infinity)."""
    data = json_safe(result.to_json())
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("inf", "-inf", "nan"), which JSON cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_csv(result: EvalResult, path: str | Path) -> None:
    """One row per image: name, each metric, and each metric of the degraded input (``input_<metric>``)."""
    columns = ["name", *[k for k in result.images[0] if k != "name"]]

    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.images)


def format_table(result: EvalResult) -> str:
    """A plain-text table: one row for the restored images, one for the input, one column per metric, and N."""
    names = list(result.summary)
    header = ["", *names, "N"]
    rows = [["restored", *[_fmt(result.summary[n]) for n in names], str(result.n_images)]]
    if result.input_summary:
        rows.append(["input", *[_fmt(result.input_summary.get(n, float("nan"))) for n in names], str(result.n_images)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


# ------------------------------------------------------------------------------------------------------------
# Evaluating a model


def resolve_model_source(source: str | Path, ckpt: str = "best") -> tuple[Path, Path]:
    """The config and checkpoint to evaluate from a run directory or a config file.

    Args:
        source: a run directory (holding ``config.yaml`` and ``checkpoints/``) or a YAML config.
        ckpt: ``best``, ``last`` or a checkpoint path. With a YAML config, ``best``/``last`` look in the run
            directory the config names (``run.dir``, default ``runs/<name>``).

    Returns:
        (config path, checkpoint path).

    Raises:
        DataError: the source or the checkpoint does not exist.
    """
    from .config import load_config

    source = Path(source)
    if source.is_dir():
        config_path, run_dir = source / "config.yaml", source
        if not config_path.is_file():
            raise DataError(
                f"{source} is not a run directory: it has no config.yaml. Give a run directory or a config."
            )
    elif source.is_file():
        config_path, run_dir = source, load_config(source).run_dir
    else:
        raise DataError(f"{source} does not exist. Give a run directory (runs/NAME) or a YAML config.")
    path = run_dir / "checkpoints" / f"{ckpt}.pt" if ckpt in ("best", "last") else Path(ckpt)
    if not path.is_file():
        raise DataError(
            f"Checkpoint {path} does not exist. Train first (nafrestore train {config_path}) or pass --ckpt PATH."
        )
    return config_path, path


def model_items(config_path: Path, data: str = "val", seed: int | None = None) -> torch.utils.data.Dataset:
    """The dataset a model is evaluated on: the config's validation set, or a folder of clean images.

    A folder is degraded with the config's ``data.degradations``, fixed per image by its name and the seed, so
    numbers are comparable run to run.
    """
    from .config import load_config
    from .data import SyntheticDataset, build_datasets, folder_images

    cfg = load_config(config_path)
    seed = cfg.run.seed if seed is None else seed
    if data == "val":
        return build_datasets(cfg.data, seed=seed)[1]
    paths, names = folder_images(data, "--data")  # `val` or a folder of clean images
    return SyntheticDataset(paths, cfg.data.degradations, names=names, seed=seed)


def model_restore(model: torch.nn.Module, *, tile: int | None = None, overlap: int = 32) -> Restore:
    """A batch restore function for :func:`score` from an inference model (see ``nafrestore.load_model``)."""
    from .inference.tiling import forward, restore_tiled

    device = next(model.parameters()).device

    def run(lq: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if tile is not None:
                return torch.stack([restore_tiled(model, x, tile=tile, overlap=overlap) for x in lq])
            return forward(model, lq.to(device)).cpu()

    return run
