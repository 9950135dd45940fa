"""Scoring restored images against ground truth: the one loop behind ``nafrestore eval`` and training validation.

- :mod:`.sources`: what is scored: :class:`EvalItem` pairs from two folders of images (restored and ground truth,
  optionally the degraded input), from a dataset a model restores (the configured validation set, or a folder of
  clean images degraded by the config's synthetic pipeline, fixed per image by its name), or from the validation
  loader during training; and the model under test (:func:`model_under_test`, :func:`model_restore`).
- :mod:`.scoring`: :func:`score`, which scores every pair, and the degraded input too (the ``input`` row) so the
  gain is visible.
- :mod:`.compare`: several models on the same images (:func:`compare`), the input scored once for all.
- :mod:`.api`: :func:`evaluate`, ``nafrestore eval``'s one function.
- :mod:`.output`: the result as a table, JSON and a per-image CSV.

The result is an :class:`~nafrestore.report.results.EvalResult` (several models: a
:class:`~nafrestore.report.results.Comparison`); the HTML report of it is
:func:`nafrestore.report.write_eval_report`'s, whose images :func:`score` writes as it goes.
"""

from __future__ import annotations

from ..report.results import Comparison, EvalResult, json_safe
from .api import evaluate
from .compare import compare, model_labels
from .output import format_table, write_csv, write_json
from .scoring import score
from .sources import (
    EvalItem,
    Restore,
    dataset_items,
    folder_items,
    loader_items,
    model_items,
    model_restore,
    model_under_test,
)

__all__ = [
    "Comparison",
    "EvalItem",
    "EvalResult",
    "Restore",
    "compare",
    "dataset_items",
    "evaluate",
    "folder_items",
    "format_table",
    "json_safe",
    "loader_items",
    "model_items",
    "model_labels",
    "model_restore",
    "model_under_test",
    "score",
    "write_csv",
    "write_json",
]
