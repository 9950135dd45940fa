"""The ``shards`` data format: training samples streamed from the tar shards that ``nafrestore prepare`` writes
(:mod:`.prepare`), and validation images read from them by offset.

**Why WebDataset.** Reading tar files as streams, member by member, grouping the members of a sample
(``<key>.lq.png``, ``<key>.gt.png``, ``<key>.json``) and shuffling through a buffer is what the ``webdataset``
library does, and its tar layout is the common one for streamed training data (any tar tool, and other loaders,
read it). Which process reads which samples is decided here instead of by its ``split_by_node`` /
``split_by_worker``: those deal whole shards out in turn, so processes get unequal sample counts whenever the
shard count is not a multiple of (ranks x workers), and a DistributedDataParallel rank that runs out of batches
first leaves the others waiting for ever; they also have no way to resume in the middle of an epoch.

**An epoch** (:func:`epoch_segments`). The shard order is shuffled by (seed, epoch), the same on every process.
The samples of the shards in that order form one sequence: rank ``r`` takes the ``r``-th of ``world_size`` equal
ranges of it, and each of its loader workers (a *stream*; the main process when ``num_workers`` is 0) an equal part
of that range, cut to whole batches. So each sample is read by one process at most, every process takes the same
number of steps, and each epoch leaves out fewer than ``world_size x streams x batch_size`` samples (different
ones each epoch, as the order changes). Ranges start and end inside shards: two processes may read
different parts of one shard, and no shard count is required. Each stream then shuffles its samples through a
buffer of ``shuffle_buffer`` samples (held as PNG bytes, about 1 MB per 512 px SIDD pair), seeded by (seed, epoch,
rank, stream); each sample's crop, symmetry and degradation come from a generator seeded by (seed, epoch, key).

**Resume is exact** (:meth:`ShardTrainDataset.set_skip`): what a process reads is a function of (seed, epoch, rank,
world size, workers, batch size), so a stream resumed after ``k`` batches of an epoch reads its samples again from
the start of the epoch, skips those it had given (read, not decoded), and yields what the uninterrupted run
would have. Resuming needs the same number of processes, ``data.num_workers``, ``train.batch_size``, ``run.seed``
and training shards: :meth:`ShardTrainDataset.order_settings` lists them, the checkpoint stores them and
:func:`check_data_order` refuses a resume that changes one.

Every node reads the shards from its own ``data.shards`` folder (a copy of the prepared folder, or a shared or
network file system): the shard order changes every epoch, so over a run each process reads from every shard.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from torch.utils.data import Dataset, IterableDataset, get_worker_info
from webdataset.tariterators import group_by_keys, tar_file_expander

from ..errors import ConfigError, DataError
from ..utils.pixels import to_tensor
from .datasets import build_target, degraded_training_pair, degraded_validation_pair, training_pair
from .degradations import build_degradation, seed_for
from .io import decode_png
from .prepare import INDEX_VERSION

__all__ = ["ShardTrainDataset", "ShardValDataset", "check_data_order", "epoch_segments", "load_shard_index"]


# ----------------------------------------------------------------------------------------------------------------
# The index and what to say about a bad shard


def _prepare_command(index: dict[str, Any], folder: Path) -> str:
    source, settings = index.get("source", {}), index.get("settings", {})
    cmd = f"nafrestore prepare {source.get('format', 'FORMAT')} {source.get('path', 'SRC')} {folder}"
    if source.get("val_path"):
        cmd += f" --val {source['val_path']}"
    for key, flag in (("crop_size", "--crop-size"), ("step", "--step"), ("shard_size", "--shard-size")):
        if key in settings:
            cmd += f" {flag} {settings[key]}"
    return cmd


def _corrupt(path: Path, reason: str, index: dict[str, Any] | None = None) -> DataError:
    """The one message for a shard that cannot be read."""
    again = f"`{_prepare_command(index, path.parent)}`" if index else "the `nafrestore prepare` command that made it"
    return DataError(
        f"Shard {path} is corrupt or truncated ({reason}). Delete it and run {again} again (it rewrites only the "
        "missing shards), or copy the file again from where it was prepared."
    )


def _reason(exc: BaseException) -> str:
    """The cause in a few words: webdataset appends its stream objects to an exception's arguments."""
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.split(" @ ", 1)[0].strip() or type(exc).__name__


