"""Loaders: training batches that depend only on (seed, rank, epoch), so a resumed run sees what an uninterrupted
one would; validation batches of one whole image, each image on exactly one process.

:func:`build_train_loader` and :func:`build_val_loader` wrap the datasets of :mod:`.datasets` and the shard stream of
:mod:`.shards`; :class:`BatchStream` turns the training loader into the endless stream of batches the loop counts in
steps.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..errors import DataError, NafrestoreError
from .degradations import seed_for
from .shards import ShardTrainDataset

__all__ = ["BatchStream", "TrainSampler", "build_train_loader", "build_val_loader"]


class TrainSampler(Sampler):
    """A :class:`~torch.utils.data.DistributedSampler` (this rank's share of a shuffled order, the tail dropped so
    every rank gets as many) whose indices carry a per-sample seed: ``(index, seed)``.

    The seeds come from a stream fixed by (seed, rank, epoch), and the shuffle by (seed, epoch), so training
    batches depend only on those, not on the worker count. The epoch advances by itself at each new iteration
    (no ``set_epoch`` call is needed for a fresh shuffle); ``set_epoch`` sets it, e.g. when resuming.
    """

    def __init__(self, dataset: Dataset, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.seed = int(seed) % 2**63
        self.rank = rank
        self.epoch = 0
        self.inner = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=self.seed, drop_last=True
        )
        self.with_seeds = bool(getattr(dataset, "supports_sample_seeds", False))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        self.inner.set_epoch(self.epoch)
        indices = list(self.inner)
        seeds = np.random.default_rng(seed_for(f"train-samples/{self.rank}/{self.epoch}", self.seed))
        seeds = seeds.integers(0, 2**63 - 1, size=len(indices), dtype=np.int64).tolist()
        self.epoch += 1
        if self.with_seeds:
            return iter(list(zip(indices, seeds, strict=True)))
        return iter(indices)


class _ShardSampler(Sampler):
    """Indices ``rank, rank + world_size, ...`` in order: each image on exactly one rank (no padding duplicates,
    unlike DistributedSampler, so metrics summed over ranks count every image once)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def _seed_worker(worker_id: int) -> None:
    """DataLoader worker start: seed python/numpy from the worker's torch seed, and stop OpenCV threading."""
    seed = torch.initial_seed()  # DataLoader set it to base_seed + worker_id, base_seed from the loader generator
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # Each worker already is a parallel process; OpenCV's own thread pool would oversubscribe the cores (and
    # thread pools do not survive fork well).
    cv2.setNumThreads(0)


