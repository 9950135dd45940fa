"""nafrestore: train, evaluate and run NAFNet / LKA-NAFNet image restoration networks.

``nafrestore.load_model`` and ``nafrestore.restore`` (from :mod:`nafrestore.inference`) are imported on first
use, so ``import nafrestore`` stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

__all__ = ["__version__", "load_model", "restore"]

_LAZY = {"load_model": "nafrestore.inference.api", "restore": "nafrestore.inference.api"}

if TYPE_CHECKING:  # for type checkers and IDEs only
    from .inference.api import load_model, restore


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'nafrestore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
