"""Reading weights: the project's checkpoints, the official NAFNet releases and bare state dicts.

Files are read with ``torch.load(weights_only=True)``, so a pickle that carries code is refused. Accepted
layouts: a nafrestore checkpoint (``{"model_name", "model_args", "model", ...}``), BasicSR/NAFNet release files
(``{"params": ...}`` and/or ``{"params_ema": ...}``), ``{"state_dict": ...}``, and bare state dicts, with
``module.`` (DataParallel) or ``_orig_mod.`` (torch.compile) prefixes stripped.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError

_PREFIXES = ("module.", "_orig_mod.")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint or weights file safely onto the CPU.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, or carries code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Give the path of a .pt/.pth file or a run directory.")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refusing to load {path}: it holds Python objects other than tensors and plain containers "
            f"({str(exc).splitlines()[0][:200]}). Loading it would run code from the file. If you trust it, "
            f"re-save only its state dict: torch.save(obj['params'] or obj.state_dict(), 'weights.pth')."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"Cannot read checkpoint {path}: {str(exc).splitlines()[0][:200]}. The file may be truncated or not "
            f"a PyTorch file; re-download or re-save it."
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, not a state dict or checkpoint dict.")
    return dict(obj)


def _read_safetensors(path: Path) -> dict[str, Any]:
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"Cannot read safetensors file {path}: {exc}.") from None
    ckpt: dict[str, Any] = {"model": tensors}
    if "nafrestore" in meta:
        ckpt.update(json.loads(meta["nafrestore"]))
    return ckpt


def state_dict_from(obj: Mapping[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Find the weights inside a loaded file and strip wrapper prefixes.

    Args:
        obj: what :func:`read_checkpoint` returned.
        prefer_ema: take ``params_ema`` over ``params`` in BasicSR files when both exist (the EMA weights are
            the ones BasicSR validates), and a nafrestore ``last.pt``'s ``ema`` over its raw ``model`` weights
            (``best.pt``'s ``model`` already holds the weights its validation used).
    """
    if prefer_ema and isinstance(obj.get("ema"), Mapping) and obj.get("weights") != "ema":
        obj = {"model": obj["ema"]}  # a nafrestore last.pt: `model` holds the raw weights, `ema` the averaged ones
    for key in (("params_ema", "params") if prefer_ema else ("params", "params_ema")) + ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = strip_prefixes({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})
    if not state:
        raise CheckpointError("The file holds no tensors: it is not a model checkpoint or state dict.")
    return state


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with wrapper prefixes removed: ``module.`` (DataParallel/DDP), ``_orig_mod.`` (torch.compile),
    in any order and nesting."""
    out = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key[len(next(p for p in _PREFIXES if key.startswith(p))) :]
        out[key] = value
    return out


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> nn.Module:
    """Load ``state`` into ``model`` strictly, with one readable message on any mismatch.

    Raises:
        CheckpointError: listing a few missing/unexpected/mis-shaped keys and the likely cause.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise CheckpointError(
            f"The weights in {source} do not fit the model: {'; '.join(parts)}. The file was most likely trained "
            f"with another architecture or preset (width, block counts); pick the matching config with --model, "
            f"e.g. configs/nafnet-sidd-width32.yaml for NAFNet-SIDD-width32.pth."
        )
    model.load_state_dict(state, strict=True)
    return model


def model_from_checkpoint(ckpt: Mapping[str, Any], source: str = "the checkpoint") -> nn.Module:
    """Rebuild the network stored in a nafrestore checkpoint (name + arguments + weights), in eval mode.

    Raises:
        CheckpointError: the file holds bare weights without the architecture.
    """
    from . import create_model

    if "model_name" not in ckpt:
        raise CheckpointError(
            f"{source} holds bare weights without the architecture (e.g. an official NAFNet release). "
            f"Name the architecture with --model, e.g. --model configs/nafnet-sidd-width32.yaml."
        )
    model = create_model(ckpt["model_name"], tlc_train_size=ckpt.get("tlc_train_size"), **ckpt.get("model_args", {}))
    return load_weights(model, state_dict_from(ckpt), source).eval()
