"""The report's data (``report.json``) and its HTML page (``report.html``).

The page is one self-contained file: the style sheet, the script (``report.css`` and ``report.js`` beside this
module, inlined) and the data (inlined as JSON) are in it; it refers only to the image files of its own folder, by
relative paths, and so opens from the disk without a network. Python writes the static parts (the summary table,
the settings, the run's config); the script builds the per-image table, the comparison viewer and the training
curves from the data.

``report.json`` holds the same data, so that ``nafrestore report`` can write the page again (elsewhere, with a
newer template, or with a run's curves added) without scoring anything:

.. code-block:: text

    {"format": "nafrestore-report", "version": 1, "title", "created", "preview_side",
     "metrics": [{"name", "kind": "image" | "set", "higher_is_better", "unit"}],
     "views": [{"key", "label", "kind": "input" | "model" | "gt"}],      # input first, the models, ground truth
     "summary": {view key: {metric: mean}},                             # "input" and each model
     "n_images", "settings", "notes", "sources": {what: path},
     "images": [{"name", "width", "height", "scores": {view key: {metric: value}},
                 "files": {view key: {"full", "preview", "thumb", "width", "height"}}}],
     "run": null | {"dir", "name", "config", "history": [{"step", ...}], "curves"}}

Non-finite numbers are written as the strings ``"inf"``, ``"-inf"`` and ``"nan"``, as in ``eval --json``.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..metrics import METRIC_INFO
from ..utils.files import atomic_write, read_metrics
from .images import GROUND_TRUTH, INPUT
from .results import json_safe

FORMAT, VERSION = "nafrestore-report", 1
HTML_NAME, JSON_NAME = "report.html", "report.json"
MAX_HISTORY = 1500  # training-log records kept for the curves (validation records are all kept)


# ------------------------------------------------------------------------------------------------------------
# The data


def view_keys(labels: Sequence[str]) -> list[str]:
    """Folder-safe, unique keys for the models' views, never ``input`` or ``gt``; one model is ``restored``."""
    if len(labels) == 1:
        return ["restored"]
    keys: list[str] = []
    for label in labels:
        base = re.sub(r"[^a-z0-9_-]+", "-", label.lower()).strip("-") or "model"
        base = f"model-{base}" if base in (INPUT, GROUND_TRUTH) else base
        key, n = base, 1
        while key in keys:
            n += 1
            key = f"{base}-{n}"
        keys.append(key)
    return keys


def assemble(
    models: Sequence[tuple[str, Mapping[str, float], Sequence[Mapping[str, Any]]]],
    *,
    input_summary: Mapping[str, float] | None,
    n_images: int,
    settings: Mapping[str, Any],
    notes: Sequence[str] = (),
    metrics: Sequence[str] | None = None,
    title: str = "Evaluation report",
    sources: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    preview_side: int = 1024,
) -> dict[str, Any]:
    """The report's data (see the module docstring) from each model's (label, summary, per-image rows).

    A row is ``eval --json``'s: ``{"name", metric: value, "input_<metric>": value, "files": {...}}``; ``files``
    (written by :class:`~nafrestore.report.images.ReportImages`) is optional, and the rows of every model have the
    same names. The input's values are taken from the first model's rows.
    """
    labels = [label for label, _, _ in models]
    keys = view_keys(labels)
    names = list(metrics or settings.get("metrics") or [m for m in METRIC_INFO if m in models[0][1]])
    has_input = input_summary is not None
    views = [{"key": INPUT, "label": "input", "kind": "input"}] if has_input else []
    views += [{"key": k, "label": label, "kind": "model"} for k, label in zip(keys, labels, strict=True)]
    views.append({"key": GROUND_TRUTH, "label": "ground truth", "kind": "gt"})
    summary: dict[str, Any] = {INPUT: dict(input_summary)} if has_input else {}  # type: ignore[arg-type]
    summary.update({k: dict(s) for k, (_, s, _) in zip(keys, models, strict=True)})
    images: dict[str, dict[str, Any]] = {}
    for key, (_, _, rows) in zip(keys, models, strict=True):
        for row in rows:
            image = images.setdefault(str(row["name"]), {"name": str(row["name"]), "scores": {}, "files": {}})
            metric_values = {m: row[m] for m in names if m in row}
            image["scores"][key] = metric_values
            inputs = {m: row[f"input_{m}"] for m in names if f"input_{m}" in row}
            if inputs:
                image["scores"].setdefault(INPUT, inputs)
            for view, files in (row.get("files") or {}).items():
                image["files"][view if view in (INPUT, GROUND_TRUTH) else key] = files
                image.setdefault("width", files.get("width"))
                image.setdefault("height", files.get("height"))
    return {
        "format": FORMAT,
        "version": VERSION,
        "title": title,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "preview_side": preview_side,
        "metrics": [_metric(m, METRIC_INFO[m]) for m in names if m in METRIC_INFO],
        "views": views,
        "summary": summary,
        "n_images": n_images,
        "settings": dict(settings),
        "notes": list(notes),
        "sources": {k: str(v) for k, v in (sources or {}).items() if v is not None},
        "images": list(images.values()),
        "run": dict(run) if run else None,
    }


