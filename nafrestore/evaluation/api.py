"""``nafrestore eval``'s one function, :func:`evaluate`: a folder of restored images, several of them (see
:mod:`.compare`), or a model on a dataset, scored by :func:`~nafrestore.evaluation.scoring.score`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import NafrestoreError
from ..inference.api import model_from_spec
from ..metrics import MetricSuite
from ..report.images import ReportImages
from ..report.results import Comparison, EvalResult
from ..utils.device import resolve_device
from .compare import compare, model_labels
from .scoring import score
from .sources import dataset_items, folder_items, model_items, model_restore, model_under_test

__all__ = ["evaluate"]


def evaluate(
    source: str | Path | None = None,
    *,
    pred: str | Path | Sequence[str | Path] | Mapping[str, str | Path] | None = None,
    gt: str | Path | None = None,
    lq: str | Path | None = None,
    ckpt: str = "best",
    model: str | Path | None = None,
    data: str = "val",
    metrics: str = "psnr,ssim",
    device: str = "auto",
    batch_size: int = 4,
    tile: int | None = None,
    overlap: int = 32,
    save_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    progress: bool = True,
    **suite_options: Any,
) -> EvalResult | Comparison:
    """``nafrestore eval``: score a folder of restored images, or a model on a dataset.

    Args:
        source: the model (see :func:`model_under_test`); or None with ``pred`` and ``gt``, or with ``model``.
        model: a pretrained model's name, or a config with ``ckpt`` as its weights (see :func:`model_under_test`).
        pred, gt, lq: folders of restored, ground-truth and (optional) degraded images, matched by name. Several
            ``pred`` folders (a list, ``NAME=FOLDER`` strings, or a mapping of labels to folders) compare several
            models on the same images: the result is then a :class:`Comparison`.
        ckpt, data: which checkpoint, and ``val`` or a folder of clean images (see :func:`model_items`).
        metrics: comma-separated names, e.g. ``"psnr,ssim,ms-ssim,lpips,rfid"``.
        device: where the model and the metric networks run.
        batch_size, tile, overlap: how the model runs (same-size batches; tiles of ``tile`` pixels).
        save_dir, progress: see :func:`score`.
        report_dir: write the images of the HTML report there while scoring
            (:func:`~nafrestore.report.write_eval_report` then writes the page into the same folder).
        **suite_options: :class:`~nafrestore.metrics.MetricSuite` options (y_channel, crop_border, quantize,
            lpips_net, fid_patch, weights_dir, allow_fewer_scales).

    Raises:
        NafrestoreError: a bad combination of sources, or anything the sources raise.
    """
    if source is not None and model is not None:
        raise NafrestoreError("Give the model to evaluate as a run directory / config or with --model, not both.")
    has_model = source is not None or model is not None
    if (pred is None) != (gt is None) or (pred is None) != has_model:
        raise NafrestoreError(
            "Give either a run directory / config or --model NAME to evaluate a model, or --pred DIR --gt DIR."
        )
    if pred is not None:
        labelled = model_labels(pred)
        if len(labelled) > 1:
            return compare(labelled, gt, lq, metrics=metrics, device=device, batch_size=batch_size,  # type: ignore[arg-type]
                           report_dir=report_dir, progress=progress, **suite_options)  # fmt: skip
        ((label, pred),) = labelled.items()
    dev = resolve_device(device)
    suite = MetricSuite(metrics, device=dev, **suite_options)
    input_suite = MetricSuite(metrics, device=dev, **suite_options)  # LPIPS and Inception are cached per device
    images = ReportImages(report_dir) if report_dir is not None else None
    if pred is not None:
        items, restore, total = folder_items(pred, gt, lq), None, None  # type: ignore[arg-type]
        origin = {"label": label, "pred": pred, "gt": gt, "lq": lq}
    else:
        spec, cfg = model_under_test(source, ckpt, model)
        dataset = model_items(cfg, data)
        restore = model_restore(model_from_spec(spec, device=dev), tile=tile, overlap=overlap)
        items, total = dataset_items(dataset), len(dataset)
        run_dir = Path(cfg.run_dir) if source is not None else None
        origin = {"model": model or source, "checkpoint": spec.source, "data": data,
                  "run_dir": run_dir if run_dir is not None and run_dir.is_dir() else None}  # fmt: skip
    result = score(items, suite, restore=restore, input_suite=input_suite, batch_size=batch_size, save_dir=save_dir,
                   progress=progress, total=total, report_images=images)  # fmt: skip
    result.origin = {k: str(v) if isinstance(v, Path) else v for k, v in origin.items() if v is not None}
    return result
