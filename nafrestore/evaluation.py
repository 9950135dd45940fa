"""Scoring restored images against ground truth: the one loop behind ``nafrestore eval`` and training validation.

Sources of pairs: two folders of images (restored and ground truth, optionally the degraded input), a model
restoring a dataset (the configured validation set, or a folder of clean images degraded by the config's synthetic
pipeline, fixed per image by its name), or the validation loader during training. :func:`score` scores every pair
with a :class:`~nafrestore.metrics.MetricSuite`, and the degraded input too (the ``input`` row, per-image keys
``input_<metric>``) so the gain is visible. Same-size images are batched together. Under ``torchrun`` each process
scores its share and the rows are merged by name.

The result is an :class:`EvalResult` (several models on the same images: a :class:`Comparison`), written as a
table, JSON, a per-image CSV and an HTML report (:mod:`nafrestore.report`) whose images :func:`score` writes as it
goes.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import CheckpointError, DataError, NafrestoreError
from .utils.files import atomic_write

if TYPE_CHECKING:
    from .config import Config
    from .loading import ModelSpec
    from .metrics import MetricSuite
    from .report.images import ReportImages

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
    extremes: Any = field(default=None, repr=False, compare=False)  # crops of the best and worst image, for the report
    # The images written for the HTML report while scoring (their paths are in each row's "files"), and where the
    # images came from (pred, gt, lq, model, checkpoint, data, run_dir, label), for the report.
    report_images: ReportImages | None = field(default=None, repr=False, compare=False)
    origin: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "input_summary": self.input_summary,
            "n_images": self.n_images,
            "images": self.images,
            "settings": self.settings,
            "notes": self.notes,
        }


@dataclass
class Comparison:
    """Several models scored on the same images (``eval`` with two or more ``--pred``): one result per model, by
    label, in the order given. The degraded input is scored once; every model's rows carry its values."""

    models: dict[str, EvalResult]

    @property
    def first(self) -> EvalResult:
        return next(iter(self.models.values()))

    def to_json(self) -> dict[str, Any]:
        """``{"models": {label: {"pred", <one model's JSON>}}, "input_summary", "n_images", "settings", "notes"}``."""
        first = self.first
        return {
            "models": {label: {"pred": r.origin.get("pred"), **r.to_json()} for label, r in self.models.items()},
            "input_summary": first.input_summary,
            "n_images": first.n_images,
            "settings": first.settings,
            "notes": first.notes,
        }


# ------------------------------------------------------------------------------------------------------------
# Sources of pairs


def folder_items(pred_dir: str | Path, gt_dir: str | Path, lq_dir: str | Path | None = None) -> Iterator[EvalItem]:
    """Pairs of restored and ground-truth images matched by relative path and stem (and the input, if given).

    Single-channel files stay single-channel when the restored and ground-truth files both are: BasicSR scores a
    2-D image as it is (its Y channel of a gray image is the image), so ``--y-channel`` on gray files agrees with
    its published numbers. A gray file paired with a colour one is compared as three equal channels.

    Raises:
        DataError: unmatched names, or a pair of different sizes (naming it).
    """
    from .data import load_image, match_pairs

    pairs = match_pairs(pred_dir, gt_dir, roles=("restored (--pred)", "ground-truth (--gt)"))
    inputs = {}
    if lq_dir is not None:
        inputs = {
            name: lq for name, lq, _ in match_pairs(lq_dir, gt_dir, roles=("input (--lq)", "ground-truth (--gt)"))
        }
    for name, pred_path, gt_path in pairs:
        pred, gt = load_image(pred_path), load_image(gt_path)
        lq = load_image(inputs[name]) if name in inputs else None
        for label, image, path in (("restored", pred, pred_path), ("input", lq, inputs.get(name))):
            if image is not None and image.rgb.shape != gt.rgb.shape:
                raise DataError(
                    f"The {label} image {path} is {image.rgb.shape[1]}x{image.rgb.shape[0]} but its ground truth "
                    f"{gt_path} is {gt.rgb.shape[1]}x{gt.rgb.shape[0]}; pairs must have the same size."
                )
        gray = all(image.channels in (1, 2) for image in (pred, gt))
        pred_t, gt_t, lq_t = (None if im is None else _scored_tensor(im.rgb, gray) for im in (pred, gt, lq))
        yield EvalItem(name, gt_t, lq=lq_t, pred=pred_t)  # type: ignore[arg-type]


