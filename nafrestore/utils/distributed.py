"""Multi-process (DistributedDataParallel) helpers: training joins the process group; training and evaluation
(which merges every process's scores) use its collectives.

``torchrun --nproc_per_node N -m nafrestore train CONFIG`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment; :func:`setup_distributed` then joins them into a process group (NCCL on
CUDA, Gloo on the CPU) and gives each its device (``cuda:LOCAL_RANK`` on GPUs). Without those variables everything
here degrades to single-process no-ops, so the training loop calls the helpers unconditionally.

``train.batch_size`` is per process: the global batch is ``batch_size * WORLD_SIZE``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import ConfigError, NafrestoreError
from .device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False  # whether setup_distributed created the process group (and must destroy it)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the environment of a ``torchrun`` worker is set (RANK, WORLD_SIZE and LOCAL_RANK)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def setup_distributed(device_spec: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the ``torchrun`` process group if launched by it, and pick this process's device.

    Args:
        device_spec: ``run.device``. Under torchrun with CUDA, ``auto``/``cuda`` become ``cuda:LOCAL_RANK``.

    Returns:
        (this process's :class:`DistInfo`, its device).
    """
    try:
        device = resolve_device(device_spec)
    except NafrestoreError as exc:
        raise ConfigError(f"run.device: {exc}") from None
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if device.index is None else device.index)
        torch.cuda.set_device(device)
    created = False
    if not is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(minutes=30)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
        created = True
    return DistInfo(rank, world, local_rank, created), device


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.initialized_here and is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_initialized():
        dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place when distributed); returns it."""
    if is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "get_rank",
    "get_world_size",
    "is_initialized",
    "launched_by_torchrun",
    "setup_distributed",
    "teardown_distributed",
]
