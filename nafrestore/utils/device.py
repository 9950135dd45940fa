"""Devices, seeding and mixed precision.

``resolve_device`` turns the ``run.device`` setting into a :class:`torch.device`; ``resolve_amp`` decides which
mixed precision a device can run; ``autocast`` is the matching context manager; ``seed_everything`` seeds Python,
NumPy and torch at once.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator

import numpy as np
import torch

from ..errors import ConfigError

log = logging.getLogger("nafrestore")

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device named by ``spec``: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        ConfigError: the device is not available on this machine (with what is).
    """
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise ConfigError("run.device is 'mps' but this machine has no usable MPS device; use auto or cpu.")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"run.device is {spec!r} but CUDA is not available here; use run.device=auto or cpu.")
        device = torch.device(spec)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"run.device is {spec!r} but this machine has {count} CUDA device(s) (0..{count - 1}).")
        return device
    raise ConfigError(f"run.device must be auto, cpu, cuda, cuda:N or mps; got {spec!r}.")


def resolve_amp(amp: str, device: torch.device) -> str:
    """The mixed precision actually used for ``amp`` (``none`` | ``bf16`` | ``fp16``) on ``device``.

    fp16 autocast on the CPU is slow and only partly supported, so there it falls back to ``none`` (full float32)
    with a warning rather than failing: a config written for a GPU still runs on a laptop with ``device: auto``.
    bf16 is allowed everywhere autocast supports it (CPU, CUDA, MPS).
    """
    if amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"train.amp must be none, bf16 or fp16; got {amp!r}.")
    if amp == "fp16" and device.type == "cpu":
        log.warning("train.amp=fp16 is not supported on the CPU; training in float32 instead (bf16 would work).")
        return "none"
    return amp


@contextlib.contextmanager
def autocast(device: torch.device, amp: str) -> Iterator[None]:
    """Autocast to ``amp``'s dtype on ``device`` (a no-op for ``none``)."""
    if amp == "none":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp]):
        yield


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


__all__ = ["autocast", "resolve_amp", "resolve_device", "seed_everything"]
