"""Data: image I/O, synthetic degradations, paired datasets and their loaders.

:func:`build_datasets` (``build``) turns the ``data`` section of a config into a training and a validation dataset;
:func:`build_train_loader` and :func:`build_val_loader` (``loaders``) wrap them in DataLoaders. Pairing files is
:mod:`.pairs`' job, decoding and encoding :mod:`.io`'s. See :mod:`.datasets` for the item format (dicts with
``lq``/``gt`` (3, H, W) float32 tensors in [0, 1], and ``name`` in validation). ``nafrestore prepare``
(:mod:`.prepare`) crops large datasets into tar shards, which the ``shards`` format streams (:mod:`.shards`).
"""

from __future__ import annotations

from .build import build_datasets, build_train_dataset, build_val_dataset
from .datasets import (
    PairedFolderDataset,
    PairedImageDataset,
    SIDDValidationDataset,
    SyntheticDataset,
    limit_dataset,
)
from .degradations import DEGRADATIONS, Degradation, build_degradation, seed_for
from .io import IMAGE_EXTENSIONS, LoadedImage, list_images, load_image, read_image, read_image_size, save_image
from .loaders import BatchStream, TrainSampler, build_train_loader, build_val_loader
from .pairs import folder_images, gopro_pairs, match_pairs, sidd_train_pairs
from .prepare import PREPARE_FORMATS, PrepareInterrupted, PrepareReport, crop_grid, prepare_shards
from .sample import sample_images, sample_weights
from .shards import ShardTrainDataset, ShardValDataset, check_data_order, epoch_segments, load_shard_index

__all__ = [
    "DEGRADATIONS",
    "IMAGE_EXTENSIONS",
    "PREPARE_FORMATS",
    "BatchStream",
    "Degradation",
    "LoadedImage",
    "PairedFolderDataset",
    "PairedImageDataset",
    "PrepareInterrupted",
    "PrepareReport",
    "SIDDValidationDataset",
    "ShardTrainDataset",
    "ShardValDataset",
    "SyntheticDataset",
    "TrainSampler",
    "build_datasets",
    "build_train_dataset",
    "build_val_dataset",
    "build_degradation",
    "build_train_loader",
    "build_val_loader",
    "check_data_order",
    "crop_grid",
    "epoch_segments",
    "folder_images",
    "gopro_pairs",
    "limit_dataset",
    "list_images",
    "load_image",
    "load_shard_index",
    "match_pairs",
    "prepare_shards",
    "read_image",
    "read_image_size",
    "sample_images",
    "sample_weights",
    "save_image",
    "seed_for",
    "sidd_train_pairs",
]
