"""The one scoring loop, :func:`score`, behind ``nafrestore eval`` and training validation.

It scores every pair with a :class:`~nafrestore.metrics.MetricSuite`, and the degraded input too (the ``input``
row, per-image keys ``input_<metric>``) so the gain is visible. Same-size images are batched together. Under
``torchrun`` each process scores its share and the rows are merged by name. As it goes it writes the restored
images where asked and the HTML report's images (:class:`~nafrestore.report.images.ReportImages`), and keeps crops
of the best and worst image for the report's ``comparison.png``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..data import save_image
from ..errors import DataError
from ..metrics import METRIC_INFO, MetricSuite, mean_finite
from ..report.images import ReportImages
from ..report.results import EvalResult
from ..utils.distributed import all_gather_objects, get_world_size
from ..utils.files import atomic_write
from .sources import EvalItem, Restore

__all__ = ["score"]


def _batches(items: Iterable[EvalItem], batch_size: int) -> Iterator[list[EvalItem]]:
    """Group same-size items into batches of at most ``batch_size``, keeping memory bounded."""
    buckets: dict[tuple[int, ...], list[EvalItem]] = {}
    for item in items:
        bucket = buckets.setdefault(tuple(item.gt.shape), [])
        bucket.append(item)
        if len(bucket) == batch_size:
            yield buckets.pop(tuple(item.gt.shape))
    yield from buckets.values()


def _restored(batch: list[EvalItem], lq: torch.Tensor | None, restore: Restore | None) -> torch.Tensor:
    """The batch's restored images: given with the items, or ``restore(lq)``; clamped float32 on the CPU."""
    if all(it.pred is not None for it in batch):
        return torch.stack([it.pred for it in batch])  # type: ignore[misc]
    if restore is None or lq is None:
        raise DataError(f"No restored image for {batch[0].name}: give restored images or a model.")
    pred = restore(lq).float().clamp(0, 1).cpu()
    if pred.shape[1:] != batch[0].gt.shape:
        raise DataError(
            f"The restored {batch[0].name} has shape {tuple(pred.shape[1:])}, not {tuple(batch[0].gt.shape)}."
        )
    return pred


def score(
    items: Iterable[EvalItem],
    suite: MetricSuite,
    *,
    restore: Restore | None = None,
    input_suite: MetricSuite | None = None,
    batch_size: int = 1,
    save_dir: str | Path | None = None,
    progress: bool = False,
    total: int | None = None,
    report_images: ReportImages | None = None,
    desc: str = "eval",
) -> EvalResult:
    """Score every item; restore ``lq`` with ``restore`` where there is no ``pred``.

    Args:
        items: the pairs (see :func:`folder_items`, :func:`dataset_items`, :func:`loader_items`).
        suite: the metrics (reset here, so one suite serves many calls without reloading LPIPS or Inception).
        restore: the model, as a function of a (B, 3, H, W) batch in [0, 1] (see :func:`model_restore`).
        input_suite: scores the degraded inputs too (the ``input`` row), when the items have them; None: not.
        batch_size: images per batch (same-size images only).
        save_dir: write each restored image there as ``<name>.png``.
        progress: show a progress bar.
        total: number of items, for the progress bar.
        report_images: write each image's views (input, restored, ground truth) for the HTML report as it is
            scored (full size, preview, thumbnail; see :class:`~nafrestore.report.images.ReportImages`) and record
            their paths, relative to the report folder, in its row (``"files"``).
        desc: the progress bar's label.

    Raises:
        DataError: no items, or a restored image of another size than its ground truth.
    """
    for s in (suite, input_suite):
        if s is not None:
            s.reset()
    rows: list[dict[str, Any]] = []
    extremes = _Extremes(suite.image_names[0] if suite.image_names else None)
    with tqdm(total=total, unit="img", disable=not progress, desc=desc) as bar:
        for batch in _batches(items, batch_size):
            gt = torch.stack([it.gt for it in batch])
            lq = torch.stack([it.lq for it in batch]) if all(it.lq is not None for it in batch) else None
            pred = _restored(batch, lq, restore)
            values = suite.update(pred, gt)
            scored_input = input_suite is not None and lq is not None
            input_values = input_suite.update(lq, gt) if scored_input else [{} for _ in batch]  # type: ignore[union-attr]
            for i, item in enumerate(batch):
                row = {"name": item.name, **values[i], **{f"input_{k}": v for k, v in input_values[i].items()}}
                item_lq = lq[i] if lq is not None else None
                extremes.offer(values[i], item.name, item_lq, pred[i], gt[i])
                _keep_images(row, pred[i], gt[i], item_lq, save_dir, report_images)
                rows.append(row)
            bar.update(len(batch))
    rows = _merge_processes(rows)
    if not rows:
        raise DataError("Nothing to evaluate: the image source is empty.")
    computed = suite.compute() if suite.n_images else None
    input_computed = input_suite.compute() if input_suite is not None and input_suite.n_images else None
    has_input = input_computed is not None or any(key.startswith("input_") for key in rows[0])
    return EvalResult(
        summary=_summary(rows, suite, computed, ""),
        input_summary=_summary(rows, input_suite, input_computed, "input_") if has_input else None,  # type: ignore[arg-type]
        n_images=len(rows),
        images=rows,
        settings={**(computed or {}).get("settings", {}), "metrics": suite.names, **_extra_settings(computed or {})},
        notes=(computed or {}).get("notes", []),
        extremes=extremes,
        report_images=report_images,
    )


