"""What is scored: pairs of a restored (or to-be-restored) image and its ground truth, from folders, a dataset or a
validation loader, and the model under test with the data it is evaluated on."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config, config_from_dict, load_config
from ..data import SyntheticDataset, build_val_dataset, folder_images, load_image, match_pairs
from ..errors import CheckpointError, DataError, NafrestoreError
from ..inference.tiling import restore_batch
from ..loading import ModelSpec, find_checkpoint, find_config, load_spec, registry_name, resolve_source

__all__ = [
    "EvalItem",
    "Restore",
    "dataset_items",
    "folder_items",
    "loader_items",
    "model_items",
    "model_restore",
    "model_under_test",
]

Restore = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) [0, 1] -> same


@dataclass
class EvalItem:
    """One image to score: ``gt`` and either ``pred`` or ``lq`` (restored by the model), (3, H, W) in [0, 1]."""

    name: str
    gt: torch.Tensor
    lq: torch.Tensor | None = None
    pred: torch.Tensor | None = None


def folder_items(pred_dir: str | Path, gt_dir: str | Path, lq_dir: str | Path | None = None) -> Iterator[EvalItem]:
    """Pairs of restored and ground-truth images matched by relative path and stem (and the input, if given).

    Single-channel files stay single-channel when the restored and ground-truth files both are: BasicSR scores a
    2-D image as it is (its Y channel of a gray image is the image), so ``--y-channel`` on gray files agrees with
    its published numbers. A gray file paired with a colour one is compared as three equal channels.

    Raises:
        DataError: unmatched names, or a pair of different sizes (naming it).
    """
    pairs = match_pairs(pred_dir, gt_dir, roles=("restored (--pred)", "ground-truth (--gt)"))
    inputs = {}
    if lq_dir is not None:
        inputs = {
            name: lq for name, lq, _ in match_pairs(lq_dir, gt_dir, roles=("input (--lq)", "ground-truth (--gt)"))
        }
    for name, pred_path, gt_path in pairs:
        pred, gt = load_image(pred_path), load_image(gt_path)
        lq = load_image(inputs[name]) if name in inputs else None
        for label, image, path in (("restored", pred, pred_path), ("input", lq, inputs.get(name))):
            if image is not None and image.rgb.shape != gt.rgb.shape:
                raise DataError(
                    f"The {label} image {path} is {image.rgb.shape[1]}x{image.rgb.shape[0]} but its ground truth "
                    f"{gt_path} is {gt.rgb.shape[1]}x{gt.rgb.shape[0]}; pairs must have the same size."
                )
        gray = all(image.channels in (1, 2) for image in (pred, gt))
        pred_t, gt_t, lq_t = (None if im is None else _scored_tensor(im.rgb, gray) for im in (pred, gt, lq))
        yield EvalItem(name, gt_t, lq=lq_t, pred=pred_t)  # type: ignore[arg-type]


def _scored_tensor(rgb: np.ndarray, gray: bool) -> torch.Tensor:
    """(H, W, 3) float [0, 1] -> (3, H, W), or (1, H, W) for gray files (whose three channels are equal)."""
    chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    return chw[:1].clone() if gray else chw


def dataset_items(dataset: torch.utils.data.Dataset) -> Iterator[EvalItem]:
    """Items of a validation dataset (dicts with ``lq``, ``gt``, ``name``), to be restored by a model."""
    for i in range(len(dataset)):
        item = dataset[i]
        yield EvalItem(item["name"], item["gt"], lq=item["lq"])


def loader_items(loader: Iterable[dict[str, Any]]) -> Iterator[EvalItem]:
    """Items of a validation loader's batches ``{"lq", "gt": (B, 3, H, W), "name": [str] * B}``."""
    for batch in loader:
        names = batch["name"]
        for i, name in enumerate([names] if isinstance(names, str) else names):
            yield EvalItem(str(name), batch["gt"][i], lq=batch["lq"][i])


def model_restore(
    model: torch.nn.Module, *, tile: int | None = None, overlap: int = 32, precision: str = "fp32"
) -> Restore:
    """A batch restore function for :func:`score` (see :func:`~nafrestore.inference.tiling.restore_batch`).

    Whole images unless ``tile`` is given: automatic tiling is off, so scores never depend on the machine's memory.
    """

    def run(lq: torch.Tensor) -> torch.Tensor:
        return restore_batch(model, lq, tile=tile, overlap=overlap, precision=precision, max_megapixels=math.inf)

    return run


def model_under_test(
    source: str | Path | None, ckpt: str = "best", model: str | Path | None = None
) -> tuple[ModelSpec, Config]:
    """The network to evaluate and the config whose data it is evaluated on.

    Args:
        source: a YAML config or preset (its ``run.dir`` holds the checkpoints), a run directory (its
            ``config.yaml``) or a checkpoint file (its stored config); None with ``model``.
        ckpt: ``best``, ``last`` or a checkpoint path (with a config: any weights of that architecture).
        model: instead of ``source``, a model as ``infer --model`` takes it: a pretrained model's name (evaluated on
            its preset's data settings), or a config with ``ckpt`` as the weights.

    Raises:
        CheckpointError, ConfigError: nothing to evaluate there, naming what was looked for.
    """
    named = ckpt in ("best", "last")
    if model is not None:
        spec = load_spec(*resolve_source(None if named else ckpt, model))
        if not spec.config:
            raise CheckpointError(
                f"{spec.source} holds no training config, so there is no data setting to evaluate it with. Give "
                f"its config too: nafrestore eval --model CONFIG.yaml --ckpt WEIGHTS, or restore images and use "
                f"--pred/--gt."
            )
        return spec, config_from_dict(spec.config, source=f"{spec.source} (config)")
    if source is None:
        raise NafrestoreError("Give a run directory or config to evaluate, or --model NAME.")
    config_path = find_config(source)
    if config_path is not None:
        cfg = load_config(config_path)
        try:
            weights = find_checkpoint(cfg.run_dir, prefer=ckpt, fallback=False) if named else Path(ckpt)
        except CheckpointError as exc:
            if registry_name(source) is None:
                raise
            raise CheckpointError(  # a preset that is also a pretrained model's name: which one was meant?
                f"{exc} (To evaluate the pretrained model {source} instead of a run of the preset, use "
                f"nafrestore eval --model {source} --data FOLDER_OR_val.)"
            ) from None
        return load_spec(config_path, weights), cfg
    path = find_checkpoint(source, prefer=ckpt, fallback=False) if named else Path(ckpt)
    spec = load_spec(path)
    run_config = Path(source) / "config.yaml"
    if run_config.is_file():
        return spec, load_config(run_config)
    if not spec.config:
        raise CheckpointError(
            f"{path} holds no training config, so there is no dataset to evaluate on. Evaluate it with its config: "
            f"nafrestore eval CONFIG.yaml --ckpt {path}, or restore images and use --pred/--gt."
        )
    return spec, config_from_dict(spec.config, source=f"{path} (stored config)")


def model_items(cfg: Config, data: str = "val", seed: int | None = None) -> torch.utils.data.Dataset:
    """The dataset a model is evaluated on: the config's validation set, or a folder of clean images.

    A folder is degraded with the config's ``data.degradations``, fixed per image by its name and the seed, so
    numbers are comparable run to run.
    """
    seed = cfg.run.seed if seed is None else seed
    if data == "val":
        return build_val_dataset(cfg.data, seed=seed)
    paths, names = folder_images(data, "--data")  # `val` or a folder of clean images
    return SyntheticDataset(paths, cfg.data.degradations, names=names, seed=seed)
