"""Several models on the same images: the ``--pred`` folders by label, scored one after the other against the same
ground truth, with the degraded input (the baseline every model is measured against) scored once and shared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data import match_pairs
from ..errors import DataError, NafrestoreError
from ..metrics import MetricSuite
from ..report.images import ReportImages
from ..report.page import view_keys
from ..report.results import Comparison, EvalResult
from ..utils.device import resolve_device
from .scoring import score
from .sources import folder_items

__all__ = ["compare", "model_labels"]


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
    for label, folder in preds.items():
        try:
            match_pairs(folder, gt, roles=("restored (--pred)", "ground-truth (--gt)"))
        except DataError as exc:
            raise DataError(f"The restored images of {label} (--pred {folder}) do not pair with --gt: {exc}") from None
    dev = resolve_device(device)
    suite = MetricSuite(metrics, device=dev, **suite_options)
    input_suite = MetricSuite(metrics, device=dev, **suite_options) if lq is not None else None
    images = ReportImages(report_dir) if report_dir is not None else None
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
