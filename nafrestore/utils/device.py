"""Devices, seeding and mixed precision.

``resolve_device`` turns a device name into a :class:`torch.device`; ``resolve_precision`` checks that a device can
run a precision (fp32 | bf16 | fp16); ``autocast`` is the matching context manager; ``seed_everything`` seeds Python,
NumPy and torch at once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import NafrestoreError

log = logging.getLogger("nafrestore")

#: Precision names, as in ``train.precision`` and ``--precision``.
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The device named by ``spec``: ``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Raises:
        NafrestoreError: the name is unknown or the device is not available on this machine. The message names the
            device, not the setting that gave it; callers that know the setting (``run.device``) prefix it.
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
            raise NafrestoreError("device 'mps' is not available: this machine has no MPS device; use auto or cpu.")
        return torch.device("mps")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise NafrestoreError(f"device {spec!r} is not available: CUDA is not available here; use auto or cpu.")
        device = torch.device(spec)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise NafrestoreError(f"device {spec!r} is not available: this machine has {count} CUDA device(s).")
        return device
    raise NafrestoreError(f"device must be auto, cpu, cuda, cuda:N or mps; got {spec!r}.")


def resolve_precision(precision: str, device: torch.device) -> str:
    """Check a precision name for a device; the one rule that train, eval and infer share.

    ``fp32`` runs everywhere. ``bf16`` (autocast to bfloat16) runs on the CPU, MPS and CUDA GPUs that support it.
    ``fp16`` (autocast to float16; training adds a gradient scaler) needs a GPU: the CPU has no fp16 autocast worth
    using, so asking for it there is an error rather than a silent change of numerics.

    Returns:
        ``precision`` itself, checked.

    Raises:
        NafrestoreError: an unknown name, or a precision the device cannot run.
    """
    if precision not in PRECISIONS:
        raise NafrestoreError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    if precision == "fp16" and device.type == "cpu":
        raise NafrestoreError(
            "precision fp16 needs a GPU (cuda or mps): the CPU has no fp16 autocast worth using. "
            "Use bf16 (CPU autocast) or fp32 on the CPU."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise NafrestoreError(f"precision bf16 is not supported by {torch.cuda.get_device_name(device)}; use fp16.")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast to ``precision``'s dtype on ``device`` (a no-op for ``fp32``)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision]):
        yield


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


#: The memory formats a model and its inputs can be kept in, by config name.
MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA and MPS run asynchronously; the CPU needs nothing)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_alternately(
    run: Callable[[str], object],
    options: Sequence[str],
    *,
    device: torch.device | str,
    prepare: Callable[[str], object] | None = None,
    rounds: int = 2,
    repeats: int = 2,
) -> dict[str, float]:
    """The best seconds per call of ``run(option)`` for each option, timed alternately.

    Each of ``rounds`` rounds visits every option in turn: ``prepare(option)`` (not timed), one warm-up call (kernel
    and oneDNN primitive selection), then ``repeats`` timed calls. Alternating and keeping each option's best round
    lets background load, which comes and goes, hit all options alike. The one timer behind inference's automatic
    choices of memory format and precision. Training never times: a timed choice changes numerics with the load.
    """
    best = dict.fromkeys(options, float("inf"))
    for _ in range(rounds):
        for option in options:
            if prepare is not None:
                prepare(option)
            run(option)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                run(option)
            synchronize(device)
            best[option] = min(best[option], (time.perf_counter() - start) / repeats)
    return best


__all__ = [
    "MEMORY_FORMATS",
    "PRECISIONS",
    "autocast",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
    "synchronize",
    "time_alternately",
]
