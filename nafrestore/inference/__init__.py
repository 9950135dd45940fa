"""Inference: load trained networks, restore arrays and files (tiled, TTA, mixed precision), export.

- :func:`load_model` / :func:`restore` (``api``): the Python API, also re-exported as ``nafrestore.load_model``
  and ``nafrestore.restore``.
- :func:`restore_files` (``batch``): the ``nafrestore infer`` command's work.
- :func:`restore_tiled` (``tiling``): bounded-memory tiled inference with seamless blending.
- :func:`fold_for_inference` (``fold``): the faster, numerically equal inference path.
- :func:`export_model` (``export``): ONNX, safetensors and TorchScript files.
"""

from __future__ import annotations

from .api import load_model, restore
from .batch import BatchReport, restore_files
from .export import export_model
from .fold import fold_for_inference
from .tiling import restore_tiled

__all__ = [
    "BatchReport",
    "export_model",
    "fold_for_inference",
    "load_model",
    "restore",
    "restore_files",
    "restore_tiled",
]