def _keep_images(
    row: dict[str, Any],
    pred: torch.Tensor,
    gt: torch.Tensor,
    lq: torch.Tensor | None,
    save_dir: str | Path | None,
    report_images: ReportImages | None,
) -> None:
    """Write one scored image where it is asked for: the restored image into ``save_dir``, its views into the
    report (their files recorded in ``row``)."""
    if save_dir is not None:
        save_image(Path(save_dir) / f"{row['name']}.png", pred)
    if report_images is not None:
        files = report_images.write(row["name"], restored=pred, gt=gt, lq=lq)
        if files:
            row["files"] = files


def _merge_processes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's rows, one per image name, sorted by name (a single process: its own rows, sorted).

    Under ``torchrun`` each image is on one process (the validation loader shards without padding); merging by
    name would also remove duplicates a padding sampler adds.
    """
    merged: dict[str, dict[str, Any]] = {}
    for part in all_gather_objects(rows):
        merged.update((row["name"], row) for row in part)
    return [merged[name] for name in sorted(merged)]


def _summary(
    rows: list[dict[str, Any]], suite: MetricSuite, computed: dict[str, Any] | None, prefix: str
) -> dict[str, float]:
    """Per-image metrics averaged over ``rows`` (all processes; infinite PSNRs left out), then the set-level ones
    (rfid, kid) from ``computed`` (this process's :meth:`MetricSuite.compute`): they need every image's features in
    one process, so they are left out under ``torchrun``."""
    out = {name: mean_finite([r[prefix + name] for r in rows])[0] for name in suite.image_names}
    if computed is not None and get_world_size() == 1:
        out.update({k: float(computed[k]) for k in (*suite.set_names, "kid_std") if k in computed})
    return out


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
            crop = image[:, top : top + c, left : left + c].permute(1, 2, 0).clamp(0, 1).numpy()
            out.append(crop[:, :, 0] if crop.shape[2] == 1 else crop)  # gray files: (c, c), shown in gray
        return out

    def offer(self, values: dict[str, float], name: str, *images: torch.Tensor | None) -> None:
        if self.metric is None or not math.isfinite(values[self.metric]):
            return
        v = values[self.metric]
        sign = 1 if METRIC_INFO[self.metric].higher_is_better else -1
        if self.best is None or sign * v > sign * self.best[0]:
            self.best = (v, name, self._crops(*images))
        if self.worst is None or sign * v < sign * self.worst[0]:
            self.worst = (v, name, self._crops(*images))

    def draw(self, path: Path) -> None:
        if self.best is None or self.worst is None:
            return
        import matplotlib  # here, not at the top: it adds ~0.5 s to `eval`'s and `train`'s start (measured)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        columns = len(self.best[2])
        titles = ["input", "restored", "ground truth"][-columns:]
        fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 6.8), squeeze=False)
        for row, (label, (value, name, crops)) in enumerate((("best", self.best), ("worst", self.worst))):
            for col, crop in enumerate(crops):
                axes[row][col].imshow(crop, cmap="gray", vmin=0.0, vmax=1.0)  # the colour map only applies to gray
                axes[row][col].set_axis_off()
                axes[row][col].set_title(
                    f"{titles[col]}" + (f"\n{label}: {name} ({self.metric} {value:.2f})" if col == 0 else ""),
                    fontsize=9,
                )
        fig.tight_layout()
        with atomic_write(path) as f:  # creates the folder; a failure is one OutputError
            fig.savefig(f, format="png", dpi=100)
        plt.close(fig)
