"""An eval result as a plain-text table, the documented JSON and a per-image CSV (the HTML report is
:func:`nafrestore.report.write_eval_report`'s)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..report.results import Comparison, EvalResult, json_safe
from ..utils.files import atomic_write

__all__ = ["format_table", "write_csv", "write_json"]


def write_json(result: EvalResult | Comparison, path: str | Path) -> None:
    """The documented JSON (infinite PSNR written as the string "inf", since JSON has no infinity)."""
    data = json_safe(result.to_json())
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


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
