"""Datasets of (degraded, clean) image pairs (their loaders are in :mod:`.loaders`, their pairing in :mod:`.pairs`).

Items are dicts of tensors:

* training (``patch_size`` set): ``{"lq": (3, P, P), "gt": (3, P, P)}`` float32 in [0, 1], a random crop with a
  random symmetry (the same for both);
* validation (``patch_size=None``): ``{"lq": (3, H, W), "gt": (3, H, W), "name": str}``, whole images, where
  ``name`` is the path relative to the dataset folder without extension (``"scene1/0001"``), used for reporting and
  for seeding synthetic degradations.

Training randomness (crop, symmetry, degradation) comes from one ``numpy.random.Generator`` per sample. The
training loader (:func:`~nafrestore.data.loaders.build_train_loader`) hands each sample its own seed with the
index (``dataset[(index, seed)]``), drawn from a stream fixed by (seed, rank, epoch): batches are then identical
whatever the number of workers. A plain integer index draws the sample seed from torch's RNG instead, which
DataLoader seeds per worker.

Training sets have a virtual length of at least ``min_epoch_length`` (default 1000) samples, the images being
cycled: training counts iterations, so an "epoch" is only the unit at which the sampler reshuffles, and a
three-image folder should not mean a new DataLoader iterator (and worker round trip) every batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import DataError
from ..utils.pixels import to_float, to_tensor
from .degradations import Degradation, build_degradation, seed_for
from .io import load_rgb_integer, read_image_size
from .pairs import first_few, match_pairs
from .transforms import random_crop, random_dihedral

__all__ = [
    "CACHE_LIMIT_BYTES",
    "PairDataset",
    "PairedFolderDataset",
    "PairedImageDataset",
    "SIDDValidationDataset",
    "SyntheticDataset",
    "build_target",
    "degraded_training_pair",
    "degraded_validation_pair",
    "item_sizes",
    "limit_dataset",
    "training_pair",
    "want_cache",
]

#: ``cache="auto"`` keeps decoded images in memory when they take less than this.
CACHE_LIMIT_BYTES = 2 * 1024**3
# ----------------------------------------------------------------------------------------------------------------
# Datasets


def want_cache(cache: str, paths: Iterable[Path]) -> bool:
    """Whether to keep the decoded images of ``paths`` in memory: ``"always"``, ``"never"``, or ``"auto"`` when
    they take less than :data:`CACHE_LIMIT_BYTES` (estimated from the file headers, read only for ``"auto"``)."""
    if cache == "always":
        return True
    if cache == "never":
        return False
    if cache == "auto":
        return sum(_decoded_bytes(p) for p in paths) < CACHE_LIMIT_BYTES
    raise ValueError(f"cache must be 'auto', 'always' or 'never', got {cache!r}")


def _decoded_bytes(path: Path) -> int:
    """Estimated bytes of a decoded image (RGB; 2 bytes per sample for formats that can hold 16 bits)."""
    height, width = read_image_size(path)
    return height * width * 3 * (2 if path.suffix.lower() in (".png", ".tif", ".tiff") else 1)


# ----------------------------------------------------------------------------------------------------------------
# One sample from decoded images: every dataset (and the shard stream of :mod:`.shards`) makes its items here


def training_pair(
    lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator, *, patch_size: int, flip: bool, rot90: bool
) -> dict[str, torch.Tensor]:
    """A training item from a pixel-aligned pair of (H, W, 3) arrays (uint8/uint16/float): the same random
    ``patch_size`` crop and symmetry of both, as ``{"lq", "gt": (3, P, P) float32 in [0, 1]}``."""
    lq, gt = random_crop([lq, gt], patch_size, rng)
    lq, gt = random_dihedral([lq, gt], rng, flip=flip, rot90=rot90)
    return {"lq": to_tensor(lq), "gt": to_tensor(gt)}


def degraded_training_pair(
    clean: np.ndarray,
    degrade: Degradation,
    rng: np.random.Generator,
    *,
    patch_size: int,
    flip: bool,
    rot90: bool,
    target: Degradation | None = None,
) -> dict[str, torch.Tensor]:
    """A training item from a clean (H, W, 3) image: a random crop and symmetry, then ``degrade`` with the same
    generator (cheaper than degrading whole images). ``{"lq", "gt": (3, P, P) float32 in [0, 1]}``.

    With ``target``, the crop passes through it first and the result is both the target and what ``degrade``
    degrades (e.g. JPEG-compressed targets, so that a model learns to keep the texture of clean camera JPEGs).
    The crop is cut ``degrade.margin`` pixels larger on each side and cropped back after degrading, so a blur
    reads real image content at the patch borders (as it does in a whole photograph), not reflected pixels.
    """
    m = degrade.margin + (target.margin if target is not None else 0)
    (crop,) = random_crop([clean], patch_size + 2 * m, rng)
    (crop,) = random_dihedral([crop], rng, flip=flip, rot90=rot90)
    clean = to_float(np.ascontiguousarray(crop))
    if target is not None:
        clean = target(clean, rng)
    lq = degrade(clean, rng)
    if m:
        lq, clean = lq[m:-m, m:-m], clean[m:-m, m:-m]
    return {"lq": to_tensor(lq), "gt": to_tensor(clean)}


def degraded_validation_pair(
    clean: np.ndarray, degrade: Degradation, *, name: str, seed: int, target: Degradation | None = None
) -> dict[str, Any]:
    """A validation item from a whole clean image, degraded with a generator seeded by ``(name, seed)`` (the same
    in every run and process): ``{"lq", "gt": (3, H, W) float32 in [0, 1], "name": name}``. ``target`` as in
    :func:`degraded_training_pair`, drawn from the same generator."""
    gt = to_float(clean)
    rng = np.random.default_rng(seed_for(name, seed))
    if target is not None:
        gt = target(gt, rng)
    lq = degrade(gt, rng)
    return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": name}


def build_target(specs: Sequence[dict[str, Any]]) -> Degradation | None:
    """The target pipeline of ``data.target_degradations`` (None when empty: the clean image is the target)."""
    return build_degradation(list(specs), key="data.target_degradations") if specs else None


class PairDataset(Dataset):
    """Shared index handling: training (random crops, virtual length) or validation (whole images) mode."""

    #: build_train_loader may pass ``(index, seed)`` tuples to datasets that set this.
    supports_sample_seeds = True

    def __init__(
        self,
        count: int,
        *,
        patch_size: int | None,
        flip: bool,
        rot90: bool,
        min_epoch_length: int,
        weights: Sequence[int] | None = None,
    ) -> None:
        if count == 0:
            raise DataError("The dataset is empty: no images were found.")
        if patch_size is not None and patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        self.patch_size = patch_size
        self.flip = flip
        self.rot90 = rot90
        # Training index table: image i appears weights[i] times, so uniform sampling of the table draws images
        # in proportion to their weights.
        weights = [1] * count if weights is None else [int(w) for w in weights]
        if len(weights) != count or any(w < 0 for w in weights) or not any(weights):
            raise ValueError(f"weights must be {count} non-negative integers, not all zero; got {weights}")
        self._table = [i for i, w in enumerate(weights) for _ in range(w)]
        self._count = count
        repeats = max(1, math.ceil(min_epoch_length / len(self._table)))
        self._length = len(self._table) * repeats if patch_size is not None else count

    @property
    def training(self) -> bool:
        return self.patch_size is not None

    @property
    def num_images(self) -> int:
        """The number of distinct images (``len()`` is larger in training mode)."""
        return self._count

    def __len__(self) -> int:
        return self._length

    def _resolve(self, index: int | tuple[int, int]) -> tuple[int, np.random.Generator | None]:
        """(image index, per-sample generator or None in validation mode) for a dataset index."""
        if isinstance(index, tuple):
            index, seed = index
        elif self.training:
            # Plain indices: the seed comes from torch's RNG, which DataLoader seeds per worker.
            seed = int(torch.randint(0, 2**62, ()).item())
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for a dataset of length {self._length}")
        if not self.training:
            return index, None
        return self._table[index % len(self._table)], np.random.default_rng(seed)


class PairedImageDataset(PairDataset):
    """Degraded/clean pairs from explicit file pairs (see :func:`match_pairs`, :func:`sidd_train_pairs`).

    Args:
        pairs: ``[(name, lq_path, gt_path), ...]``; each pair must have the same height and width (checked at
            construction from the file headers, or from the decoded images when cached).
        patch_size: side of random training crops; None for validation (whole images with names).
        flip, rot90: random symmetries in training (see :func:`~nafrestore.data.transforms.random_dihedral`).
        cache: ``"auto"`` decodes every image once at construction and keeps it in memory (as 8/16-bit samples)
            when that takes less than :data:`CACHE_LIMIT_BYTES` (2 GiB); ``"always"``; ``"never"`` decodes on each
            access. Caching happens before DataLoader workers fork, so they share the memory.
        min_epoch_length: training length is the number of pairs repeated up to at least this.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[str, str | Path, str | Path]],
        *,
        patch_size: int | None = None,
        flip: bool = False,
        rot90: bool = False,
        cache: str = "auto",
        min_epoch_length: int = 1000,
    ) -> None:
        super().__init__(len(pairs), patch_size=patch_size, flip=flip, rot90=rot90, min_epoch_length=min_epoch_length)
        self.pairs = [(str(name), Path(lq), Path(gt)) for name, lq, gt in pairs]
        self.names = [name for name, _, _ in self.pairs]
        self._cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if want_cache(cache, (p for _, lq, gt in self.pairs for p in (lq, gt))):
            self._cache = [(load_rgb_integer(lq), load_rgb_integer(gt)) for _, lq, gt in self.pairs]
            sizes = [(lq.shape[:2], gt.shape[:2]) for lq, gt in self._cache]
        else:
            sizes = [(read_image_size(lq), read_image_size(gt)) for _, lq, gt in self.pairs]
        bad = [
            f"{name} (input {a[1]}x{a[0]} {lq}, target {b[1]}x{b[0]} {gt})"
            for (name, lq, gt), (a, b) in zip(self.pairs, sizes, strict=True)
            if tuple(a) != tuple(b)
        ]
        if bad:
            raise DataError(
                f"{len(bad)} of {len(self.pairs)} image pairs differ in size between input and target: "
                f"{first_few(bad)}. Pairs must be pixel-aligned images of the same size."
            )

    def item_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i`` from its header (or the cache), without decoding it."""
        if self._cache is not None:
            return self._cache[i][1].shape[:2]
        return read_image_size(self.pairs[i][2])

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is not None:
            return self._cache[i]
        _, lq, gt = self.pairs[i]
        lq_img, gt_img = load_rgb_integer(lq), load_rgb_integer(gt)
        if lq_img.shape != gt_img.shape:  # the header check can be fooled (e.g. EXIF PIL could not read)
            raise DataError(
                f"Image pair {self.pairs[i][0]} differs in size: {lq} is {lq_img.shape[:2]}, "
                f"{gt} is {gt_img.shape[:2]}. Pairs must be pixel-aligned images of the same size."
            )
        return lq_img, gt_img

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        i, rng = self._resolve(index)
        lq, gt = self._load(i)
        if rng is None:
            return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": self.names[i]}
        return training_pair(lq, gt, rng, patch_size=self.patch_size, flip=self.flip, rot90=self.rot90)


class PairedFolderDataset(PairedImageDataset):
    """Pairs from an input folder and a target folder, matched by relative path and stem (see :func:`match_pairs`).

    Unmatched files or pairs of different sizes raise :class:`~nafrestore.errors.DataError` at construction with
    counts and the first few names. Other arguments as :class:`PairedImageDataset`.
    """

    def __init__(
        self,
        lq_dir: str | Path,
        gt_dir: str | Path,
        *,
        patch_size: int | None = None,
        flip: bool = False,
        rot90: bool = False,
        cache: str = "auto",
        min_epoch_length: int = 1000,
    ) -> None:
        super().__init__(
            match_pairs(lq_dir, gt_dir),
            patch_size=patch_size,
            flip=flip,
            rot90=rot90,
            cache=cache,
            min_epoch_length=min_epoch_length,
        )
        self.lq_dir, self.gt_dir = Path(lq_dir), Path(gt_dir)


def _as_image_array(image: Any, i: int) -> np.ndarray:
    """An in-memory image as stored: (H, W, 3) uint8/uint16 kept, anything else float32 (assumed [0, 1])."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = image.permute(1, 2, 0).numpy() if image.ndim == 3 and image.shape[0] in (1, 3) else image.numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"image {i} must be (H, W, 3), (H, W) or a (3, H, W) tensor, got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.float32)
    return np.ascontiguousarray(array)


