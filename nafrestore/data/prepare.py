"""``nafrestore prepare``: large training images -> overlapping sub-images in tar shards, read by the ``shards`` format.

Why: a SIDD-Medium frame is a 16-megapixel PNG (up to 5328x3000); decoding one for each 256 px training crop makes
the loader, not the model, set the speed. BasicSR crops the frames once, before training, into 512 px sub-images
with a 384 px step (``extract_subimages.py``, then LMDB); nafrestore crops them the same way and writes the
sub-images into tar shards (the WebDataset layout), which :mod:`.shards` streams, each process reading its own
part, so that many nodes can train from them without a shared index.

``DST`` after a run:

* ``train-000000.tar``, ...: the training samples. A split's sample list is deterministic (every crop of every
  image, images in name order, crops row by row) and shard ``k`` holds samples ``[k * shard_size, (k + 1) *
  shard_size)`` of it, so a re-run knows what each shard holds and skips the shards that exist. A sample is
  three members: ``<key>.lq.png`` and ``<key>.gt.png`` (input and target side by side, lossless PNG, 8 or 16 bits
  as in the source) and ``<key>.json`` (``name`` of the source image, ``top``, ``left``, ``height``, ``width`` of
  the crop); ``key`` is the sample's position in the list (``00000042``). Sources without an input image
  (``synthetic``: clean images, degraded while training) have no ``.lq.png``.
* ``val-000000.tar``, ...: the validation images, whole (validation scores whole images), in the same format.
* ``plan.json``: the settings and a digest of each split's images, written first: a re-run with other settings
  or other images is refused instead of mixing two preparations in one folder.
* ``index.json``: written last, once every shard is complete (:func:`prepare_shards` lists its fields). The
  ``shards`` format refuses a folder without one.

Each shard is written under a temporary name and renamed when complete (:mod:`nafrestore.utils.files`), so a
crash or Ctrl-C never leaves a partial file under a shard's name; the next run removes the temporary files.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import webdataset as wds  # the tar layout WebDataset reads: <key>.<ext> members, a sample's members together
from tqdm import tqdm

from ..errors import DataError, NafrestoreError
from ..utils.files import atomic_write, make_folder, remove_stale_temporaries
from ..utils.tiles import tile_starts
from ..version import __version__
from .datasets import PairedImageDataset, SIDDValidationDataset
from .io import encode_png, load_rgb_integer, read_image_size
from .pairs import folder_images, gopro_pairs, match_pairs, sidd_train_pairs

__all__ = [
    "INDEX_VERSION",
    "PREPARE_FORMATS",
    "Crop",
    "PrepareInterrupted",
    "PrepareReport",
    "crop_grid",
    "prepare_shards",
    "shard_name",
]

#: The sources ``prepare`` reads (the data formats of the same names).
PREPARE_FORMATS = ("sidd", "gopro", "folder", "synthetic")
#: ``format_version`` of index.json; :mod:`.shards` refuses other versions.
INDEX_VERSION = 1


class PrepareInterrupted(NafrestoreError):
    """Ctrl-C (or SIGTERM) stopped ``prepare``; the finished shards are kept and a re-run skips them."""

    exit_code = 130


def shard_name(split: str, k: int) -> str:
    """The file name of shard ``k`` of a split: ``train-000012.tar``."""
    return f"{split}-{k:06d}.tar"


def crop_grid(height: int, width: int, crop_size: int, step: int) -> list[tuple[int, int, int, int]]:
    """The sub-images BasicSR's ``extract_subimages.py`` cuts from an image (its ``thresh_size`` 0).

    Windows start every ``step`` pixels along each side, plus one flush with the far edge when the last regular
    one stops short of it (so every pixel is covered); a side shorter than ``crop_size`` gives one window of its
    whole length. A 5328x3000 SIDD frame at 512/384 gives 14 x 8 = 112 sub-images.

    Returns:
        ``[(top, left, height, width), ...]`` row by row.
    """
    # The same windows as inference tiles that overlap by crop_size - step pixels.
    tops, lefts = tile_starts(height, crop_size, crop_size - step), tile_starts(width, crop_size, crop_size - step)
    crop_h, crop_w = min(crop_size, height), min(crop_size, width)
    return [(top, left, crop_h, crop_w) for top in tops for left in lefts]


@dataclass(frozen=True)
class Crop:
    """One sample: a window of image ``image`` of its split (the whole image for validation)."""

    image: int
    top: int
    left: int
    height: int
    width: int


# ----------------------------------------------------------------------------------------------------------------
# The images of a split: names, sizes and how a worker process loads them


class _FileImages:
    """Images in files: input/target pairs, or clean images alone (``lq`` None). Pickled to worker processes."""

    in_process_only = False

    def __init__(self, names: list[str], gt: list[Path], lq: list[Path] | None, sizes: list[tuple[int, int]]) -> None:
        self.names, self.gt, self.lq, self.sizes = names, gt, lq, sizes

    @property
    def paired(self) -> bool:
        return self.lq is not None

    def load(self, i: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(input or None, target): (H, W, 3) uint8/uint16."""
        gt = load_rgb_integer(self.gt[i])
        if self.lq is None:
            return None, gt
        lq = load_rgb_integer(self.lq[i])
        if lq.shape != gt.shape:  # the header check at planning can be fooled (e.g. an EXIF orientation)
            raise DataError(
                f"Image pair {self.names[i]} differs in size: {self.lq[i]} is {lq.shape[:2]}, {self.gt[i]} is "
                f"{gt.shape[:2]}. Pairs must be pixel-aligned images of the same size."
            )
        return lq, gt


