"""The Python API: ``load_model`` (any checkpoint, export or preset + weights) and ``restore`` (one array).

Example::

    import nafrestore
    model = nafrestore.load_model("runs/my-run")                    # run dir -> checkpoints/best.pt
    model = nafrestore.load_model("configs/nafnet-sidd-width32.yaml", weights="NAFNet-SIDD-width32.pth")
    clean = nafrestore.restore(model, noisy_uint8_rgb, tile=512)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.io import rgb_to_luma
from ..errors import CheckpointError, ConfigError, NafrestoreError
from .fold import fold_for_inference, in_channels
from .tiling import (
    DEFAULT_OVERLAP,
    auto_tile,
    forward,
    resolve_precision,
    restore_tiled,
)

__all__ = ["ModelSpec", "load_model", "load_spec", "resolve_source", "restore"]

_CONFIG_SUFFIXES = (".yaml", ".yml")
_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ModelSpec:
    """Everything needed to rebuild a trained network: architecture, TLC setting, weights and where they came from.

    Attributes:
        model_name: registered model name (``nafnet``, ``lka_nafnet``).
        model_args: the model's keyword arguments.
        tlc_train_size: TLC training size when TLC is on by default, else None.
        config: the training config as a dict ({} when unknown).
        state: the (unfolded) state dict.
        source: a readable description of the files, for messages.
        tlc_size_hint: training patch size to use if TLC is switched on (``tlc=True``) while off by default.
    """

    model_name: str
    model_args: dict[str, Any]
    tlc_train_size: int | None
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    source: str
    tlc_size_hint: int = 256

    def build(self, tlc: bool | None = None) -> nn.Module:
        """The unfolded network with the weights loaded, in eval mode on the CPU."""
        from ..models import create_model
        from ..models.loading import load_weights

        size = self.tlc_train_size
        if tlc is True:
            size = size or self.tlc_size_hint
        elif tlc is False:
            size = None
        try:
            model = create_model(self.model_name, tlc_train_size=size, **self.model_args)
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"Cannot build {self.model_name} {self.model_args} from {self.source}: {exc}"
            ) from None
        return load_weights(model, self.state, self.source).eval()

    def metadata(self) -> dict[str, Any]:
        """What a safetensors export stores next to the weights (read back by ``read_checkpoint``)."""
        return {
            "format_version": 1,
            "model_name": self.model_name,
            "model_args": self.model_args,
            "tlc_train_size": self.tlc_train_size,
            "config": self.config,
        }


def _find_config(source: str | Path) -> Path | None:
    """The YAML file ``source`` names: a .yaml/.yml path, or a preset name such as ``lka-nafnet-w12``."""
    path = Path(source)
    if path.suffix in _CONFIG_SUFFIXES:
        return path
    if path.exists() or len(path.parts) != 1:
        return None
    for folder in (Path.cwd() / "configs", _ROOT / "configs"):
        candidate = folder / f"{path.name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _checkpoint_file(path: Path) -> Path:
    """A run directory's checkpoint (checkpoints/best.pt, else checkpoints/last.pt), or ``path`` itself."""
    if not path.is_dir():
        return path
    for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt", path / "best.pt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"{path} is a folder without checkpoints/best.pt or checkpoints/last.pt: give a run directory written by "
        f"`nafrestore train` or the path of a checkpoint file."
    )


def _config_tlc_size(config: dict[str, Any]) -> int:
    model = config.get("model", {}) if isinstance(config, dict) else {}
    size = model.get("tlc_train_size") if isinstance(model, dict) else None
    return int(size) if isinstance(size, int) and size > 0 else 256


