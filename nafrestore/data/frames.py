"""Blurry/sharp pairs made from consecutive sharp video frames, the way the GoPro dataset was made.

Nah, Kim and Lee ("Deep Multi-scale Convolutional Neural Network for Dynamic Scene Deblurring", CVPR 2017)
averaged 7-13 consecutive frames of a 240 fps video in linear light (the camera's response approximated by gamma
2.2) into one blurry frame, with the middle sharp frame as its target. :class:`AveragedFramesDataset` does the
same with a folder of a user's own high-speed video frames: the blur is real camera shake and real object motion.

Layout: every folder under the root that holds images directly is one sequence; its frames are in file-name
order (so number them with leading zeros: ``clip1/000001.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..utils.pixels import to_float, to_tensor
from .datasets import PairDataset, want_cache
from .degradations import Degradation, build_degradation, from_linear, seed_for, to_linear
from .io import list_images, load_rgb_integer, read_image_size
from .pairs import first_few
from .transforms import random_crop, random_dihedral

__all__ = ["GOPRO_GAMMA", "AveragedFramesDataset", "average_frames", "frame_sequences"]

#: The gamma with which GoPro's authors approximated the camera response to average frames in linear light.
GOPRO_GAMMA = 2.2


def average_frames(frames: Sequence[np.ndarray], gamma: float = GOPRO_GAMMA) -> np.ndarray:
    """The mean of frames in linear light: ``(mean(frame ** gamma)) ** (1 / gamma)``.

    Args:
        frames: K >= 1 (H, W, 3) arrays, uint8/uint16 or float in [0, 1], all of one size.
        gamma: the camera response's gamma (1 averages the encoded values).

    Returns:
        (H, W, 3) float32 in [0, 1]; the frame itself when all K are the same (a static scene).
    """
    if not frames:
        raise ValueError("average_frames needs at least one frame")
    total = np.zeros(np.shape(frames[0]), np.float32)
    for frame in frames:
        total += to_linear(to_float(frame), gamma)
    return from_linear(total / np.float32(len(frames)), gamma)


def frame_sequences(root: str | Path, key: str, min_frames: int) -> list[tuple[str, list[Path]]]:
    """The sequences under ``root``: ``[(folder relative to root, frame paths in name order), ...]``.

    Raises:
        DataError: naming ``key`` when the folder is missing, holds no images, or no sequence has ``min_frames``
            frames (sequences shorter than that are skipped and named when all are).
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"{key} folder {folder} does not exist. Set {key} to a folder of video frame sequences.")
    by_folder: dict[Path, list[Path]] = {}
    for path in list_images(folder):
        by_folder.setdefault(path.parent, []).append(path)
    if not by_folder:
        raise DataError(
            f"{key} folder {folder} holds no images. Put each video's consecutive sharp frames in a folder of its "
            "own under it (clip1/000001.png, clip1/000002.png, ...)."
        )
    sequences = [
        (parent.relative_to(folder).as_posix(), sorted(paths, key=lambda p: p.name))
        for parent, paths in sorted(by_folder.items())
    ]
    long_enough = [(name, paths) for name, paths in sequences if len(paths) >= min_frames]
    if not long_enough:
        short = [f"{name or '.'} ({len(paths)})" for name, paths in sequences]
        raise DataError(
            f"{key} folder {folder}: no sequence has the {min_frames} frames data.frames asks for (frames per "
            f"sequence: {first_few(short)}). Add frames or lower data.frames."
        )
    return long_enough