class _BlockImages:
    """SIDD's validation blocks, arrays (images, blocks, H, W, 3) read from the .mat files: written by the main
    process (sending them to every worker would copy 500 MB per shard)."""

    in_process_only = True
    paired = True

    def __init__(self, root: Path) -> None:
        self.blocks = SIDDValidationDataset(root)
        self.names = list(self.blocks.names)
        self.sizes = [self.blocks.item_size(i) for i in range(len(self.names))]

    def load(self, i: int) -> tuple[np.ndarray | None, np.ndarray]:
        image, block = divmod(i, self.blocks.noisy.shape[1])
        return self.blocks.noisy[image, block], self.blocks.gt[image, block]


def _pairs_images(pairs: Sequence[tuple[str, Path, Path]]) -> _FileImages:
    checked = PairedImageDataset(pairs, cache="never")  # one size per pair, from the file headers (else DataError)
    sizes = [tuple(checked.item_size(i)) for i in range(len(pairs))]
    return _FileImages([n for n, _, _ in pairs], [g for _, _, g in pairs], [q for _, q, _ in pairs], sizes)  # type: ignore[arg-type]


def _clean_images(folder: Path, what: str) -> _FileImages:
    paths, names = folder_images(folder, what)
    return _FileImages(names, paths, None, [read_image_size(p) for p in paths])


def _paired_folder(folder: Path, what: str) -> _FileImages:
    if not ((folder / "lq").is_dir() and (folder / "gt").is_dir()):
        raise DataError(
            f"`prepare folder` reads {what} as two sub-folders, {folder / 'lq'} (inputs) and {folder / 'gt'} "
            "(targets), paired by relative path and file name without extension; they are not both there. Put the "
            "images there (or link them), or check the path."
        )
    return _pairs_images(match_pairs(folder / "lq", folder / "gt"))


def _sources(fmt: str, src: Path, val: Path | None) -> tuple[dict[str, Any], list[str]]:
    """({"train": images, "val": images or absent}, notes) for a source format."""
    if fmt not in PREPARE_FORMATS:
        raise DataError(f"prepare: unknown format {fmt!r}; use one of {', '.join(PREPARE_FORMATS)}.")
    if val is not None and fmt in ("sidd", "gopro"):
        raise DataError(f"--val is for folder and synthetic sources; {fmt} finds its validation images in SRC.")
    splits: dict[str, Any] = {}
    notes: list[str] = []
    if fmt == "sidd":
        splits["train"] = _pairs_images(sidd_train_pairs(src, "SRC"))
        mats = [src / f"Validation{kind}BlocksSrgb.mat" for kind in ("Noisy", "Gt")]
        if all(m.is_file() for m in mats):
            splits["val"] = _BlockImages(src)
        else:
            notes.append(f"no validation shards: {src} lacks {mats[0].name} / {mats[1].name}")
    elif fmt == "gopro":
        splits["train"] = _pairs_images(gopro_pairs(src, "train", "SRC"))
        if (src / "test").is_dir():
            splits["val"] = _pairs_images(gopro_pairs(src, "test", "SRC"))
        else:
            notes.append(f"no validation shards: {src / 'test'} does not exist")
    elif fmt == "folder":
        splits["train"] = _paired_folder(src, "SRC")
        if val is not None:
            splits["val"] = _paired_folder(val, "--val")
    else:
        splits["train"] = _clean_images(src, "SRC")
        if val is not None:
            splits["val"] = _clean_images(val, "--val")
    if fmt in ("folder", "synthetic") and val is None:
        notes.append("no validation shards: give --val to add some")
    return splits, notes