def load_spec(source: str | Path, weights: str | Path | None = None) -> ModelSpec:
    """Resolve a checkpoint, run directory, safetensors export, or config/preset + weights to a :class:`ModelSpec`.

    Raises:
        CheckpointError: unreadable files, bare weights without an architecture, a config without weights, or
            weights that do not fit the architecture.
    """
    from ..models.loading import read_checkpoint, state_dict_from

    config_path = _find_config(source)
    if config_path is not None:
        from ..config import config_to_dict, load_config

        if weights is None:
            raise CheckpointError(
                f"{source} is a config: it describes the architecture but holds no trained weights, and restoring "
                f"with random weights would only produce noise. Add the weights, e.g. --model {source} "
                f"--ckpt NAFNet-SIDD-width32.pth (Python: load_model({str(source)!r}, weights=...))."
            )
        cfg = load_config(config_path)
        weights_path = _checkpoint_file(Path(weights))
        ckpt = read_checkpoint(weights_path)
        return ModelSpec(
            model_name=cfg.model.name,
            model_args=dict(cfg.model.args),
            tlc_train_size=cfg.model.tlc_train_size if cfg.model.tlc else None,
            config=config_to_dict(cfg),
            state=state_dict_from(ckpt),
            source=f"{weights_path} (architecture from {config_path})",
            tlc_size_hint=cfg.model.tlc_train_size,
        )
    if weights is not None:
        raise CheckpointError(
            f"weights= / --ckpt goes with a config or preset that names the architecture, but {source} is not a "
            f"YAML config or known preset. Give a nafrestore checkpoint alone, or a config plus the weights."
        )
    path = _checkpoint_file(Path(source))
    if not path.exists():
        raise CheckpointError(
            f"{source} does not exist. Give a checkpoint file (.pt/.pth/.safetensors), a run directory, or a YAML "
            f"config / preset name (configs/*.yaml) together with the weights."
        )
    ckpt = read_checkpoint(path)
    if "model_name" not in ckpt:
        raise CheckpointError(
            f"{path} holds bare weights without the architecture (e.g. an official NAFNet release). Name the "
            f"architecture with --model, e.g. --model configs/nafnet-sidd-width32.yaml --ckpt {path} "
            f"(Python: load_model('configs/nafnet-sidd-width32.yaml', weights={str(path)!r}))."
        )
    config = ckpt.get("config") or {}
    if isinstance(config, str):  # tolerate a JSON string
        config = json.loads(config)
    tlc_size = ckpt.get("tlc_train_size")
    return ModelSpec(
        model_name=str(ckpt["model_name"]),
        model_args=dict(ckpt.get("model_args") or {}),
        tlc_train_size=int(tlc_size) if tlc_size else None,
        config=dict(config),
        state=state_dict_from(ckpt),
        source=str(path),
        tlc_size_hint=int(tlc_size) if tlc_size else _config_tlc_size(config),
    )


def resolve_source(
    checkpoint: str | Path | None = None, model: str | Path | None = None
) -> tuple[str | Path, str | Path | None]:
    """CLI convention -> ``load_model`` arguments: ``--ckpt C`` alone, or ``--model CONFIG --ckpt WEIGHTS``.

    Raises:
        NafrestoreError: neither given, or ``--model`` with a config but no ``--ckpt``.
    """
    if model is not None:
        if checkpoint is None and _find_config(model) is not None:
            raise CheckpointError(
                f"--model {model} names an architecture but no trained weights: add --ckpt WEIGHTS (e.g. an "
                f"official NAFNet release .pth or a nafrestore checkpoint). Random weights would only produce noise."
            )
        if checkpoint is None:
            return model, None
        return model, checkpoint
    if checkpoint is None:
        raise NafrestoreError("Give the weights with --ckpt CHECKPOINT (and --model CONFIG for bare state dicts).")
    return checkpoint, None


def load_model(
    checkpoint_or_preset: str | Path,
    *,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    tlc: bool | None = None,
    fold: bool = True,
    channels_last: bool | None = None,
) -> nn.Module:
    """Load a trained network ready for inference.

    Args:
        checkpoint_or_preset: a nafrestore checkpoint (``.pt``), a run directory (its ``checkpoints/best.pt``),
            a ``.safetensors`` file written by ``nafrestore export``, or a YAML config / preset name (e.g.
            ``lka-nafnet-w12`` for ``configs/lka-nafnet-w12.yaml``) together with ``weights``.
        weights: with a config or preset: the weights file (an official NAFNet release such as
            ``NAFNet-SIDD-width32.pth``, a nafrestore checkpoint, or any state dict of that architecture).
        device: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``.
        tlc: test-time local converter on/off; None keeps the checkpoint's (or config's) setting.
        fold: return the folded inference path (:func:`~nafrestore.inference.fold.fold_for_inference`), which
            computes the same function faster; False returns the plain network.
        channels_last: memory format of the folded model; None picks per device.

    Returns:
        The network in eval mode on ``device`` with gradients off. ``model.nafrestore_spec`` holds the
        architecture and settings (without the weights).

    Raises:
        CheckpointError: see :func:`load_spec`.
    """
    from ..utils.device import resolve_device

    try:
        dev = resolve_device(device)
    except ConfigError as exc:  # its message names the config key run.device; here it is an argument
        raise NafrestoreError(str(exc).replace("run.device=", "--device ").replace("run.device", "device")) from None
    spec = load_spec(checkpoint_or_preset, weights)
    net = spec.build(tlc)
    net = net.to(dev).requires_grad_(False)
    if fold:
        net = fold_for_inference(net, channels_last=channels_last)
    net.nafrestore_spec = {
        "model_name": spec.model_name,
        "model_args": spec.model_args,
        "tlc_train_size": spec.tlc_train_size,
        "tlc": bool(net.tlc_enabled) if hasattr(net, "tlc_enabled") else None,
        "source": spec.source,
    }
    return net


# ------------------------------------------------------------------------------------------------------------
# Arrays