def _scored_tensor(rgb: np.ndarray, gray: bool) -> torch.Tensor:
    """(H, W, 3) float [0, 1] -> (3, H, W), or (1, H, W) for gray files (whose three channels are equal)."""
    chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return chw[:1].clone() if gray else chw


def dataset_items(dataset: torch.utils.data.Dataset) -> Iterator[EvalItem]:
    """Items of a validation dataset (dicts with ``lq``, ``gt``, ``name``), to be restored by a model."""
    for i in range(len(dataset)):
        item = dataset[i]
        yield EvalItem(item["name"], item["gt"], lq=item["lq"])


def loader_items(loader: Iterable[dict[str, Any]]) -> Iterator[EvalItem]:
    """Items of a validation loader's batches ``{"lq", "gt": (B, 3, H, W), "name": [str] * B}``."""
    for batch in loader:
        names = batch["name"]
        for i, name in enumerate([names] if isinstance(names, str) else names):
            yield EvalItem(str(name), batch["gt"][i], lq=batch["lq"][i])


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
    from tqdm import tqdm

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
        from .data import save_image

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
    from .utils.distributed import all_gather_objects

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
    from .metrics import mean_finite
    from .utils.distributed import get_world_size

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
        from .metrics import METRIC_INFO

        v = values[self.metric]
        sign = 1 if METRIC_INFO[self.metric].higher_is_better else -1
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


# ------------------------------------------------------------------------------------------------------------
# Output


def write_report(result: EvalResult | Comparison, folder: str | Path, *, title: str | None = None) -> Path:
    """The HTML report in ``folder``: ``report.html`` (self-contained, opens from the disk), ``report.json`` (its
    data, for ``nafrestore report``), ``comparison.png`` (input | restored | ground truth crops of the best and
    worst image) and the images :func:`score` wrote there (copied from where it wrote them if that was elsewhere).

    Returns:
        The path of ``report.html``.

    Raises:
        OutputError: a file cannot be written (also one that failed while scoring, raised here so that the scores
            are printed first).
    """
    from .report import write_eval_report

    path = write_eval_report(result, folder, title=title)
    first = result.first if isinstance(result, Comparison) else result
    if first.extremes is not None:
        first.extremes.draw(Path(folder) / "comparison.png")
    return path


def write_json(result: EvalResult | Comparison, path: str | Path) -> None:
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


def write_csv(result: EvalResult | Comparison, path: str | Path) -> None:
    """One row per image: name, each metric, and each metric of the degraded input (``input_<metric>``); for
    several models, one row per model and image, with the model's label first (``model``)."""
    if isinstance(result, Comparison):
        rows = [{"model": label, **row} for label, r in result.models.items() for row in r.images]
    else:
        rows = result.images
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "files"))  # the report's paths: not here

    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def format_table(result: EvalResult | Comparison) -> str:
    """A plain-text table: one row for the restored images (one per model), one for the input, one column per
    metric, and N."""
    models = result.models if isinstance(result, Comparison) else {"restored": result}
    first = next(iter(models.values()))
    names = list(first.summary)
    header = ["", *names, "N"]
    rows = [[label, *[_fmt(r.summary[n]) for n in names], str(r.n_images)] for label, r in models.items()]
    result = first
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


def model_restore(
    model: torch.nn.Module, *, tile: int | None = None, overlap: int = 32, precision: str = "fp32"
) -> Restore:
    """A batch restore function for :func:`score` (see :func:`~nafrestore.inference.tiling.restore_batch`).

    Whole images unless ``tile`` is given: automatic tiling is off, so scores never depend on the machine's memory.
    """
    from .inference.tiling import restore_batch

    def run(lq: torch.Tensor) -> torch.Tensor:
        return restore_batch(model, lq, tile=tile, overlap=overlap, precision=precision, max_megapixels=math.inf)

    return run