def load_shard_index(folder: str | Path) -> dict[str, Any]:
    """``folder/index.json`` of a prepared folder, checked: the format version, and every shard file present.

    Raises:
        DataError: the folder, its index or one of its shards is missing, or the index is not one this version
            reads; the message names the file and the command that makes it.
    """
    folder = Path(folder)
    path = folder / "index.json"
    if not path.is_file():
        if (folder / "plan.json").is_file():
            reason = "the preparation did not finish (plan.json is there, index.json is written last)"
        elif folder.is_dir():
            reason = "it is not a folder `nafrestore prepare` wrote"
        else:
            reason = "the folder does not exist"
        raise DataError(
            f"data.shards {folder} has no index.json: {reason}. Run `nafrestore prepare FORMAT SRC {folder}` (again: "
            "finished shards are skipped), or point data.shards at a prepared folder."
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        splits = index["splits"]
        version = index.get("format_version")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} cannot be read as a shard index ({_reason(exc)}). Prepare the folder again.") from None
    if version != INDEX_VERSION:
        raise DataError(
            f"{path} has format_version {version!r}; this nafrestore reads version {INDEX_VERSION}. Prepare the "
            f"folder again: {_prepare_command(index, folder)}"
        )
    for split in splits.values():
        for shard in split["shards"]:
            if not (folder / shard["file"]).is_file():
                raise DataError(
                    f"Shard {folder / shard['file']} is missing (index.json lists it). Copy the whole prepared folder, "
                    f"or run `{_prepare_command(index, folder)}` again, which writes the missing shards."
                )
    return index


def clean_pipelines(
    folder: Path, paired: bool, degradations: Sequence[dict[str, Any]], target_degradations: Sequence[dict[str, Any]]
) -> tuple[Any, Any]:
    """The input and target pipelines of a shard folder: both None for paired shards, whose inputs and targets are
    stored (``data.degradations`` keeps its default there, so only ``data.target_degradations`` is refused).

    Raises:
        ConfigError: target degradations for paired shards.
    """
    if not paired:
        return build_degradation(list(degradations)), build_target(target_degradations)
    if target_degradations:
        raise ConfigError(
            f"data.target_degradations applies to clean images, but the shards in {folder} are paired: their targets "
            "are stored as prepared. Remove data.target_degradations, or prepare the shards from clean images "
            "(`nafrestore prepare synthetic ...`)."
        )
    return None, None


# ----------------------------------------------------------------------------------------------------------------
# Who reads what in an epoch


def epoch_segments(
    counts: Sequence[int], *, epoch: int, seed: int, rank: int, world_size: int, streams: int, batch_size: int
) -> list[list[tuple[int, int, int]]]:
    """What each stream of one process reads in an epoch (see the module docs).

    Args:
        counts: samples per shard, in shard order.
        epoch, seed: fix the shard order (the same on every process).
        rank, world_size: this process's place among the training processes.
        streams: loader workers of this process (1 when it loads in its main process).
        batch_size: samples per batch; each stream reads whole batches.

    Returns:
        For each stream, ``[(shard, start, stop), ...]``: samples ``start:stop`` of shard ``shard``, in reading
        order. Every stream reads as many samples, a multiple of ``batch_size`` (possibly 0).
    """
    order = np.random.default_rng(seed_for(f"shards/order/{epoch}", seed)).permutation(len(counts)).tolist()
    bounds = np.cumsum([0] + [int(counts[k]) for k in order]).tolist()  # where each shard starts in the sequence
    per_rank = bounds[-1] // world_size
    per_stream = per_rank // streams
    take = per_stream // batch_size * batch_size
    out = []
    for stream in range(streams):
        lo = rank * per_rank + stream * per_stream
        hi = lo + take
        out.append([
            (k, max(lo, bounds[j]) - bounds[j], min(hi, bounds[j + 1]) - bounds[j])
            for j, k in enumerate(order)
            if bounds[j] < hi and bounds[j + 1] > lo
        ])  # fmt: skip
    return out