def _to_float(array: np.ndarray) -> np.ndarray:
    """uint8/uint16 -> float32 in [0, 1] (one new array); float32 is returned as it is."""
    if array.dtype in (np.uint8, np.uint16):
        out = array.astype(np.float32)
        out *= np.float32(1 / (255 if array.dtype == np.uint8 else 65535))
        return out
    return array.astype(np.float32, copy=False)


def _from_float(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 -> dtype, clamped to [0, 1] (and rounded to the nearest level for integers), in place; NaN -> 0."""
    np.nan_to_num(array, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(array, 0.0, 1.0, out=array)
    if dtype == np.uint8 or dtype == np.uint16:
        array *= np.float32(255 if dtype == np.uint8 else 65535)
        np.rint(array, out=array)
        return array.astype(dtype)
    return array.astype(dtype, copy=False)


def run_model(
    model: nn.Module,
    rgb: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    precision: str = "fp32",
    max_megapixels: float | None = None,
    tile_batch: int | None = None,
) -> np.ndarray:
    """The network applied to one float32 (H, W, C) image (C = the model's input channels); float32 (H, W, C) out.

    Tiles when ``tile`` is given or the image exceeds ``max_megapixels`` (see
    :func:`~nafrestore.inference.tiling.auto_tile`); falls back to tiles when a whole-image pass runs out of memory.
    ``tile_batch`` tiles go through the network at once (None: 1 on the CPU, where batching gains no speed and
    each 512-pixel LKA-NAFNet tile costs about 280 MB, 4 elsewhere).
    """
    height, width, _ = rgb.shape
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    use_tile = auto_tile(height, width, tile, max_megapixels, device)
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)  # (C, H, W) view of the HWC array
    if use_tile is None:
        try:
            out = forward(model, image[None].to(device), tta=tta, precision=precision)[0]
            return np.ascontiguousarray(out.permute(1, 2, 0).cpu().numpy())
        except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(exc).lower():
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            use_tile = min(1024, max(height, width) // 2)
    if tile_batch is None:
        tile_batch = 1 if device.type == "cpu" else 4
    result = np.empty_like(rgb, dtype=np.float32)
    out = torch.from_numpy(result).permute(2, 0, 1)
    restore_tiled(
        model, image, tile=use_tile, overlap=overlap, batch_size=tile_batch, tta=tta, precision=precision, out=out
    )
    return result


def restore(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    precision: str = "fp32",
    max_megapixels: float | None = None,
) -> np.ndarray:
    """Restore one image held in memory.

    Args:
        model: from :func:`load_model` (or any NAFNet-style module in eval mode).
        image: (H, W) or (H, W, C) array, C = 1, 3 or 4 (RGB order; the 4th channel is alpha, passed through
            untouched); uint8, uint16, or float32 in [0, 1]. Gray images run through an RGB model as three equal
            channels and come back as the BT.601 luma of the output.
        tile: tile side for tiled inference (None: whole image, unless larger than ``max_megapixels``).
        overlap: tile overlap in pixels.
        tta: x8 self-ensemble (8 times slower).
        precision: fp32 | bf16 | fp16 (autocast on the model's device; fp16 not on the CPU).
        max_megapixels: automatic-tiling threshold (None: the device default, 4 MP on the CPU).

    Returns:
        The restored image with the shape and dtype of ``image`` (float output clamped to [0, 1]).

    Raises:
        ValueError: unsupported shape or dtype.
    """
    array = np.asarray(image)
    if array.dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"restore takes uint8, uint16 or float32 images, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        hwc = array
    elif array.ndim == 2:
        hwc = array[:, :, None]
    else:
        raise ValueError(f"restore takes an (H, W) or (H, W, C) image with C = 1, 3 or 4, got shape {array.shape}")
    channels = hwc.shape[2]
    alpha = hwc[:, :, 3] if channels == 4 else None
    colour = _to_float(hwc[:, :, :3] if channels == 4 else hwc)  # (H, W, 1 | 3)
    restored = restore_rgb(
        model, colour, tile=tile, overlap=overlap, tta=tta, precision=precision, max_megapixels=max_megapixels
    )
    out = _from_float(restored, array.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha[:, :, None]], axis=2)
    return out.reshape(array.shape)


def restore_rgb(model: nn.Module, colour: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Float32 (H, W, 1 | 3) in, float32 of the same shape out, adapting gray/RGB to the model's input channels."""
    want = in_channels(model)
    have = colour.shape[2]
    if have == want:
        return run_model(model, colour, **kwargs)
    if have == 1 and want == 3:
        out = run_model(model, np.repeat(colour, 3, axis=2), **kwargs)
        return rgb_to_luma(out)[:, :, None]
    if have == 3 and want == 1:
        return np.repeat(run_model(model, rgb_to_luma(colour)[:, :, None], **kwargs), 3, axis=2)
    raise ValueError(f"the model takes {want}-channel images; got {have} channels")
