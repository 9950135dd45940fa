"""``build_datasets``: the ``data`` section of a config -> the training and validation datasets.

The one function of the package that reads a config object; everything it calls takes plain arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.data import Dataset

from ..errors import DataError
from .datasets import PairedFolderDataset, PairedImageDataset, SIDDValidationDataset, SyntheticDataset, limit_dataset
from .frames import AveragedFramesDataset, frame_sequences
from .pairs import folder_images, gopro_pairs, sidd_train_pairs
from .sample import sample_images, sample_weights
from .shards import ShardTrainDataset, ShardValDataset

if TYPE_CHECKING:  # the config imports nothing from here at run time either way; this keeps the two apart
    from ..config import DataConfig

__all__ = ["build_datasets", "build_train_dataset", "build_val_dataset"]

_UNKNOWN_FORMAT = "Unknown data.format {!r}; use sample, folder, synthetic, frames, sidd, gopro or shards."


def build_datasets(cfg: DataConfig, *, seed: int) -> tuple[Dataset, Dataset | None]:
    """The training and validation datasets described by ``cfg`` (the config's ``data`` section).

    ``cfg.format``:

    * ``sample``: scikit-image's photographs (fixed split, see :mod:`.sample`), degraded by ``cfg.degradations``;
    * ``folder``: paired folders ``train_lq``/``train_gt`` and ``val_lq``/``val_gt``;
    * ``synthetic``: clean folders ``train_dir`` and ``val_dir`` degraded by ``cfg.degradations``;
    * ``frames``: folders of video frame sequences ``train_dir`` and ``val_dir``, ``cfg.frames`` consecutive frames
      averaged into a blurry input (see :mod:`.frames`), then degraded by ``cfg.degradations``;
    * ``sidd``: SIDD-Medium sRGB under ``root`` (``Data/`` for training, the validation ``.mat`` blocks);
    * ``gopro``: GoPro under ``root`` (``train/`` for training, ``test/`` for validation);
    * ``shards``: the folder ``nafrestore prepare`` wrote (``shards``), streamed (see :mod:`.shards`); validation
      from its ``val`` shards, none (None) when it has none.

    The training set yields random ``cfg.patch_size`` crops with the configured flips/rotations; the validation
    set whole images with names, at most ``cfg.val_max_images`` of them (evenly spaced). ``seed`` fixes the
    validation degradations.

    Raises:
        DataError: missing folders or files, or unmatched pairs.
    """
    train = build_train_dataset(cfg, seed=seed)
    if isinstance(train, ShardTrainDataset) and not train.has_validation:
        return train, None  # the source had no validation images: training runs without validation
    return train, build_val_dataset(cfg, seed=seed)


def build_train_dataset(cfg: DataConfig, *, seed: int) -> Dataset:
    """The training half of :func:`build_datasets` (random crops)."""
    crops = {"patch_size": cfg.patch_size, "flip": cfg.flip, "rot90": cfg.rot90}
    if cfg.format == "sample":
        images = sample_images("train")
        return SyntheticDataset(
            [image for _, image in images], cfg.degradations, seed=seed, names=[n for n, _ in images],
            weights=sample_weights(images), target_degradations=cfg.target_degradations, **crops,
        )  # fmt: skip
    if cfg.format == "folder":
        return PairedFolderDataset(cfg.train_lq, cfg.train_gt, cache=cfg.cache, **crops)  # type: ignore[arg-type]
    if cfg.format == "synthetic":
        paths, names = folder_images(cfg.train_dir, "data.train_dir")  # type: ignore[arg-type]
        return SyntheticDataset(
            paths, cfg.degradations, target_degradations=cfg.target_degradations, names=names, seed=seed,
            cache=cfg.cache, **crops,
        )  # fmt: skip
    if cfg.format == "frames":
        sequences = frame_sequences(cfg.train_dir, "data.train_dir", cfg.frames[0])  # type: ignore[arg-type]
        return AveragedFramesDataset(sequences, cfg.frames, cfg.degradations, seed=seed, cache=cfg.cache, **crops)
    if cfg.format == "sidd":
        return PairedImageDataset(sidd_train_pairs(cfg.root), cache=cfg.cache, **crops)  # type: ignore[arg-type]
    if cfg.format == "gopro":
        return PairedImageDataset(gopro_pairs(cfg.root, "train"), cache=cfg.cache, **crops)  # type: ignore[arg-type]
    if cfg.format == "shards":
        folder: str = cfg.shards  # type: ignore[assignment]  # set: the config checks it
        return ShardTrainDataset(
            folder, shuffle_buffer=cfg.shuffle_buffer, degradations=cfg.degradations,
            target_degradations=cfg.target_degradations, **crops,
        )  # fmt: skip
    raise DataError(_UNKNOWN_FORMAT.format(cfg.format))


def build_val_dataset(cfg: DataConfig, *, seed: int) -> Dataset:
    """The validation half of :func:`build_datasets` (whole images with names); needs none of the training data,
    so ``nafrestore eval RUN`` works where only the validation images are."""
    if cfg.format == "sample":
        images = sample_images("val")
        val: Dataset = SyntheticDataset(
            [image for _, image in images], cfg.degradations, target_degradations=cfg.target_degradations,
            seed=seed, names=[n for n, _ in images],
        )  # fmt: skip
    elif cfg.format == "folder":
        val = PairedFolderDataset(cfg.val_lq, cfg.val_gt, cache=cfg.cache)  # type: ignore[arg-type]
    elif cfg.format == "synthetic":
        paths, names = folder_images(cfg.val_dir, "data.val_dir")  # type: ignore[arg-type]
        val = SyntheticDataset(
            paths, cfg.degradations, target_degradations=cfg.target_degradations, names=names, seed=seed,
            cache=cfg.cache,
        )  # fmt: skip
    elif cfg.format == "frames":
        sequences = frame_sequences(cfg.val_dir, "data.val_dir", cfg.frames[1])  # type: ignore[arg-type]
        val = AveragedFramesDataset(sequences, cfg.frames, cfg.degradations, seed=seed, cache=cfg.cache)
    elif cfg.format == "sidd":
        val = SIDDValidationDataset(cfg.root)  # type: ignore[arg-type]
    elif cfg.format == "gopro":
        val = PairedImageDataset(gopro_pairs(cfg.root, "test"), cache=cfg.cache)  # type: ignore[arg-type]
    elif cfg.format == "shards":
        val = ShardValDataset(
            cfg.shards,  # type: ignore[arg-type]
            degradations=cfg.degradations, target_degradations=cfg.target_degradations, seed=seed,
        )  # fmt: skip
    else:
        raise DataError(_UNKNOWN_FORMAT.format(cfg.format))
    return limit_dataset(val, cfg.val_max_images)