def model_under_test(
    source: str | Path | None, ckpt: str = "best", model: str | Path | None = None
) -> tuple[ModelSpec, Config]:
    """The network to evaluate and the config whose data it is evaluated on.

    Args:
        source: a YAML config or preset (its ``run.dir`` holds the checkpoints), a run directory (its
            ``config.yaml``) or a checkpoint file (its stored config); None with ``model``.
        ckpt: ``best``, ``last`` or a checkpoint path (with a config: any weights of that architecture).
        model: instead of ``source``, a model as ``infer --model`` takes it: a pretrained model's name (evaluated on
            its preset's data settings), or a config with ``ckpt`` as the weights.

    Raises:
        CheckpointError, ConfigError: nothing to evaluate there, naming what was looked for.
    """
    from .config import config_from_dict, load_config
    from .loading import find_checkpoint, find_config, load_spec, registry_name, resolve_source

    named = ckpt in ("best", "last")
    if model is not None:
        spec = load_spec(*resolve_source(None if named else ckpt, model))
        if not spec.config:
            raise CheckpointError(
                f"{spec.source} holds no training config, so there is no data setting to evaluate it with. Give "
                f"its config too: nafrestore eval --model CONFIG.yaml --ckpt WEIGHTS, or restore images and use "
                f"--pred/--gt."
            )
        return spec, config_from_dict(spec.config, source=f"{spec.source} (config)")
    if source is None:
        raise NafrestoreError("Give a run directory or config to evaluate, or --model NAME.")
    config_path = find_config(source)
    if config_path is not None:
        cfg = load_config(config_path)
        try:
            weights = find_checkpoint(cfg.run_dir, prefer=ckpt, fallback=False) if named else Path(ckpt)
        except CheckpointError as exc:
            if registry_name(source) is None:
                raise
            raise CheckpointError(  # a preset that is also a pretrained model's name: which one was meant?
                f"{exc} (To evaluate the pretrained model {source} instead of a run of the preset, use "
                f"nafrestore eval --model {source} --data FOLDER_OR_val.)"
            ) from None
        return load_spec(config_path, weights), cfg
    path = find_checkpoint(source, prefer=ckpt, fallback=False) if named else Path(ckpt)
    spec = load_spec(path)
    run_config = Path(source) / "config.yaml"
    if run_config.is_file():
        return spec, load_config(run_config)
    if not spec.config:
        raise CheckpointError(
            f"{path} holds no training config, so there is no dataset to evaluate on. Evaluate it with its config: "
            f"nafrestore eval CONFIG.yaml --ckpt {path}, or restore images and use --pred/--gt."
        )
    return spec, config_from_dict(spec.config, source=f"{path} (stored config)")


