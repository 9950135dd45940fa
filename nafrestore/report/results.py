"""What ``eval`` measured: :class:`EvalResult` (one model, or restored folder) and :class:`Comparison` (several on
the same images), with their JSON form.

:func:`nafrestore.evaluation.score` makes them; the HTML report (:func:`nafrestore.report.write_eval_report`) and
:mod:`nafrestore.evaluation.output` (table, JSON, CSV) read them. They live in the report package, which evaluation
imports anyway (it writes the report's images while scoring), so that the report reads them without importing
evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .images import ReportImages

__all__ = ["Comparison", "EvalResult", "json_safe"]


@dataclass
class EvalResult:
    """What ``eval`` measured; :meth:`to_json` gives the documented JSON layout."""

    summary: dict[str, float]
    input_summary: dict[str, float] | None
    n_images: int
    images: list[dict[str, Any]]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    # Crops of the best and worst image (kept while scoring), drawn by the report into comparison.png (draw(path)).
    extremes: Any = field(default=None, repr=False, compare=False)
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


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("inf", "-inf", "nan"), which JSON cannot hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