def _crops(images: Any, crop_size: int | None, step: int) -> list[Crop]:
    """Every sub-image of every image (whole images when ``crop_size`` is None), in the deterministic order."""
    out: list[Crop] = []
    for i, (height, width) in enumerate(images.sizes):
        grid = [(0, 0, height, width)] if crop_size is None else crop_grid(height, width, crop_size, step)
        out.extend(Crop(i, *window) for window in grid)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writing one shard (in a worker process)


@dataclass
class _ShardJob:
    path: Path
    images: Any  # _FileImages or _BlockImages
    samples: list[tuple[int, Crop]]  # (position in the split's list, crop)
    compression: int


def _write_shard(job: _ShardJob) -> int:
    """Writes one shard (to a temporary name, renamed when complete); returns its sample count.

    Consecutive samples mostly come from the same image (its crops are adjacent in the list), which is decoded once.
    """
    loaded: tuple[int, np.ndarray | None, np.ndarray] | None = None
    with atomic_write(job.path) as f, wds.TarWriter(f, encoder=False, mtime=0) as tar:  # mtime 0: same bytes each run
        for position, crop in job.samples:
            if loaded is None or loaded[0] != crop.image:
                loaded = (crop.image, *job.images.load(crop.image))
            _, lq, gt = loaded
            window = (slice(crop.top, crop.top + crop.height), slice(crop.left, crop.left + crop.width))
            meta = {"name": job.images.names[crop.image], "top": crop.top, "left": crop.left,
                    "height": crop.height, "width": crop.width}  # fmt: skip
            sample = {"__key__": f"{position:08d}", "json": json.dumps(meta).encode()}
            sample["gt.png"] = encode_png(gt[window], compression=job.compression)
            if lq is not None:
                sample["lq.png"] = encode_png(lq[window], compression=job.compression)
            tar.write(sample)
    return len(job.samples)