def build_train_loader(
    dataset: Dataset, *, batch_size: int, num_workers: int, seed: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """The training loader: shuffled (per rank when ``world_size > 1``), full batches only, seeded workers.

    Batches are a function of (seed, rank, epoch) only (see :class:`TrainSampler`); workers are persistent when
    ``num_workers > 0`` and pinned memory is used when CUDA is available. Each ``iter(loader)`` is a new epoch.

    A :class:`~nafrestore.data.shards.ShardTrainDataset` is split for this process instead (its batches are a
    function of (seed, rank, epoch, world size, workers, batch size), see :mod:`.shards`), and its workers start
    afresh each epoch: the epoch (and, resuming, the batches to skip) reach them with the dataset.

    Raises:
        DataError: the dataset cannot fill one batch per rank.
    """
    if isinstance(dataset, ShardTrainDataset):
        return DataLoader(
            dataset.split(rank=rank, world_size=world_size, num_workers=num_workers, batch_size=batch_size, seed=seed),
            batch_size=batch_size,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_seed_worker,
        )
    sampler = TrainSampler(dataset, seed=seed, rank=rank, world_size=world_size)
    if len(sampler) < batch_size:
        raise DataError(
            f"The training set gives {len(sampler)} samples per process, fewer than one batch of {batch_size}. "
            "Lower train.batch_size or add images."
        )
    generator = torch.Generator()
    generator.manual_seed(seed_for(f"train-workers/{rank}", seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_seed_worker,
        generator=generator,
    )


def build_val_loader(dataset: Dataset, *, rank: int = 0, world_size: int = 1, num_workers: int = 0) -> DataLoader:
    """The validation loader: batches of one whole image (sizes differ), in order.

    With ``world_size > 1`` each rank gets every ``world_size``-th image and each image is seen once overall;
    sum metrics across ranks to combine.
    """
    return DataLoader(
        dataset,
        batch_size=1,
        sampler=_ShardSampler(len(dataset), rank, world_size),
        num_workers=num_workers,
        worker_init_fn=_seed_worker,
    )


# ----------------------------------------------------------------------------------------------------------------
# The endless training stream


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    for obj in (loader.sampler, getattr(loader.batch_sampler, "sampler", None), loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


def _partial_epoch(loader: DataLoader, skip: int) -> DataLoader:
    """A one-off loader over the current epoch's batches after the first ``skip`` (call after ``_set_epoch``).

    The epoch's index batches are drawn from the loader's own batch sampler (indices carry their per-sample seeds),
    so the batches are the ones the uninterrupted run got, but the skipped ones are never loaded.
    """
    batches = list(loader.batch_sampler)[skip:]
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_sampler=batches,  # type: ignore[arg-type]  # any sized iterable of index lists works
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        timeout=loader.timeout,
        multiprocessing_context=loader.multiprocessing_context if workers else None,
        prefetch_factor=loader.prefetch_factor if workers else None,
    )


def _unwrapped(exc: NafrestoreError) -> NafrestoreError:
    """The error a DataLoader worker raised, with its own message.

    The loader re-raises a worker's exception in the main process with the worker's whole traceback as the message
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); a user error should read as the one
    paragraph it was written as. The traceback's last line is ``<module>.<class>: <message>``.
    """
    text = str(exc)
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if not text.startswith("Caught ") or marker not in text:
        return exc
    try:
        return type(exc)(text.rsplit(marker, 1)[1].strip())
    except Exception:  # an error class with another constructor: keep it as it came
        return exc


class BatchStream:
    """Endless training batches from a DataLoader, starting at a given step.

    Step s is batch ``s % len(loader)`` of epoch ``s // len(loader)``; before each epoch the sampler (and the
    dataset, if it has one) get ``set_epoch(epoch)``. With a sampler whose order and per-sample randomness depend
    only on (seed, rank, epoch), as :func:`nafrestore.data.build_train_loader`'s, the batches are then a function of
    the step alone: a stream started at step s yields what an uninterrupted one yields from there. A dataset that
    streams (an IterableDataset with ``set_skip``, see :mod:`.shards`) skips the consumed batches of the first
    epoch itself. A user error raised in a loader worker comes out with its own message.

    Args:
        loader: a DataLoader with a batch sampler (``batch_size`` set).
        start_step: batches already consumed (the resumed step).

    Attributes:
        order_settings: for a streaming dataset, the settings its order depends on beyond the step (its
            ``order_settings()``, for the checkpoint; see :func:`.shards.check_data_order`); None otherwise.
    """

    def __init__(self, loader: DataLoader, start_step: int = 0) -> None:
        if loader.batch_sampler is None:
            raise ValueError("BatchStream needs a DataLoader with a batch sampler (batch_size set)")
        self.loader = loader
        self.per_epoch = len(loader)
        if self.per_epoch == 0:
            raise ValueError("the training loader yields no batches")
        self.position = int(start_step)
        settings = getattr(loader.dataset, "order_settings", None)
        self.order_settings: dict[str, Any] | None = settings() if settings is not None else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, skip = divmod(self.position, self.per_epoch)
        while True:
            _set_epoch(self.loader, epoch)
            source = self.loader
            if skip and hasattr(self.loader.dataset, "set_skip"):
                self.loader.dataset.set_skip(skip)
            elif skip:
                source = _partial_epoch(self.loader, skip)
            try:
                for batch in source:
                    self.position += 1
                    yield batch
            except NafrestoreError as exc:
                error = _unwrapped(exc)
                if error is not exc:
                    # The loader's frames in the worker error's traceback form a reference cycle with it, which would
                    # keep the loader's iterator, and its worker processes, until a garbage collection happens to run.
                    traceback.clear_frames(exc.__traceback__)
                raise error from None
            epoch, skip = epoch + 1, 0