def _read_shard(path: Path, start: int, stop: int, members: tuple[str, ...], index: dict) -> Iterator[dict[str, Any]]:
    """Samples ``start:stop`` of a shard as webdataset gives them: ``{"__key__", "__url__", "gt.png": bytes, ...}``.

    Raises:
        DataError: the shard is not a readable tar, ends early, or a sample lacks one of ``members``.
    """
    seen = 0
    try:
        with open(path, "rb") as stream:
            for sample in group_by_keys(tar_file_expander([{"url": str(path), "stream": stream}])):
                if seen >= start:
                    missing = [m for m in members if m not in sample]
                    if missing:
                        raise _corrupt(path, f"sample {sample['__key__']} has no {missing[0]} member", index)
                    yield sample
                seen += 1
                if seen >= stop:
                    return
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        raise _corrupt(path, _reason(exc), index) from None
    raise _corrupt(path, f"it ends after {seen} samples; index.json says it holds more", index)


def check_data_order(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None, checkpoint: str) -> None:
    """Refuse a resume that would change the order of the training samples
    (:meth:`ShardTrainDataset.order_settings`).

    Args:
        saved: the settings the checkpoint stores (None: not a shards run, or a checkpoint from before they were).
        current: those of the resumed run's training stream (None: not a shards run).
        checkpoint: the checkpoint, for the message.

    Raises:
        ConfigError: a setting differs; the message names it with both values and says how to go on.
    """
    if not saved or not current:
        return
    changed = []
    for key, old in saved.items():
        new = current.get(key, old)
        if key == "data.num_workers":  # 0 and 1 workers both read one stream
            old, new = max(1, int(old)), max(1, int(new))
        if new != old:
            changed.append((key, saved[key], current[key]))
    if not changed:
        return
    names = {"processes": "the number of training processes"}
    fixes = {"processes": "launch {old} process(es)", "data.shards": "point data.shards at the shards it trained on"}
    what = "; ".join(f"{names.get(key, key)} was {old}, now {new}" for key, old, new in changed)
    same = ", ".join(fixes.get(key, "{key}={old}").format(key=key, old=old) for key, old, _ in changed)
    raise ConfigError(
        f"Cannot resume {checkpoint} exactly: {what}. The order in which the shards are read depends on "
        f"{'it' if len(changed) == 1 else 'them'}, so the resumed run would not continue the interrupted one. Resume "
        f"with the same settings ({same}), or start a new run from these weights with model.init_from={checkpoint} "
        "(and another run.dir)."
    )


# ----------------------------------------------------------------------------------------------------------------
# Training: the stream