def _init_worker() -> None:
    """Worker process start: Ctrl-C reaches the whole process group, but the main process decides what happens."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(0)  # the processes are the parallelism


def _run_jobs(jobs: list[_ShardJob], workers: int, progress: bool) -> None:
    """Writes the shards: in ``workers`` processes (0: in this process), with a progress bar in samples."""
    pooled = [j for j in jobs if workers > 0 and not j.images.in_process_only]
    local = [j for j in jobs if not (workers > 0 and not j.images.in_process_only)]
    done = 0

    def finished(samples: int) -> None:
        nonlocal done
        bar.update(samples)
        done += 1

    with tqdm(total=sum(len(j.samples) for j in jobs), unit="sample", desc="prepare", disable=not progress) as bar:
        try:
            if pooled:
                _write_in_processes(pooled, min(workers, len(pooled)), finished)
            for job in local:
                finished(_write_shard(job))
        except KeyboardInterrupt:
            raise PrepareInterrupted(
                f"Interrupted: {done} of the {len(jobs)} shards to write were finished and are kept; no partial "
                "shard was left. Run the same command again to write the rest (finished shards are skipped)."
            ) from None
        except BrokenProcessPool:
            raise DataError(
                f"A worker process died while writing shards (killed by the system, most often for lack of "
                f"memory: each worker holds one decoded image pair, or crashed). {done} of the {len(jobs)} shards "
                f"were finished and are kept; no partial shard was left. Run the same command again with fewer "
                f"--workers than the {workers} used (finished shards are skipped)."
            ) from None


def _write_in_processes(jobs: list[_ShardJob], workers: int, finished: Callable[[int], None]) -> None:
    """:func:`_write_shard` for every job in ``workers`` processes, calling ``finished(samples)`` as each ends.

    ``concurrent.futures``, not ``multiprocessing.Pool``: a worker killed from outside (the out-of-memory killer)
    breaks the executor, which raises ``BrokenProcessPool``, where a pool silently waits forever for the lost
    shard. Stopped early (Ctrl-C, an error, a dead worker), the other workers are killed at once and the
    temporaries of the shards they were writing removed; finished shards are complete files and stay.
    """
    others = set(multiprocessing.active_children())
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(), initializer=_init_worker)
    try:
        for future in as_completed([executor.submit(_write_shard, job) for job in jobs]):
            finished(future.result())
    except BaseException:
        for process in multiprocessing.active_children():
            if process not in others:
                process.kill()  # SIGKILL, mid-shard included: the executor has no public way to stop running work
        # The executor sees its workers die, fails what was pending and reaps them; waiting here for that (not
        # joining them from this thread too, which raced it for the exit status) leaves no process behind.
        executor.shutdown(wait=True, cancel_futures=True)
        for job in jobs:  # no worker is left to be writing them
            remove_stale_temporaries(job.path.parent, job.path.name)
        raise
    executor.shutdown()


# ----------------------------------------------------------------------------------------------------------------
# The whole preparation


@dataclass
class PrepareReport:
    """What :func:`prepare_shards` did: the index path, sample/shard counts and timing."""

    index: Path
    samples: dict[str, int]
    shards: dict[str, int]
    written: int
    skipped: int
    seconds: float
    notes: list[str]

    def summary(self) -> str:
        splits = ", ".join(f"{s}: {self.samples[s]} samples in {self.shards[s]} shards" for s in self.samples)
        lines = [f"{self.index} ({splits}); wrote {self.written} shards, skipped {self.skipped} already finished, "
                 f"in {self.seconds:.1f} s"]  # fmt: skip
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def _claim(dst: Path, plan: dict[str, Any]) -> None:
    """Writes plan.json, or checks that the one there is the same preparation (else DataError).

    Another preparation's plan.json with none of its shards there, finished or being written (it failed first,
    e.g. on an unreadable image), protects nothing: it is replaced, and an index.json beside it, which described
    shards that are gone, is removed.
    """
    path = dst / "plan.json"
    shards = sorted(p.name for p in [*dst.glob("*.tar"), *dst.glob(".*.tar.*.tmp")])  # .tmp: being written
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == plan:
            return
        if shards:
            differs = [k for k in plan if not isinstance(old, dict) or old.get(k) != plan[k]]
            held = ", ".join(shards[:3]) + (f" and {len(shards) - 3} more" if len(shards) > 3 else "")
            raise DataError(
                f"{dst} holds shards of another preparation ({held}; {path} differs in: {', '.join(differs)}), so "
                "they cannot be completed with these settings. Choose another DST folder, or delete this one and "
                "run again."
            )
        (dst / "index.json").unlink(missing_ok=True)
    elif shards:
        raise DataError(
            f"{dst} holds .tar files but no plan.json, so they are not shards this command can complete. Choose "
            "another (empty) DST folder."
        )
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(plan, f, indent=1)


def _digest(images: Any) -> str:
    """A fingerprint of a split's images (names and sizes) that fixes its sample list."""
    rows = [[n, int(h), int(w)] for n, (h, w) in zip(images.names, images.sizes, strict=True)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def prepare_shards(
    fmt: str,
    src: str | Path,
    dst: str | Path,
    *,
    val: str | Path | None = None,
    crop_size: int = 512,
    step: int = 384,
    shard_size: int = 256,
    compression: int = 1,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Crops a dataset into sub-images and writes them as tar shards plus ``index.json`` (see the module docs).

    Args:
        fmt: the source layout: ``sidd`` (``SRC/Data/<scene>/{NOISY,GT}_SRGB_*.PNG``; validation from the
            ``Validation{Noisy,Gt}BlocksSrgb.mat`` blocks beside it, when there), ``gopro`` (``SRC/train`` and
            ``SRC/test``, ``<sequence>/{blur,sharp}``), ``folder`` (``SRC/lq`` and ``SRC/gt`` paired by relative
            path and stem) or ``synthetic`` (clean images under ``SRC``, degraded while training).
        src: the source folder.
        dst: the output folder (created).
        val: ``folder``/``synthetic``: the validation source, laid out like ``src``.
        crop_size, step: the training sub-image side and stride in pixels (BasicSR's SIDD choice: 512 and 384);
            validation images are stored whole.
        shard_size: samples per shard (256 SIDD samples make shards of 150-250 MB).
        compression: PNG (zlib) level 0-9.
        workers: processes writing shards (default: one per CPU; 0: in this process).
        progress: show a progress bar.

    Returns:
        A :class:`PrepareReport`. ``index.json`` holds ``format_version``, ``nafrestore_version``, ``source``
        (``format``, ``path``, ``val_path``), ``settings`` (``crop_size``, ``step``, ``shard_size``,
        ``png_compression``), ``paired`` (whether samples have an ``lq`` image), ``created``, and per split
        (``train``, ``val``) ``samples``, ``images``, ``cropped`` and ``shards`` (``file``, ``first``,
        ``samples``, ``bytes`` each).

    Raises:
        DataError: a missing or malformed source, or ``dst`` holding another preparation.
        PrepareInterrupted: Ctrl-C; the finished shards are kept (exit code 130).
    """
    if crop_size < 8 or step < 1 or shard_size < 1 or not 0 <= compression <= 9:
        raise ValueError(f"bad settings: crop_size {crop_size}, step {step}, shard_size {shard_size}, "
                         f"compression {compression}")  # fmt: skip
    t0 = time.monotonic()
    src, dst = Path(src).resolve(), Path(dst)
    val = Path(val).resolve() if val is not None else None
    sources, notes = _sources(fmt, src, val)
    settings = {"crop_size": crop_size, "step": step, "shard_size": shard_size, "png_compression": compression}
    plan = {"format": fmt, "settings": settings, "images": {s: _digest(im) for s, im in sources.items()}}
    make_folder(dst)
    _claim(dst, plan)
    splits = {s: _crops(im, crop_size if s == "train" else None, step) for s, im in sources.items()}
    jobs, skipped = [], 0
    for split, crops in splits.items():
        for k in range(0, len(crops), shard_size):
            path = dst / shard_name(split, k // shard_size)
            remove_stale_temporaries(dst, path.name)  # left by a killed run; nothing else writes this folder now
            if path.is_file():
                skipped += 1
                continue
            samples = list(enumerate(crops[k : k + shard_size], start=k))
            jobs.append(_ShardJob(path, sources[split], samples, compression))
    _run_jobs(jobs, (os.cpu_count() or 1) if workers is None else workers, progress)
    index = {
        "format_version": INDEX_VERSION,
        "nafrestore_version": __version__,
        "source": {"format": fmt, "path": str(src), "val_path": str(val) if val is not None else None},
        "settings": settings,
        "paired": bool(sources["train"].paired),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "splits": {s: _split_index(dst, s, crops, len(sources[s].names), shard_size) for s, crops in splits.items()},
    }
    with atomic_write(dst / "index.json", "w", encoding="utf-8") as f:
        json.dump(index, f, indent=1)
    return PrepareReport(
        index=dst / "index.json",
        samples={s: len(c) for s, c in splits.items()},
        shards={s: len(index["splits"][s]["shards"]) for s in splits},
        written=len(jobs),
        skipped=skipped,
        seconds=time.monotonic() - t0,
        notes=notes,
    )


def _split_index(dst: Path, split: str, crops: list[Crop], images: int, shard_size: int) -> dict[str, Any]:
    shards = []
    for first in range(0, len(crops), shard_size):
        name = shard_name(split, first // shard_size)
        count = min(shard_size, len(crops) - first)
        shards.append({"file": name, "first": first, "samples": count, "bytes": (dst / name).stat().st_size})
    return {"samples": len(crops), "images": images, "cropped": split == "train", "shards": shards}