def _metric(name: str, info: Any) -> dict[str, Any]:
    return {"name": name, "kind": info.kind, "higher_is_better": info.higher_is_better, "unit": info.unit}


def run_info(run_dir: str | Path, folder: str | Path | None = None) -> dict[str, Any] | None:
    """A training run's part of the report: its config, its logged curves, and ``curves.png`` (copied into
    ``folder``) when there is no log to draw them from. None when ``run_dir`` is not a run directory."""
    run_dir = Path(run_dir)
    config, metrics = run_dir / "config.yaml", run_dir / "metrics.jsonl"
    if not (config.is_file() or metrics.is_file()):
        return None
    history = [logged_numbers(r) for r in read_metrics(metrics)]
    train = [r for r in history if "loss" in r or "lr" in r]
    stride = max(1, -(-len(train) // MAX_HISTORY))
    kept = {id(r) for r in train[::stride]} | {id(train[-1])} if train else set()
    history = [r for r in history if id(r) in kept or any(k.startswith("val/") for k in r)]
    curves = None
    if not history and (run_dir / "curves.png").is_file() and folder is not None:
        curves = "curves.png"
        copy_file(run_dir / "curves.png", Path(folder) / curves)
    return {
        "dir": str(run_dir),
        "name": run_dir.resolve().name,
        "config": config.read_text(encoding="utf-8") if config.is_file() else None,
        "history": history,
        "curves": curves,
    }


def logged_numbers(record: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics.jsonl record's step, loss, learning rate and validation values (the numbers the curves draw and the
    report shows), each a number or ``"inf"``/``"-inf"``/``"nan"`` as the log writes them; anything else (a
    string, true/false, a list) is left out, as read_metrics leaves out lines that are not JSON."""
    keep = ("step", "loss", "lr")
    return {
        k: v for k, v in record.items()
        if (k in keep or k.startswith("val/"))
        and ((isinstance(v, int | float) and not isinstance(v, bool)) or v in ("inf", "-inf", "nan"))
    }  # fmt: skip


def copy_file(source: Path, target: Path) -> None:
    """Copy a file through an atomic write (the report's outputs all go through :mod:`nafrestore.utils.files`)."""
    if source.resolve() == target.resolve():
        return
    with source.open("rb") as src, atomic_write(target) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


# ------------------------------------------------------------------------------------------------------------
# The page


def write_page(data: Mapping[str, Any], folder: str | Path) -> Path:
    """Write ``report.json`` and ``report.html`` into ``folder``; returns the page's path."""
    folder = Path(folder)
    safe = json_safe(dict(data))
    with atomic_write(folder / JSON_NAME, "w", encoding="utf-8") as f:
        json.dump(safe, f, indent=1, ensure_ascii=False)
    page = folder / HTML_NAME
    with atomic_write(page, "w", encoding="utf-8") as f:
        f.write(render(safe))
    return page


def render(data: Mapping[str, Any]) -> str:
    """The HTML page of the report data (already made JSON-safe)."""
    css = resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")
    js = resources.files(__package__).joinpath("report.js").read_text(encoding="utf-8")
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    title = html.escape(str(data.get("title") or "Evaluation report"))
    run = data.get("run") or None
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # Nothing but this folder's files and the inlined code: no network request can leave the page.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">",
        f"<title>{title}</title>",
        f"<style>\n{css}</style>",
        "</head>",
        "<body>",
        '<header class="top">',
        f"<h1>{title}</h1>",
        f'<p class="meta">{html.escape(_subtitle(data))}</p>',
        "</header>",
        "<main>",
        '<section id="summary"><h2>Summary</h2>',
        _summary_table(data),
        _settings(data),
        "</section>",
        _run_section(run) if run else "",
        '<section id="images"><h2>Images</h2>',
        '<p class="hint">Click a column header to sort; click an image (or press Enter on its row) to compare its '
        "views. In the viewer: <kbd>1</kbd>-<kbd>9</kbd> or <kbd>i</kbd>/<kbd>r</kbd>/<kbd>g</kbd> show one view, "
        "<kbd>s</kbd> slider / side by side, <kbd>z</kbd> 1:1 / fit, <kbd>+</kbd>/<kbd>-</kbd> zoom, drag to pan, "
        "<kbd>&larr;</kbd>/<kbd>&rarr;</kbd> previous / next image, <kbd>Esc</kbd> close.</p>",
        '<div class="table-wrap"><table id="image-table" class="data"></table></div>',
        '<p id="no-images" class="hint" hidden></p>',
        "</section>",
        "</main>",
        _viewer(),
        f'<script type="application/json" id="report-data">{blob}</script>',
        f"<script>\n{js}</script>",
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _subtitle(data: Mapping[str, Any]) -> str:
    n, created = data.get("n_images"), str(data.get("created") or "")
    models = [v["label"] for v in data.get("views", []) if v.get("kind") == "model"]
    what = f"{n} images" + (f", {len(models)} models" if len(models) > 1 else "")
    return f"{what} - written {created.replace('T', ' ')} by nafrestore"


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _as_float(value: Any) -> float:
    try:
        return float(value)  # "inf", "-inf", "nan" as written by json_safe
    except (TypeError, ValueError):
        return float("nan")


def _summary_table(data: Mapping[str, Any]) -> str:
    """Rows: the input and each model; columns: each metric's mean (the best model's in bold), and N."""
    metrics, summary = data.get("metrics", []), data.get("summary", {})
    rows = [v for v in data.get("views", []) if v["key"] in summary]
    models = [v for v in rows if v["kind"] == "model"]
    head = "".join(
        f"<th>{html.escape(m['name'])}{' (' + html.escape(m['unit']) + ')' if m.get('unit') else ''} "
        f'<span class="dir">{"&uarr;" if m["higher_is_better"] else "&darr;"}</span></th>'
        for m in metrics
    )
    best: dict[str, float] = {}
    for m in metrics:
        values = [_as_float(summary[v["key"]].get(m["name"])) for v in models]
        values = [x for x in values if x == x]  # not NaN
        if len(models) > 1 and values:
            best[m["name"]] = max(values) if m["higher_is_better"] else min(values)
    body = []
    for view in rows:
        cells = []
        for m in metrics:
            value = summary[view["key"]].get(m["name"])
            strong = view["kind"] == "model" and best.get(m["name"]) == _as_float(value)
            text = html.escape(_fmt(value))
            cells.append(f'<td class="num">{"<strong>" + text + "</strong>" if strong else text}</td>')
        css = ' class="input-row"' if view["kind"] == "input" else ""
        body.append(
            f'<tr{css}><th scope="row">{html.escape(view["label"])}</th>{"".join(cells)}'
            f'<td class="num">{data.get("n_images")}</td></tr>'
        )
    return (
        f'<table class="data" id="summary-table"><thead><tr><th></th>{head}<th>N</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


_SETTING_HELP = {
    "metrics": "metrics computed",
    "y_channel": "PSNR/SSIM on the BT.601 Y channel (else on RGB)",
    "crop_border": "pixels removed from each side before scoring",
    "quantize": "images rounded to 8 bits before scoring",
    "lpips_net": "LPIPS backbone",
    "fid_patch": "rFID/KID patch side",
    "weights_verified": "metric network weights checked against their sha256",
    "ms_ssim_scales": "MS-SSIM scales used (number of images)",
    "fid_samples": "rFID/KID patches",
    "n_inf": "images with an infinite PSNR (identical), left out of the mean",
}


def _settings(data: Mapping[str, Any]) -> str:
    settings, sources = data.get("settings") or {}, data.get("sources") or {}
    items = []
    for key, value in settings.items():
        if value is None:
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else json.dumps(value) if isinstance(
            value, dict) else str(value)  # fmt: skip
        hint = _SETTING_HELP.get(key, "")
        items.append(
            f'<tr><th scope="row">{html.escape(key)}</th><td><code>{html.escape(shown)}</code></td>'
            f'<td class="hint">{html.escape(hint)}</td></tr>'
        )
    for key, value in sources.items():
        items.append(
            f'<tr><th scope="row">{html.escape(key)}</th><td><code>{html.escape(str(value))}</code></td>'
            '<td class="hint">source</td></tr>'
        )
    notes = "".join(f"<li>{html.escape(str(n))}</li>" for n in data.get("notes") or [])
    out = f'<h3>Settings and conventions</h3><table class="settings" id="settings">{"".join(items)}</table>'
    return out + (f'<ul class="notes">{notes}</ul>' if notes else "")


def _run_section(run: Mapping[str, Any]) -> str:
    name = html.escape(str(run.get("name") or ""))
    parts = [f'<section id="run"><h2>Training run <code>{name}</code></h2>']
    parts.append(f'<p class="meta">{html.escape(str(run.get("dir") or ""))}</p>')
    if run.get("history"):
        parts.append('<div id="curves" class="curves"></div>')
    elif run.get("curves"):
        parts.append(f'<img class="curves-png" src="{html.escape(str(run["curves"]))}" alt="training curves">')
    else:
        parts.append('<p class="hint">No training log (metrics.jsonl) in the run directory.</p>')
    if run.get("config"):
        config = html.escape(str(run["config"]))
        parts.append(f'<details id="config"><summary>config.yaml</summary><pre>{config}</pre></details>')
    parts.append("</section>")
    return "".join(parts)


def _viewer() -> str:
    """The comparison viewer's skeleton (hidden until an image is opened; the script fills it)."""
    return """<div id="viewer" class="viewer" hidden role="dialog" aria-modal="true" aria-labelledby="viewer-name">
<div class="viewer-bar">
  <button type="button" id="v-prev" title="previous image (&larr;)">&larr;</button>
  <button type="button" id="v-next" title="next image (&rarr;)">&rarr;</button>
  <span id="viewer-name" class="viewer-name"></span><span id="viewer-count" class="meta"></span>
  <span id="viewer-scores" class="viewer-scores"></span>
  <button type="button" id="v-close" class="close" title="close (Esc)">&times;</button>
</div>
<div class="viewer-tools">
  <label>left <select id="v-a"></select></label>
  <label>right <select id="v-b"></select></label>
  <span class="group" role="group" aria-label="layout">
    <button type="button" id="v-slider" aria-pressed="true" title="before/after slider (s)">slider</button>
    <button type="button" id="v-side" aria-pressed="false" title="side by side, panned together (s)"
      >side by side</button>
  </span>
  <span id="v-views" class="group" role="group" aria-label="show one view"></span>
  <span class="group" role="group" aria-label="zoom">
    <button type="button" id="v-fit" title="fit (z)">fit</button>
    <button type="button" id="v-1to1" title="full resolution, 1:1 (z)">1:1</button>
    <button type="button" id="v-out" title="zoom out (-)">&minus;</button>
    <button type="button" id="v-in" title="zoom in (+)">+</button>
    <span id="v-zoom" class="meta"></span>
  </span>
</div>
<div id="stage" class="stage">
  <div class="pane" id="pane-0">
    <div class="layer" id="layer-b"><div class="canvas"><img id="img-b" alt="" draggable="false"></div></div>
    <div class="layer" id="layer-a"><div class="canvas"><img id="img-a" alt="" draggable="false"></div></div>
    <div class="divider" id="divider"><span class="handle"></span></div>
    <span class="tag tag-a" id="tag-a"></span><span class="tag tag-b" id="tag-b"></span>
  </div>
  <div class="pane" id="pane-1" hidden>
    <div class="layer"><div class="canvas"><img id="img-c" alt="" draggable="false"></div></div>
    <span class="tag tag-a" id="tag-c"></span>
  </div>
</div>
<input type="range" id="split" class="split" min="0" max="100" step="0.1" value="50"
  aria-label="slider position: left view on the left of it, right view on the right">
</div>"""
