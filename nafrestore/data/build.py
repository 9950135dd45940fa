"""``build_datasets``: the ``data`` section of a config -> the training and validation datasets.

The one function of the package that reads a config object; everything it calls takes plain arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import PairedFolderDataset, PairedImageDataset, SIDDValidationDataset, SyntheticDataset, limit_dataset
from .pairs import folder_images, gopro_pairs, sidd_train_pairs
from .sample import sample_images, sample_weights

if TYPE_CHECKING:  # the config imports nothing from here at run time either way; this keeps the two apart
    from ..config import DataConfig

__all__ = ["build_datasets"]


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
