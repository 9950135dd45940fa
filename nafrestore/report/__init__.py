"""The HTML evaluation report: ``eval --report DIR`` and ``nafrestore report``.

A report folder holds ``report.html`` (one self-contained page: style, script and data inlined; it opens from the
disk with no network), ``report.json`` (the same data, see :mod:`nafrestore.report.page`), the images
(``images/``, ``previews/``, ``thumbs/``, one folder per view, see :mod:`nafrestore.report.images`) and
``comparison.png``. :func:`~nafrestore.evaluation.score` writes the images while it scores;
:func:`write_eval_report` writes the page and ``comparison.png`` from the result (:mod:`.results`);
:func:`build_report` writes the page again from a report folder, an ``eval --json`` file or a run directory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError, NafrestoreError
from ..utils.files import read_metrics
from .images import ReportImages
from .page import FORMAT, HTML_NAME, JSON_NAME, assemble, copy_file, logged_numbers, run_info, write_page
from .results import Comparison, EvalResult
from .schema import check_eval_json, check_report

__all__ = ["ReportImages", "build_report", "write_eval_report"]


def write_eval_report(result: EvalResult | Comparison, folder: str | Path, *, title: str | None = None) -> Path:
    """The HTML report of an ``eval`` result in ``folder``: ``report.html`` (self-contained, opens from the disk),
    ``report.json`` (its data, for ``nafrestore report``), ``comparison.png`` (input | restored | ground truth crops
    of the best and worst image) and the images :func:`~nafrestore.evaluation.score` wrote there (copied from where
    it wrote them if that was elsewhere).

    Returns:
        The path of ``report.html``.

    Raises:
        OutputError: a file cannot be written (also one that failed while scoring, raised here so that the scores
            are printed first).
    """
    folder = Path(folder)
    results = result.models if isinstance(result, Comparison) else {result.origin.get("label", "restored"): result}
    first = next(iter(results.values()))
    for r in results.values():
        if r.report_images is not None and r.report_images.error is not None:
            raise r.report_images.error
    origin = first.origin
    run_dir = origin.get("run_dir")
    sources = {"ground truth (--gt)": origin.get("gt"), "input (--lq)": origin.get("lq")}
    if isinstance(result, Comparison):
        sources = {**{f"restored: {label}": r.origin.get("pred") for label, r in results.items()}, **sources}
    else:
        sources = {"restored (--pred)": origin.get("pred"), **sources, "model": origin.get("model"),
                   "checkpoint": origin.get("checkpoint"), "data": origin.get("data")}  # fmt: skip
    data = assemble(
        [(label, r.summary, r.images) for label, r in results.items()],
        input_summary=first.input_summary,
        n_images=first.n_images,
        settings=first.settings,
        notes=first.notes,
        title=title or _title(results, origin),
        sources=sources,
        run=run_info(run_dir, folder) if run_dir else None,
        preview_side=first.report_images.preview_side if first.report_images is not None else 1024,
    )
    if first.report_images is not None:
        copy_images(data, first.report_images.folder, folder)
    elif data["images"]:
        data["notes"].append("The images were not kept while scoring (score(..., report_images=...)): no comparisons.")
    page = write_page(data, folder)
    if first.extremes is not None:
        first.extremes.draw(folder / "comparison.png")
    return page


def _title(results: Mapping[str, Any], origin: Mapping[str, Any]) -> str:
    if len(results) > 1:
        return "Comparison: " + " vs ".join(results)
    if origin.get("run_dir"):
        return f"Evaluation of run {Path(origin['run_dir']).name}"
    if origin.get("model"):
        return f"Evaluation of {Path(str(origin['model'])).name}"
    if origin.get("pred"):
        return f"Evaluation of {Path(origin['pred']).name}"
    return "Evaluation report"


def copy_images(data: Mapping[str, Any], source: str | Path, folder: str | Path) -> None:
    """Make ``folder`` hold every image file the data refers to, copying them from ``source`` where needed.

    Raises:
        DataError: a file the data refers to is missing from ``source`` (naming it).
    """
    source, folder = Path(source), Path(folder)
    same = source.resolve() == folder.resolve() if folder.exists() else False
    for image in data.get("images", []):
        for files in (image.get("files") or {}).values():
            for rel in {files.get("full"), files.get("preview"), files.get("thumb")} - {None}:
                path = source / rel
                if not path.is_file():
                    raise DataError(
                        f"The report refers to {path}, which is missing: the report folder {source} is incomplete. "
                        f"Write it again with nafrestore eval ... --report {source}."
                    )
                if not same:
                    copy_file(path, folder / rel)


# ------------------------------------------------------------------------------------------------------------
# nafrestore report


def build_report(source: str | Path, output: str | Path, *, title: str | None = None) -> Path:
    """Write a report into ``output`` from what is already on disk, scoring nothing.

    Args:
        source: a report folder or its ``report.json`` (the page is written again, the images copied when
            ``output`` is another folder); an ``eval --json`` file (the tables only: that file has no images); or a
            run directory (its config and training curves, with its report (``report/report.json``), else its
            ``eval.json``, else the scores of its last validation).
        output: the report folder to write.
        title: the page's title (default: the source's).

    Returns:
        The path of ``report.html``.

    Raises:
        NafrestoreError: the source is none of these, or its JSON cannot be read.
    """
    source, output = Path(source), Path(output)
    if source.is_dir() and (source / JSON_NAME).is_file():
        source = source / JSON_NAME
    if source.is_file():
        data, image_root = _read_scores(source)
        run = data.get("run")
    elif source.is_dir() and run_info(source) is not None:
        data, image_root = _run_scores(source)
        run = run_info(source, output)
    else:
        raise NafrestoreError(
            f"{source} is neither a report folder (with {JSON_NAME}), a report.json or eval JSON file, nor a run "
            f"directory (with config.yaml or metrics.jsonl). Give one of those, e.g. nafrestore report runs/demo "
            f"-o report/ or nafrestore report eval.json -o report/."
        )
    data["run"] = run
    if title:
        data["title"] = title
    if image_root is not None:
        copy_images(data, image_root, output)
    return write_page(data, output)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"Cannot read {path} as JSON ({exc}). Give a report.json, an eval JSON or a run.") from None


def _read_scores(path: Path) -> tuple[dict[str, Any], Path | None]:
    """The report data of a ``report.json`` (images beside it) or of an ``eval --json`` file (no images), each
    checked (:mod:`.schema`): a field of the wrong type is one message naming the file and the field."""
    raw = _load_json(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return check_report(raw, path), path.parent
    if isinstance(raw, dict) and ("models" in raw or "summary" in raw):
        return _from_eval_json(check_eval_json(raw, path), title=f"Evaluation: {path.stem}"), None
    raise DataError(
        f"{path} is not a report.json nor a JSON file written by nafrestore eval --json (no 'summary' or 'models')."
    )


def _from_eval_json(raw: Mapping[str, Any], title: str) -> dict[str, Any]:
    """Report data of an ``eval --json`` file, one model or several, without images."""
    if "models" in raw:
        models = [(label, m.get("summary") or {}, _no_files(m.get("images"))) for label, m in raw["models"].items()]
    else:
        models = [("restored", raw.get("summary") or {}, _no_files(raw.get("images")))]
    data = assemble(
        models,
        input_summary=raw.get("input_summary"),
        n_images=int(raw.get("n_images") or 0),
        settings=raw.get("settings") or {},
        notes=list(raw.get("notes") or []),
        title=title,
    )
    data["notes"].append(
        "Built from an eval JSON file, which holds no images: the per-image table has no comparisons. "
        "nafrestore eval ... --report DIR writes the images too."
    )
    return data


def _no_files(rows: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "files"} for row in rows or [] if isinstance(row, dict)]


def _run_scores(run_dir: Path) -> tuple[dict[str, Any], Path | None]:
    """A run directory's scores: its report, else its eval.json, else its last validation (no per-image scores)."""
    for candidate in (run_dir / "report" / JSON_NAME, run_dir / "eval.json"):
        if candidate.is_file():
            data, root = _read_scores(candidate)
            data["title"] = f"Run {run_dir.resolve().name}"
            return data, root
    records = [logged_numbers(r) for r in read_metrics(run_dir / "metrics.jsonl")]  # strings as scores left out
    validations = [r for r in records if any(k.startswith("val/") for k in r)]
    last = validations[-1] if validations else {}
    summary = {k[4:]: v for k, v in last.items() if k.startswith("val/") and not k.startswith("val/input_")}
    n_images = summary.pop("n_images", 0)
    n_images = int(n_images) if isinstance(n_images, int | float) and 0 <= n_images < math.inf else 0
    inputs = {k[10:]: v for k, v in last.items() if k.startswith("val/input_")}
    data = assemble(
        [("restored", summary, [])],
        input_summary=inputs or None,
        n_images=n_images,
        settings={},
        title=f"Run {run_dir.resolve().name}",
        sources={"validation at step": last.get("step")} if last else None,
    )
    scores = f"The scores of the run's last validation; per image, with images: nafrestore eval {run_dir} --report DIR."
    data["notes"].append(scores if last else "The run has no validation yet.")
    return data, None


__all__ += ["HTML_NAME", "JSON_NAME"]