class ShardTrainDataset(IterableDataset):
    """Training samples streamed from a prepared folder's ``train`` shards (see the module docs).

    Items are ``{"lq", "gt": (3, P, P) float32 in [0, 1], "key": str}``: a random ``patch_size`` crop of a stored
    sub-image with a random symmetry (the same for both), or for shards of clean images (a ``synthetic`` source)
    the crop of the clean image and its degraded version. ``key`` names the sample in its shard.

    Built for one process by :meth:`split` (``build_train_loader`` calls it); each epoch of the split dataset is
    ``len(self)`` samples, ``len(self) // batch_size`` batches, the same on every process.

    Args:
        folder: the prepared folder (holding index.json).
        patch_size: side of the training crops; at most the stored sub-images' side.
        flip, rot90: random symmetries (see :func:`~nafrestore.data.transforms.random_dihedral`).
        shuffle_buffer: samples each stream shuffles among.
        degradations: for shards of clean images, the degradation pipeline (config specs); ignored for pairs.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        patch_size: int,
        flip: bool = False,
        rot90: bool = False,
        shuffle_buffer: int = 256,
        degradations: Sequence[dict[str, Any]] = (),
        target_degradations: Sequence[dict[str, Any]] = (),
    ) -> None:
        self.folder = Path(folder)
        self.index = load_shard_index(self.folder)
        train = self.index["splits"].get("train")
        if not train or not train["samples"]:
            raise DataError(f"{self.folder} holds no training shards. Prepare it from a source with training images.")
        self.shards = [(self.folder / s["file"], int(s["samples"])) for s in train["shards"]]
        self.paired = bool(self.index["paired"])
        self.members = ("lq.png", "gt.png") if self.paired else ("gt.png",)
        stored = int(self.index["settings"]["crop_size"])
        if patch_size > stored:
            raise DataError(
                f"data.patch_size {patch_size} is larger than the {stored} px sub-images in {self.folder}, so every "
                f"crop would be padded. Lower data.patch_size, or prepare the shards with --crop-size {patch_size} "
                "or more."
            )
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        self.patch_size, self.flip, self.rot90, self.shuffle_buffer = patch_size, flip, rot90, shuffle_buffer
        self.degrade, self.target = clean_pipelines(self.folder, self.paired, degradations, target_degradations)
        # One process's share (split() sets it) and the position in the epoch.
        self.rank, self.world_size, self.num_workers, self.batch_size, self.seed = 0, 1, 0, 1, 0
        self.streams = 1  # loader streams: max(1, num_workers)
        self.epoch = 0
        self.skip = 0  # batches of this epoch already consumed (resuming)
        self.batches_per_stream = self._batches_per_stream()

    @property
    def num_samples(self) -> int:
        """Samples in the training shards."""
        return sum(n for _, n in self.shards)

    @property
    def has_validation(self) -> bool:
        """Whether the folder holds validation shards."""
        return bool(self.index["splits"].get("val", {}).get("samples"))

    def _batches_per_stream(self) -> int:
        per_stream = self.num_samples // self.world_size // self.streams
        return per_stream // self.batch_size

    def split(self, *, rank: int, world_size: int, num_workers: int, batch_size: int, seed: int) -> ShardTrainDataset:
        """This dataset for one training process: rank ``rank`` of ``world_size``, loading with ``num_workers``
        DataLoader workers (0: in the main process) in batches of ``batch_size``, with the run's ``seed``.

        Raises:
            DataError: the shards hold less than one batch per stream.
        """
        out = copy.copy(self)
        out.rank, out.world_size, out.num_workers, out.streams = rank, world_size, num_workers, max(1, num_workers)
        out.batch_size, out.seed = batch_size, int(seed) % 2**63
        out.batches_per_stream = out._batches_per_stream()
        if out.batches_per_stream < 1:
            raise DataError(
                f"The shards in {self.folder} hold {self.num_samples} training samples: less than one batch of "
                f"{batch_size} for each of the {world_size} process(es) x {out.streams} loader stream(s) "
                "(data.num_workers, or 1 without workers). Lower train.batch_size or data.num_workers, or prepare "
                "more samples (a smaller --step)."
            )
        return out

    def order_settings(self) -> dict[str, Any]:
        """What the order of the samples depends on besides the step, keyed by the setting that fixes it (see the
        module docs): the checkpoint stores it, and :func:`check_data_order` compares it when resuming.

        ``data.shards`` describes the training shards and ends with a fingerprint of their layout (sub-image side
        and step, the sample count of each shard): a copy of the folder matches, another preparation does not.
        """
        settings = self.index["settings"]
        layout = [settings["crop_size"], settings["step"], self.paired, [n for _, n in self.shards]]
        fingerprint = hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:12]
        return {
            "processes": self.world_size,
            "data.num_workers": self.num_workers,
            "train.batch_size": self.batch_size,
            "run.seed": self.seed,
            "data.shards": f"{self.num_samples} samples in {len(self.shards)} shards of {settings['crop_size']} px "
            f"sub-images every {settings['step']} px (layout {fingerprint})",
        }

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (before ``iter``)."""
        self.epoch, self.skip = int(epoch), 0

    def set_skip(self, batches: int) -> None:
        """Start the current epoch after its first ``batches`` batches (resuming); call after :meth:`set_epoch`."""
        self.skip = int(batches)

    def __len__(self) -> int:
        return self.streams * self.batches_per_stream * self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.streams:
            raise RuntimeError(f"split() was told {self.streams} stream(s), the DataLoader runs {workers} worker(s)")
        # The DataLoader takes one batch from each worker in turn, so batch j of the epoch is batch j // streams of
        # stream j % streams. A resumed loader starts its turns at worker 0: its worker w plays the stream whose
        # turn came next, (w + skip) % streams, which had given `done` batches.
        q, r = divmod(self.skip, self.streams)
        stream = (worker + r) % self.streams
        done = q + (1 if stream < r else 0)
        segments = epoch_segments(
            [n for _, n in self.shards], epoch=self.epoch, seed=self.seed, rank=self.rank,
            world_size=self.world_size, streams=self.streams, batch_size=self.batch_size,
        )[stream]  # fmt: skip
        samples = itertools.chain.from_iterable(
            _read_shard(self.shards[k][0], start, stop, self.members, self.index) for k, start, stop in segments
        )
        rng = random.Random(seed_for(f"shards/shuffle/{self.epoch}/{self.rank}/{stream}", self.seed))
        shuffled = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
        for sample in itertools.islice(shuffled, done * self.batch_size, None):  # skipped ones are never decoded
            yield self._item(sample)

    def _item(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, path = sample["__key__"], Path(sample["__url__"])
        rng = np.random.default_rng(seed_for(f"shards/{self.epoch}/{key}", self.seed))
        images = [_decode(sample, member, path, self.index) for member in self.members]
        crops = {"patch_size": self.patch_size, "flip": self.flip, "rot90": self.rot90}
        if self.degrade is None:
            item = training_pair(images[0], images[1], rng, **crops)
        else:
            item = degraded_training_pair(images[0], self.degrade, rng, target=self.target, **crops)
        item["key"] = key
        return item


def _decode(sample: dict[str, Any], member: str, path: Path, index: dict[str, Any]) -> np.ndarray:
    try:
        return decode_png(sample[member], f"{sample['__key__']}.{member}")
    except DataError as exc:
        raise _corrupt(path, str(exc).rstrip("."), index) from None


# ----------------------------------------------------------------------------------------------------------------
# Validation: whole images, by offset


class ShardValDataset(Dataset):
    """The validation images of a prepared folder (its ``val`` shards), read by offset inside the tar files.

    Items are ``{"lq", "gt": (3, H, W) float32 in [0, 1], "name": str}`` (``name`` as in the source dataset). For
    shards of clean images the input is the image degraded by ``degradations`` with a generator seeded by
    ``(name, seed)``, as :class:`~nafrestore.data.SyntheticDataset` validation does.

    Raises:
        DataError: the folder has no validation shards, or one of them is not a readable tar.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        degradations: Sequence[dict[str, Any]] = (),
        target_degradations: Sequence[dict[str, Any]] = (),
        seed: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.index = load_shard_index(self.folder)
        split = self.index["splits"].get("val")
        if not split or not split["samples"]:
            source = self.index.get("source", {})
            raise DataError(
                f"{self.folder} holds no validation shards (its source {source.get('path')} had no validation "
                "images). Prepare it again with validation images (--val for folder and synthetic sources)."
            )
        self.paired = bool(self.index["paired"])
        self.degrade, self.target = clean_pipelines(self.folder, self.paired, degradations, target_degradations)
        self.seed = int(seed)
        self.members: list[dict[str, tuple[Path, int, int]]] = []  # per sample: member -> (shard, offset, size)
        for shard in split["shards"]:
            self.members.extend(self._scan(self.folder / shard["file"]))
        meta = [json.loads(self._read(m, "json")) for m in self.members]
        self.names = [str(m["name"]) for m in meta]
        self.sizes = [(int(m["height"]), int(m["width"])) for m in meta]

    def _scan(self, path: Path) -> list[dict[str, tuple[Path, int, int]]]:
        """Where each sample's members are in one shard (tar headers only)."""
        samples: dict[str, dict[str, tuple[Path, int, int]]] = {}
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if member.isfile():
                        key, _, ext = member.name.partition(".")
                        samples.setdefault(key, {})[ext] = (path, member.offset_data, member.size)
        except (tarfile.TarError, OSError) as exc:
            raise _corrupt(path, _reason(exc), self.index) from None
        wanted = ("json", *(("lq.png", "gt.png") if self.paired else ("gt.png",)))
        for key, members in samples.items():
            missing = [m for m in wanted if m not in members]
            if missing:
                raise _corrupt(path, f"sample {key} has no {missing[0]} member", self.index)
        return [samples[k] for k in sorted(samples)]

    def _read(self, members: dict[str, tuple[Path, int, int]], member: str) -> bytes:
        path, offset, size = members[member]
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise _corrupt(path, f"{member} of a sample ends early", self.index)
        return data

    def __len__(self) -> int:
        return len(self.members)

    def item_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i`` (from its metadata, without decoding it)."""
        return self.sizes[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        members, name = self.members[i], self.names[i]
        path = members["gt.png"][0]
        gt = _decode({"__key__": name, "gt.png": self._read(members, "gt.png")}, "gt.png", path, self.index)
        if self.degrade is not None:
            return degraded_validation_pair(gt, self.degrade, name=name, seed=self.seed, target=self.target)
        lq = _decode({"__key__": name, "lq.png": self._read(members, "lq.png")}, "lq.png", path, self.index)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": name}