class AveragedFramesDataset(PairDataset):
    """Blurry/sharp pairs by averaging K consecutive frames in linear light, the middle frame as the target.

    Training (``patch_size`` set): each sample picks a sequence (in proportion to its frame count), K uniformly
    from ``frames``, a start, a crop and a symmetry, all from its own generator; the K crops are averaged
    (:func:`average_frames`) and then go through ``degradations`` (noise and JPEG on top of the blur). For even K
    the target is frame ``K // 2`` of the window (0-based), the later of the two middle ones. Validation: each
    sequence is cut into consecutive windows of ``frames[1]`` frames; a window's K and its degradations are drawn
    from a generator seeded by its name (``sequence/middle-frame``), so they are the same in every run.

    Args:
        sequences: ``[(name, [frame paths]), ...]``, as from :func:`frame_sequences`; frames of a sequence must
            share one size.
        frames: ``(lo, hi)`` range of K, 1 <= lo <= hi (GoPro: 7-13).
        degradations: config specs or a built degradation applied to the averaged frame (``[]`` for none).
        patch_size, flip, rot90, seed, cache, min_epoch_length: as in
            :class:`~nafrestore.data.datasets.SyntheticDataset`.
        gamma: the camera response's gamma (default GoPro's 2.2).
    """

    def __init__(
        self,
        sequences: Sequence[tuple[str, Sequence[str | Path]]],
        frames: tuple[int, int] = (7, 13),
        degradations: Sequence[dict[str, Any]] | Degradation = (),
        *,
        patch_size: int | None = None,
        flip: bool = False,
        rot90: bool = False,
        seed: int = 0,
        cache: str = "auto",
        min_epoch_length: int = 1000,
        gamma: float = GOPRO_GAMMA,
    ) -> None:
        lo, hi = (int(k) for k in frames)
        if not 1 <= lo <= hi:
            raise ValueError(f"frames must be a range [lo, hi] with 1 <= lo <= hi, got {frames!r}")
        self.frames = (lo, hi)
        self.gamma = float(gamma)
        self.seed = int(seed)
        self.sequences = [(str(name), [Path(p) for p in paths]) for name, paths in sequences]
        self.degrade = degradations if isinstance(degradations, Degradation) else build_degradation(degradations)
        # Training draws from whole sequences; validation from fixed windows of `hi` frames.
        self.windows = [
            (s, start) for s, (_, paths) in enumerate(self.sequences) for start in range(0, len(paths) - hi + 1, hi)
        ]
        training = patch_size is not None
        super().__init__(
            len(self.sequences) if training else len(self.windows),
            patch_size=patch_size,
            flip=flip,
            rot90=rot90,
            min_epoch_length=min_epoch_length,
            weights=[max(0, len(paths) - lo + 1) for _, paths in self.sequences] if training else None,
        )
        self._check_sizes()
        #: One name per item, as every dataset has (validation checks and scores go by it): the sequence in
        #: training, ``sequence/middle-frame`` of the window actually averaged in validation.
        self.names = (
            [name or "." for name, _ in self.sequences]
            if training
            else [self.window_name(s, first, count) for s, first, count, _ in map(self._val_window, range(len(self)))]
        )
        paths = [p for _, seq in self.sequences for p in seq]
        self._cache = {p: load_rgb_integer(p) for p in paths} if want_cache(cache, paths) else None

    def _check_sizes(self) -> None:
        bad = []
        for name, paths in self.sequences:
            sizes = {read_image_size(p) for p in paths}
            if len(sizes) > 1:
                bad.append(f"{name or '.'} ({', '.join(f'{w}x{h}' for h, w in sorted(sizes))})")
        if bad:
            raise DataError(
                f"{len(bad)} frame sequence(s) mix frame sizes: {first_few(bad)}. The frames of one sequence must "
                "come from one video at one size."
            )

    def _frame(self, path: Path) -> np.ndarray:
        return self._cache[path] if self._cache is not None else load_rgb_integer(path)

    def item_size(self, i: int) -> tuple[int, int]:
        """(height, width) of item ``i``'s frames (a sequence in training, a window in validation)."""
        s = i if self.training else self.windows[i][0]
        return read_image_size(self.sequences[s][1][0])

    def window_name(self, s: int, first: int, count: int) -> str:
        """``sequence/middle-frame-stem``: the name of the window of ``count`` frames from ``first``."""
        name, paths = self.sequences[s]
        middle = paths[first + count // 2].stem
        return f"{name}/{middle}" if name else middle

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        i, rng = self._resolve(index)
        if rng is None:
            return self._validation_item(i)
        _, paths = self.sequences[i]
        count = int(rng.integers(self.frames[0], min(self.frames[1], len(paths)) + 1))
        first = int(rng.integers(0, len(paths) - count + 1))
        crops = random_crop([self._frame(p) for p in paths[first : first + count]], self.patch_size, rng)
        crops = random_dihedral(crops, rng, flip=self.flip, rot90=self.rot90)
        gt = to_float(np.ascontiguousarray(crops[count // 2]))
        blurry = average_frames(crops, self.gamma)
        return {"lq": to_tensor(self.degrade(blurry, rng)), "gt": to_tensor(gt)}

    def _val_window(self, i: int) -> tuple[int, int, int, np.random.Generator]:
        """(sequence, first frame, K, generator) of validation item ``i``: K and then the degradations are drawn
        from a generator seeded by the name of the whole window of ``frames[1]`` frames."""
        s, start = self.windows[i]
        hi = self.frames[1]
        rng = np.random.default_rng(seed_for(self.window_name(s, start, hi), self.seed))
        count = int(rng.integers(self.frames[0], hi + 1))
        first = start + (hi - count) // 2  # the window's centre part, so its middle frame stays near the centre
        return s, first, count, rng

    def _validation_item(self, i: int) -> dict[str, Any]:
        s, first, count, rng = self._val_window(i)
        window = [self._frame(p) for p in self.sequences[s][1][first : first + count]]
        lq = self.degrade(average_frames(window, self.gamma), rng)
        return {"lq": to_tensor(lq), "gt": to_tensor(window[count // 2]), "name": self.names[i]}