class SyntheticDataset(PairDataset):
    """Clean images degraded on the fly: the degraded version is the input, the clean one the target.

    Training (``patch_size`` set): crop and symmetry first, then degrade the crop with the sample's generator
    (cheaper than degrading whole images; the crop carries the degradation's ``margin`` of context, see
    :func:`degraded_training_pair`). Validation (``patch_size=None``): each whole image is degraded with a
    generator seeded by :func:`~nafrestore.data.degradations.seed_for` ``(name, seed)``, so it is identical in every
    run and process.

    Args:
        images: clean images: paths, (H, W, 3) arrays (float in [0, 1], or uint8/uint16) or (3, H, W) tensors;
            grayscale is replicated to 3 channels.
        degradations: config specs (``[{"type": "gaussian_noise", "sigma": 25}]``) or a built degradation.
        target_degradations: config specs applied to the clean image first, making the target (see
            :func:`degraded_training_pair`); empty: the clean image is the target.
        patch_size: training crop side; None for validation.
        flip, rot90: random symmetries in training.
        seed: base seed of the validation degradations.
        names: one per image; default the file stem for paths and ``"000"``, ``"001"``, ... for arrays.
        weights: integer sampling weight per image in training (e.g. 2 draws an image twice as often).
        cache: for paths, as in :class:`PairedImageDataset`.
        min_epoch_length: as in :class:`PairedImageDataset`.
    """

    def __init__(
        self,
        images: Sequence[str | Path | np.ndarray | torch.Tensor],
        degradations: Sequence[dict[str, Any]] | Degradation,
        *,
        target_degradations: Sequence[dict[str, Any]] = (),
        patch_size: int | None = None,
        flip: bool = False,
        rot90: bool = False,
        seed: int = 0,
        names: Sequence[str] | None = None,
        weights: Sequence[int] | None = None,
        cache: str = "auto",
        min_epoch_length: int = 1000,
    ) -> None:
        images = list(images)
        super().__init__(
            len(images),
            patch_size=patch_size,
            flip=flip,
            rot90=rot90,
            min_epoch_length=min_epoch_length,
            weights=weights,
        )
        self.degrade = degradations if isinstance(degradations, Degradation) else build_degradation(degradations)
        self.target = build_target(target_degradations)
        self.seed = int(seed)
        if names is None:
            names = [Path(x).stem if isinstance(x, str | Path) else f"{i:03d}" for i, x in enumerate(images)]
        if len(names) != len(images):
            raise ValueError(f"got {len(names)} names for {len(images)} images")
        self.names = [str(n) for n in names]
        paths = [Path(x) for x in images if isinstance(x, str | Path)]
        keep = want_cache(cache, paths)
        self._images: list[Path | np.ndarray] = [
            (load_rgb_integer(x) if keep else Path(x)) if isinstance(x, str | Path) else _as_image_array(x, i)
            for i, x in enumerate(images)
        ]

    def item_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i`` from its header (or the array), without decoding it."""
        image = self._images[i]
        return read_image_size(image) if isinstance(image, Path) else image.shape[:2]

    def _load(self, i: int) -> np.ndarray:
        image = self._images[i]
        return load_rgb_integer(image) if isinstance(image, Path) else image

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        i, rng = self._resolve(index)
        clean = self._load(i)
        if rng is None:
            return degraded_validation_pair(clean, self.degrade, name=self.names[i], seed=self.seed, target=self.target)
        return degraded_training_pair(
            clean, self.degrade, rng, patch_size=self.patch_size, flip=self.flip, rot90=self.rot90, target=self.target
        )


class SIDDValidationDataset(Dataset):
    """The SIDD sRGB validation blocks: ``ValidationNoisyBlocksSrgb.mat`` and ``ValidationGtBlocksSrgb.mat``.

    Each file holds a uint8 array (images, blocks, 256, 256, 3), (40, 32, ...) in the real dataset, under the
    variable named like the file. Items are ``{"lq", "gt": (3, 256, 256) float32 in [0, 1], "name": "II_BB"}``
    (image and block numbers, from 00). Both arrays are read at construction (about 250 MB each).
    """

    NOISY = "ValidationNoisyBlocksSrgb"
    GT = "ValidationGtBlocksSrgb"

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        self.noisy = self._read(root / f"{self.NOISY}.mat", self.NOISY)
        self.gt = self._read(root / f"{self.GT}.mat", self.GT)
        if self.noisy.shape != self.gt.shape:
            raise DataError(
                f"SIDD validation arrays differ in shape: {self.NOISY} is {self.noisy.shape}, {self.GT} is "
                f"{self.gt.shape} (in {root}). Re-download the validation .mat files."
            )
        images, blocks = self.noisy.shape[:2]
        self.names = [f"{i:02d}_{b:02d}" for i in range(images) for b in range(blocks)]

    @staticmethod
    def _read(path: Path, variable: str) -> np.ndarray:
        if not path.is_file():
            raise DataError(
                f"SIDD validation file {path} does not exist. data.root must hold {SIDDValidationDataset.NOISY}.mat "
                f"and {SIDDValidationDataset.GT}.mat from the SIDD website (besides Data/)."
            )
        import scipy.io  # imported here: only SIDD needs it, and it takes a while to import

        try:
            content = scipy.io.loadmat(str(path), variable_names=[variable])
        except NotImplementedError as exc:  # MATLAB v7.3 files are HDF5
            raise DataError(
                f"{path} is a MATLAB v7.3 (HDF5) file, which scipy cannot read. Re-save it with "
                "MATLAB's save(..., '-v7') or download the original SIDD file."
            ) from exc
        except Exception as exc:
            raise DataError(f"{path} cannot be read as a MATLAB .mat file ({exc}). Re-download it.") from exc
        if variable not in content:
            raise DataError(
                f"{path} has no variable {variable!r} (found: {', '.join(k for k in content if k[:2] != '__')})."
            )
        array = content[variable]
        if array.ndim != 5 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise DataError(
                f"{path}: {variable} should be a uint8 array (images, blocks, H, W, 3); got "
                f"{array.dtype} {array.shape}."
            )
        return array

    def __len__(self) -> int:
        return len(self.names)

    def item_size(self, i: int) -> tuple[int, int]:
        return self.gt.shape[2], self.gt.shape[3]

    def __getitem__(self, index: int) -> dict[str, Any]:
        blocks = self.noisy.shape[1]
        i, b = divmod(int(index), blocks)
        return {"lq": to_tensor(self.noisy[i, b]), "gt": to_tensor(self.gt[i, b]), "name": self.names[index]}


def limit_dataset(dataset: Dataset, max_items: int | None) -> Dataset:
    """At most ``max_items`` items, evenly spaced over the dataset (more representative than the first few, e.g.
    of SIDD, whose consecutive blocks come from the same photograph). None or enough items: unchanged."""
    if max_items is None or max_items >= len(dataset):
        return dataset
    indices = np.linspace(0, len(dataset) - 1, max_items).round().astype(int).tolist()
    subset = Subset(dataset, indices)
    if hasattr(dataset, "names"):
        subset.names = [dataset.names[i] for i in indices]  # type: ignore[attr-defined]
    return subset


def item_sizes(dataset: Dataset) -> Iterator[tuple[str, int, int]]:
    """(name, height, width) of each whole image of a validation dataset (a :func:`limit_dataset` subset too), read
    from headers; nothing for datasets that cannot tell (those without ``item_size``)."""
    base, indices = dataset, range(len(dataset))  # type: ignore[arg-type]
    if isinstance(dataset, Subset):
        base, indices = dataset.dataset, dataset.indices
    if not hasattr(base, "item_size"):
        return
    for i in indices:
        height, width = base.item_size(i)
        yield str(base.names[i]), int(height), int(width)