def model_items(cfg: Config, data: str = "val", seed: int | None = None) -> torch.utils.data.Dataset:
    """The dataset a model is evaluated on: the config's validation set, or a folder of clean images.

    A folder is degraded with the config's ``data.degradations``, fixed per image by its name and the seed, so
    numbers are comparable run to run.
    """
    from .data import SyntheticDataset, build_val_dataset, folder_images

    seed = cfg.run.seed if seed is None else seed
    if data == "val":
        return build_val_dataset(cfg.data, seed=seed)
    paths, names = folder_images(data, "--data")  # `val` or a folder of clean images
    return SyntheticDataset(paths, cfg.data.degradations, names=names, seed=seed)


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
        report_dir: write the images of the HTML report there while scoring (:func:`write_report` then writes the
            page into the same folder).
        **suite_options: :class:`~nafrestore.metrics.MetricSuite` options (y_channel, crop_border, quantize,
            lpips_net, fid_patch, weights_dir, allow_fewer_scales).

    Raises:
        NafrestoreError: a bad combination of sources, or anything the sources raise.
    """
    from .metrics import MetricSuite
    from .utils.device import resolve_device

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
    images = _report_images(report_dir)
    if pred is not None:
        items, restore, total = folder_items(pred, gt, lq), None, None  # type: ignore[arg-type]
        origin = {"label": label, "pred": pred, "gt": gt, "lq": lq}
    else:
        from .inference.api import model_from_spec

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


def _report_images(report_dir: str | Path | None, view: str = "restored") -> ReportImages | None:
    if report_dir is None:
        return None
    from .report.images import ReportImages

    return ReportImages(report_dir, view)


def model_labels(
    pred: str | Path | Sequence[str | Path] | Mapping[str, str | Path],
) -> dict[str, Path]:
    """The restored-image folders by label: ``NAME=FOLDER`` gives its name, a plain folder its own name (with its
    parent's where two folders have the same name); one plain folder is ``restored``.

    Raises:
        NafrestoreError: two folders with the same label.
    """
    if isinstance(pred, Mapping):
        return {str(k): Path(v) for k, v in pred.items()}
    entries = [pred] if isinstance(pred, str | Path) else list(pred)
    named: list[tuple[str | None, Path]] = []
    for entry in entries:
        text = str(entry)
        name, sep, folder = text.partition("=")
        if sep and name and folder and not Path(text).exists():
            named.append((name, Path(folder)))
        else:
            named.append((None, Path(text)))
    if len(named) == 1:
        return {named[0][0] or "restored": named[0][1]}
    plain = [p.resolve().name for _, p in named]
    out: dict[str, Path] = {}
    for (name, folder), base in zip(named, plain, strict=True):
        label = name or (base if plain.count(base) == 1 else f"{folder.resolve().parent.name}/{base}")
        if label in out:
            raise NafrestoreError(
                f"Two --pred folders are both called {label!r} ({out[label]} and {folder}). Name them: "
                f"--pred NAME=FOLDER."
            )
        out[label] = folder
    return out


def compare(
    preds: Mapping[str, str | Path],
    gt: str | Path,
    lq: str | Path | None = None,
    *,
    metrics: str = "psnr,ssim",
    device: str = "auto",
    batch_size: int = 4,
    report_dir: str | Path | None = None,
    progress: bool = True,
    **suite_options: Any,
) -> Comparison:
    """Score several folders of restored images (one per model, by label) against the same ground truth.

    Every folder is paired with ``gt`` before anything is scored, so a missing image costs no scoring time. The
    input (``lq``) is scored once; its images, and the ground truth, are written to the report once.

    Raises:
        DataError: a folder whose images do not pair with the ground truth (naming it).
    """
    from .data import match_pairs
    from .metrics import MetricSuite
    from .report.page import view_keys
    from .utils.device import resolve_device

    for label, folder in preds.items():
        try:
            match_pairs(folder, gt, roles=("restored (--pred)", "ground-truth (--gt)"))
        except DataError as exc:
            raise DataError(f"The restored images of {label} (--pred {folder}) do not pair with --gt: {exc}") from None
    dev = resolve_device(device)
    suite = MetricSuite(metrics, device=dev, **suite_options)
    input_suite = MetricSuite(metrics, device=dev, **suite_options) if lq is not None else None
    images = _report_images(report_dir)
    results: dict[str, EvalResult] = {}
    for (label, folder), key in zip(preds.items(), view_keys(list(preds)), strict=True):
        result = score(folder_items(folder, gt, lq), suite, input_suite=None if results else input_suite,
                       batch_size=batch_size, progress=progress, desc=label,
                       report_images=images.for_view(key) if images is not None else None)  # fmt: skip
        result.origin = {k: str(v) for k, v in (("label", label), ("pred", folder), ("gt", gt), ("lq", lq)) if v}
        results[label] = result
    _share_input_row(list(results.values()))
    return Comparison(results)


def _share_input_row(results: list[EvalResult]) -> None:
    """Give every model the input's values, scored with the first one (its row, and ``input_<metric>`` per image)."""
    first = results[0]
    inputs = {row["name"]: {k: v for k, v in row.items() if k.startswith("input_")} for row in first.images}
    for result in results[1:]:
        result.input_summary = first.input_summary
        for n, row in enumerate(result.images):
            files = {"files": row["files"]} if "files" in row else {}
            rest = {k: v for k, v in row.items() if k != "files"}
            result.images[n] = {**rest, **inputs.get(row["name"], {}), **files}
