"""Data: image I/O, synthetic degradations, paired datasets and their loaders.

:func:`build_datasets` turns the ``data`` section of a config into a training and a validation dataset;
:func:`build_train_loader` and :func:`build_val_loader` wrap them in DataLoaders. See :mod:`.datasets` for the
item format (dicts with ``lq``/``gt`` (3, H, W) float32 tensors in [0, 1], and ``name`` in validation).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DataError
from .datasets import (
    PairedFolderDataset,
    PairedImageDataset,
    SIDDValidationDataset,
    SyntheticDataset,
    TrainSampler,
    build_train_loader,
    build_val_loader,
    gopro_pairs,
    limit_dataset,
    match_pairs,
    sidd_train_pairs,
)
from .degradations import DEGRADATIONS, Degradation, build_degradation, seed_for
from .io import IMAGE_EXTENSIONS, LoadedImage, list_images, load_image, read_image, read_image_size, save_image
from .sample import sample_images, sample_weights

__all__ = [
    "DEGRADATIONS",
    "IMAGE_EXTENSIONS",
    "Degradation",
    "LoadedImage",
    "PairedFolderDataset",
    "PairedImageDataset",
    "SIDDValidationDataset",
    "SyntheticDataset",
    "TrainSampler",
    "build_datasets",
    "build_degradation",
    "build_train_loader",
    "folder_images",
    "build_val_loader",
    "gopro_pairs",
    "limit_dataset",
    "list_images",
    "load_image",
    "match_pairs",
    "read_image",
    "read_image_size",
    "sample_images",
    "save_image",
    "seed_for",
    "sidd_train_pairs",
]


def folder_images(folder: str | Path, key: str) -> tuple[list[Path], list[str]]:
    """Images under a folder and their names (relative path without extension).

    Raises:
        DataError: naming ``key`` (the option or config key that gave the folder) when it is missing or empty.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{key} folder {root} does not exist. Set {key} to a folder of clean images.")
    paths = list_images(root)
    if not paths:
        raise DataError(f"{key} folder {root} holds no images. Add .png/.jpg/.tif images or fix {key}.")
    return paths, [p.relative_to(root).with_suffix("").as_posix() for p in paths]


def build_datasets(cfg: DataConfig, *, seed: int) -> tuple[Dataset, Dataset]:
    """The training and validation datasets described by ``cfg`` (the config's ``data`` section).

    ``cfg.format``:

    * ``sample``: scikit-image's photographs (fixed split, see :mod:`.sample`), degraded by ``cfg.degradations``;
    * ``folder``: paired folders ``train_lq``/``train_gt`` and ``val_lq``/``val_gt``;
    * ``synthetic``: clean folders ``train_dir`` and ``val_dir`` degraded by ``cfg.degradations``;
    * ``sidd``: SIDD-Medium sRGB under ``root`` (``Data/`` for training, the validation ``.mat`` blocks);
    * ``gopro``: GoPro under ``root`` (``train/`` for training, ``test/`` for validation).

    The training set yields random ``cfg.patch_size`` crops with the configured flips/rotations; the validation
    set whole images with names, at most ``cfg.val_max_images`` of them (evenly spaced). ``seed`` fixes the
    validation degradations.

    Raises:
        DataError: missing folders or files, unmatched pairs, or no validation source for ``folder``/``synthetic``.
    """
    train_args = {"patch_size": cfg.patch_size, "flip": cfg.flip, "rot90": cfg.rot90}
    fmt = cfg.format
    if fmt == "sample":
        train_images, val_images = sample_images("train"), sample_images("val")
        train = SyntheticDataset(
            [image for _, image in train_images], cfg.degradations, seed=seed, names=[n for n, _ in train_images],
            weights=sample_weights(train_images), **train_args,
        )  # fmt: skip
        val = SyntheticDataset(
            [image for _, image in val_images], cfg.degradations, seed=seed, names=[n for n, _ in val_images]
        )
    elif fmt == "folder":
        if cfg.val_lq is None or cfg.val_gt is None:
            raise DataError(
                "data.format is 'folder' but data.val_lq and/or data.val_gt is not set. Validation needs paired "
                "folders too: set both (they may point at a held-out part of your data)."
            )
        train = PairedFolderDataset(cfg.train_lq, cfg.train_gt, cache=cfg.cache, **train_args)
        val = PairedFolderDataset(cfg.val_lq, cfg.val_gt, cache=cfg.cache)
    elif fmt == "synthetic":
        if cfg.val_dir is None:
            raise DataError(
                "data.format is 'synthetic' but data.val_dir is not set. Set it to a folder of clean validation "
                "images (kept apart from data.train_dir)."
            )
        paths, names = folder_images(cfg.train_dir, "data.train_dir")
        train = SyntheticDataset(paths, cfg.degradations, names=names, seed=seed, cache=cfg.cache, **train_args)
        paths, names = folder_images(cfg.val_dir, "data.val_dir")
        val = SyntheticDataset(paths, cfg.degradations, names=names, seed=seed, cache=cfg.cache)
    elif fmt == "sidd":
        train = PairedImageDataset(sidd_train_pairs(cfg.root), cache=cfg.cache, **train_args)
        val = SIDDValidationDataset(cfg.root)
    elif fmt == "gopro":
        train = PairedImageDataset(gopro_pairs(cfg.root, "train"), cache=cfg.cache, **train_args)
        val = PairedImageDataset(gopro_pairs(cfg.root, "test"), cache=cfg.cache)
    else:  # DataConfig's Literal type should have caught it
        raise DataError(f"Unknown data.format {fmt!r}; use sample, folder, synthetic, sidd or gopro.")
    return train, limit_dataset(val, cfg.val_max_images)
