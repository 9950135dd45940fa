"""Checking the JSON files ``nafrestore report`` reads back, once, when they are loaded.

A ``report.json`` (its layout is in :mod:`.page`) or an ``eval --json`` file may have been edited by hand, cut
short or written by another version. Each field the page uses is checked for its type (a list where a list
belongs, a number or ``"inf"``/``"-inf"``/``"nan"`` where a score belongs, a relative path inside the report folder
where a file is named), and a file that fails is refused with one message naming the file and the field, e.g.
``images[3].scores.restored.psnr``. Past the check the data are trusted as they are. Fields the page does without
may be missing; fields the writer never writes are let through.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any, NoReturn

from ..errors import DataError
from .images import safe_relative
from .page import FORMAT, VERSION

__all__ = ["check_eval_json", "check_report"]

_NON_FINITE = ("inf", "-inf", "nan")  # how json_safe writes non-finite scores
_VIEW_KINDS = ("input", "model", "gt")
_METRIC_KINDS = ("image", "set")
_MISSING = object()


class _Checker:
    """Type checks on the fields of one file; each failure is one :class:`DataError` naming the file and the field.

    Args:
        path: the file (for the message).
        again: how to write the file again (for the message).
    """

    def __init__(self, path: Path, again: str) -> None:
        self.path, self.again = path, again

    def fail(self, field: str, value: Any, expected: str) -> NoReturn:
        found = f"missing (it should be {expected})" if value is _MISSING else f"{_shown(value)}, not {expected}"
        raise DataError(
            f"{self.path}: {field} is {found}. The file is damaged or was edited by hand: {self.again}, or correct "
            f"that field."
        )

    def obj(self, value: Any, field: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field, value, "an object ({...})")
        return value

    def seq(self, value: Any, field: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(field, value, "a list ([...])")
        return value

    def text(self, value: Any, field: str, *, optional: bool = False) -> None:
        if not (isinstance(value, str) or (optional and value in (None, _MISSING))):
            self.fail(field, value, "a string")

    def integer(self, value: Any, field: str, *, minimum: int = 0, optional: bool = True) -> None:
        if optional and value in (None, _MISSING):
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(field, value, f"a whole number of at least {minimum}")

    def flag(self, value: Any, field: str) -> None:
        if not isinstance(value, bool):
            self.fail(field, value, "true or false")

    def choice(self, value: Any, field: str, choices: Collection[str]) -> None:
        if value not in choices:
            self.fail(field, value, " or ".join(json.dumps(c) for c in choices))

    def number(self, value: Any, field: str) -> None:
        """A score: a JSON number, a non-finite one as json_safe writes it, or null (no value, shown as -)."""
        if value is None or value in _NON_FINITE or (isinstance(value, int | float) and not isinstance(value, bool)):
            return
        self.fail(field, value, f"a number ({', '.join(_NON_FINITE)} and null allowed)")

    def numbers(self, value: Any, field: str) -> None:
        for name, number in self.obj(value, field).items():
            self.number(number, f"{field}.{name}")

    def file(self, value: Any, field: str, *, optional: bool = False) -> None:
        """The relative path of a file inside the report folder (as the report's image writer names them)."""
        if optional and value in (None, _MISSING):
            return
        if not isinstance(value, str) or not value or safe_relative(value) != value:
            self.fail(field, value, "a relative path inside the report folder (e.g. images/gt/a.png)")

    def texts(self, value: Any, field: str) -> None:
        for i, item in enumerate(self.seq(value, field)):
            self.text(item, f"{field}[{i}]")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(data: dict[str, Any], key: str) -> Any:
    return data.get(key, _MISSING)


def check_report(raw: Any, path: Path) -> dict[str, Any]:
    """The data of a ``report.json`` (``raw``, as parsed), checked against the layout of :mod:`.page`.

    Raises:
        DataError: a field the page uses has the wrong type, a file it names is outside the report folder, or the
            file is of a newer version; naming ``path`` and the field.
    """
    c = _Checker(path, f"write the report again with nafrestore eval ... --report {path.parent}")
    data = c.obj(raw, "the file")
    if data.get("format") != FORMAT:
        c.fail("format", _get(data, "format"), json.dumps(FORMAT))
    version = _get(data, "version")
    c.integer(version, "version", minimum=1, optional=False)
    if version > VERSION:
        raise DataError(
            f"{path} is a report of version {version}, written by a newer nafrestore; this one reads version "
            f"{VERSION}. Upgrade nafrestore, or write the report again with this one (nafrestore eval ... --report "
            f"{path.parent})."
        )
    for key in ("title", "created"):
        c.text(_get(data, key), key, optional=True)
    c.integer(_get(data, "preview_side"), "preview_side", minimum=1)
    c.integer(_get(data, "n_images"), "n_images")
    for i, metric in enumerate(c.seq(_get(data, "metrics"), "metrics")):
        field = f"metrics[{i}]"
        metric = c.obj(metric, field)
        c.text(_get(metric, "name"), f"{field}.name")
        c.flag(_get(metric, "higher_is_better"), f"{field}.higher_is_better")
        c.text(_get(metric, "unit"), f"{field}.unit", optional=True)
        if "kind" in metric:
            c.choice(metric["kind"], f"{field}.kind", _METRIC_KINDS)
    for i, view in enumerate(c.seq(_get(data, "views"), "views")):
        field = f"views[{i}]"
        view = c.obj(view, field)
        c.text(_get(view, "key"), f"{field}.key")
        c.text(_get(view, "label"), f"{field}.label")
        c.choice(_get(view, "kind"), f"{field}.kind", _VIEW_KINDS)
    for key, scores in c.obj(_get(data, "summary"), "summary").items():
        c.numbers(scores, f"summary.{key}")
    if "settings" in data:
        c.obj(data["settings"], "settings")
    if "notes" in data:
        c.texts(data["notes"], "notes")
    for key, value in c.obj(data.get("sources", {}), "sources").items():
        c.text(value, f"sources.{key}")
    for i, image in enumerate(c.seq(_get(data, "images"), "images")):
        _check_image(c, image, f"images[{i}]")
    if data.get("run") is not None:
        _check_run(c, data["run"])
    return data


def _check_image(c: _Checker, image: Any, field: str) -> None:
    image = c.obj(image, field)
    c.text(_get(image, "name"), f"{field}.name")
    for key in ("width", "height"):
        c.integer(_get(image, key), f"{field}.{key}", minimum=1)
    for view, scores in c.obj(image.get("scores", {}), f"{field}.scores").items():
        c.numbers(scores, f"{field}.scores.{view}")
    for view, files in c.obj(image.get("files", {}), f"{field}.files").items():
        where = f"{field}.files.{view}"
        files = c.obj(files, where)
        c.file(_get(files, "full"), f"{where}.full")
        for key in ("preview", "thumb"):
            c.file(_get(files, key), f"{where}.{key}", optional=True)
        for key in ("width", "height"):
            c.integer(_get(files, key), f"{where}.{key}", minimum=1)


def _check_run(c: _Checker, run: Any) -> None:
    run = c.obj(run, "run")
    for key in ("dir", "name", "config"):
        c.text(_get(run, key), f"run.{key}", optional=True)
    c.file(_get(run, "curves"), "run.curves", optional=True)
    for i, record in enumerate(c.seq(run.get("history", []), "run.history")):
        c.numbers(record, f"run.history[{i}]")


def check_eval_json(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The data of an ``eval --json`` file (``raw``, as parsed: an object with ``summary`` or ``models``), checked
    for what the report's tables take from it.

    Raises:
        DataError: a field has the wrong type, naming ``path`` and the field.
    """
    c = _Checker(path, f"write it again with nafrestore eval ... --json {path}")
    if "models" in raw:
        models = c.obj(raw["models"], "models")
        if not models:
            c.fail("models", models, "an object with a section per model")
        for label, model in models.items():
            _check_eval_result(c, c.obj(model, f"models.{label}"), f"models.{label}.")
        if raw.get("input_summary") is not None:
            c.numbers(raw["input_summary"], "input_summary")
        _check_settings(c, raw, "")
    else:
        _check_eval_result(c, raw, "")
    c.integer(_get(raw, "n_images"), "n_images")
    if "notes" in raw:
        c.texts(raw["notes"], "notes")
    return raw


def _check_eval_result(c: _Checker, result: dict[str, Any], prefix: str) -> None:
    """One model's part of an eval JSON file: its summary, per-image rows and settings."""
    c.numbers(_get(result, "summary"), f"{prefix}summary")
    if result.get("input_summary") is not None:
        c.numbers(result["input_summary"], f"{prefix}input_summary")
    for i, row in enumerate(c.seq(result.get("images", []), f"{prefix}images")):
        field = f"{prefix}images[{i}]"
        row = c.obj(row, field)
        c.text(_get(row, "name"), f"{field}.name")
        for key, value in row.items():
            if key not in ("name", "files"):  # the report's image paths: not read from an eval JSON
                c.number(value, f"{field}.{key}")
    _check_settings(c, result, prefix)


def _check_settings(c: _Checker, result: dict[str, Any], prefix: str) -> None:
    """``settings``: an object whose ``metrics``, when there, name the metrics (the columns of the tables)."""
    settings = c.obj(result.get("settings", {}), f"{prefix}settings")
    if "metrics" in settings:
        c.texts(settings["metrics"], f"{prefix}settings.metrics")
