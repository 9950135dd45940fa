"""Training checkpoints: a self-describing dict, written atomically, readable with ``weights_only=True``.

Layout (``format_version`` 1)::

    format_version     int, 1
    nafrestore_version str
    model_name         str, registered model name
    model_args         dict, the model's keyword arguments (lists, never tuples)
    tlc_train_size     int | None, the TLC training size when the config turns TLC on
    config             dict, config_to_dict(cfg): the whole resolved config
    weights            "raw" | "ema": which weights ``model`` holds
    model              state dict of the unwrapped module (no ``module.`` / ``_orig_mod.`` prefixes)
    ema                state dict of the EMA weights, or None (EMA off, or best.pt where ``model`` already is the EMA)
    optimizer          AdamW state dict (None in best.pt)
    scheduler          WarmupCosineSchedule state dict (None in best.pt)
    scaler             GradScaler state dict ({} unless fp16; None in best.pt)
    step               int, optimizer iterations done (skipped non-finite steps included)
    best_metric        float | None, best validation value of val.best_metric so far
    best_step          int | None, the step at which it was reached
    elapsed_s          float, training wall-clock seconds so far (drives a time-budget schedule)
    rng                {"torch": uint8 tensor, "cuda": [uint8 tensors], "numpy": {...}, "python": {...}} of rank 0,
                       plus "ranks": [one such dict per rank] for multi-process runs (None in best.pt)
    data_order         dict | None, what the training data order depends on besides the seed and the step, by
                       setting (``data.format: shards``: processes, data.num_workers, train.batch_size, run.seed,
                       data.shards; see :func:`nafrestore.data.check_data_order`); None for the other formats and
                       in best.pt. Absent from older checkpoints.
    memory_format      "contiguous" | "channels_last": the training memory format (train.memory_format), which a
                       resume with ``auto`` keeps. Absent from older checkpoints. Tensors are stored contiguous.
    threads            int | None: torch's intra-op thread count of the run (rank 0's), which a resume reuses (the
                       count changes how CPU reductions split, so float rounding). Absent from older checkpoints.

``last.pt`` holds the raw weights in ``model`` (and the EMA in ``ema``): everything needed to resume. ``best.pt``
holds the weights validation scored, i.e. the EMA weights when EMA is on, in ``model``; it carries no optimizer
state (it is for inference and fine-tuning, not for resuming).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, config_from_dict, load_config
from ..errors import CheckpointError, ConfigError
from ..loading import find_checkpoint, load_weights, read_checkpoint, strip_prefixes
from ..utils.files import atomic_write
from ..version import __version__

FORMAT_VERSION = 1


# ----------------------------------------------------------------------------------------------------------------
# Unwrapping


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile (``_orig_mod``) and DistributedDataParallel/DataParallel (``module``)
    wrappers, in any nesting."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unwrapped module's state dict, on the CPU (so a checkpoint loads on any machine)."""
    state = strip_prefixes(unwrap_model(model).state_dict())
    # Contiguous whatever the training memory format, so safetensors (which needs it) and any model can take them.
    return {k: v.detach().to("cpu", copy=True, memory_format=torch.contiguous_format) for k, v in state.items()}


def to_plain(value: Any) -> Any:
    """Containers as plain dicts/lists (tuples become lists) of str/int/float/bool/None, for ``weights_only``."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------------------------
# RNG states in weights_only-friendly form


def rng_state() -> dict[str, Any]:
    """This process's random states: torch CPU, every initialised CUDA device, NumPy's global and Python's ``random``.

    NumPy's and Python's states are converted to tensors and plain numbers, which ``torch.load(weights_only=True)``
    accepts (their native forms hold NumPy arrays and tuples of 625 ints).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss_next},
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where this machine has those devices)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state((npst["kind"], keys, npst["pos"], npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))


# ----------------------------------------------------------------------------------------------------------------
# Writing and reading


def make_checkpoint(
    *,
    config: Mapping[str, Any],
    model_name: str,
    model_args: Mapping[str, Any],
    tlc_train_size: int | None,
    model: Mapping[str, torch.Tensor],
    weights: str = "raw",
    ema: Mapping[str, torch.Tensor] | None = None,
    optimizer: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    scaler: Mapping[str, Any] | None = None,
    step: int = 0,
    best_metric: float | None = None,
    best_step: int | None = None,
    elapsed_s: float = 0.0,
    rng: Mapping[str, Any] | None = None,
    data_order: Mapping[str, Any] | None = None,
    memory_format: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict documented at the top of this module from plain parts."""
    return {
        "format_version": FORMAT_VERSION,
        "nafrestore_version": __version__,
        "model_name": model_name,
        "model_args": to_plain(dict(model_args)),
        "tlc_train_size": None if tlc_train_size is None else int(tlc_train_size),
        "config": to_plain(dict(config)),
        "weights": weights,
        "model": dict(strip_prefixes(model)),
        "ema": None if ema is None else dict(strip_prefixes(ema)),
        "optimizer": None if optimizer is None else dict(optimizer),
        "scheduler": None if scheduler is None else to_plain(dict(scheduler)),
        "scaler": None if scaler is None else dict(scaler),
        "step": int(step),
        "best_metric": None if best_metric is None else float(best_metric),
        "best_step": None if best_step is None else int(best_step),
        "elapsed_s": float(elapsed_s),
        "rng": None if rng is None else dict(rng),
        "data_order": None if data_order is None else to_plain(dict(data_order)),
        "memory_format": memory_format,
        "threads": None if threads is None else int(threads),
    }


def save_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``ckpt`` to ``path`` atomically (:func:`~nafrestore.utils.files.atomic_write`): a kill at any moment
    leaves either the previous file or the new one, never a truncated one."""
    with atomic_write(path) as f:
        torch.save(dict(ckpt), f)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``) onto the CPU and check its format.

    Raises:
        CheckpointError: missing/unreadable file, or not a nafrestore training checkpoint of a known version.
    """
    ckpt = read_checkpoint(path)
    version = ckpt.get("format_version")
    if version is None or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(
            f"{path} is not a nafrestore training checkpoint (no format_version/model/config entries); "
            "to resume, give a run directory or its checkpoints/last.pt."
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version}, newer than this nafrestore understands ({FORMAT_VERSION}); "
            "upgrade nafrestore."
        )
    return ckpt


def config_for_resume(
    resume: str | Path | None, config: str | Path | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The config of a run to start or resume.

    Args:
        resume: a run directory or checkpoint to resume (None: a fresh run).
        config: a YAML config; when None (resume only), the config stored in the checkpoint is used.
        overrides: dotted ``key=value`` overrides applied on top (e.g. ``train.iters=20000`` to extend a run).

    Returns:
        The validated config. When resuming a checkpoint inside ``RUN_DIR/checkpoints/``, ``run.dir`` is set to
        RUN_DIR (unless overridden) so the run continues in its own directory.

    Raises:
        ConfigError: neither a config nor a checkpoint, or an invalid override.
        CheckpointError: the checkpoint cannot be read.
    """
    if resume is None:
        if config is None:
            raise ConfigError("Give a config file (e.g. configs/lka-nafnet-w12.yaml) or a run directory to resume.")
        return load_config(config, overrides)
    ckpt_path = resume_checkpoint(resume)
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        stored = load_checkpoint(ckpt_path)["config"]
        cfg = config_from_dict(stored, source=f"{ckpt_path} (stored config)", overrides=overrides)
    run_dir = run_dir_of(ckpt_path)
    if run_dir is not None and not any(o.startswith("run.dir=") for o in overrides):
        cfg.run.dir = str(run_dir)
    return cfg


def resume_checkpoint(resume: str | Path) -> Path:
    """The checkpoint to resume from: ``RUN_DIR/checkpoints/last.pt`` for a run directory, else the file itself.

    Raises:
        CheckpointError: nothing to resume there.
    """
    if not Path(resume).exists():
        raise CheckpointError(f"Cannot resume from {resume}: no such run directory or checkpoint file.")
    try:
        return find_checkpoint(resume, prefer="last", fallback=False)
    except CheckpointError:
        raise CheckpointError(
            f"{resume} is a directory without checkpoints/last.pt: nothing to resume. Give a run directory that has "
            "trained at least until its first checkpoint, or a checkpoint file."
        ) from None


#: What a run writes into its directory; ``--overwrite`` removes exactly these (and nothing else the folder holds).
RUN_FILES = ("checkpoints", "tensorboard", "report", "metrics.jsonl", "train.log", "curves.png", "config.yaml",
             "summary.json", "eval.json")  # fmt: skip


def claim_run_dir(run_dir: Path, *, overwrite: bool = False) -> None:
    """Make sure a fresh run does not write into another run's directory.

    A directory that holds checkpoints or a metrics log is another run's: refused with one message offering
    ``--resume``, a new ``run.dir`` or ``--overwrite``, which removes that run's files (:data:`RUN_FILES`) first.
    Refusing, rather than numbering a new directory (``runs/x-2``) as some tools do, keeps a run's name meaning one
    run: ``--resume runs/x``, ``eval runs/x`` and ``infer --ckpt runs/x`` all name the directory the config says.

    Raises:
        ConfigError: the directory holds a run and ``overwrite`` is off.
    """
    ckpts = sorted((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").is_dir() else []
    logged = (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size > 0
    if not ckpts and not logged:
        return
    if not overwrite:
        held = ", ".join(f"checkpoints/{p.name}" for p in ckpts) or "metrics.jsonl"
        raise ConfigError(
            f"{run_dir} already holds a run ({held}). Continue it with `nafrestore train --resume {run_dir}`, "
            f"start a new run elsewhere with run.dir=NEW_DIR (or run.name=NEW_NAME), or replace it with --overwrite."
        )
    for name in RUN_FILES:
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def run_dir_of(ckpt_path: Path) -> Path | None:
    """The run directory a checkpoint belongs to (``RUN_DIR/checkpoints/x.pt`` -> RUN_DIR), or None."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else None


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load a state dict into the unwrapped ``model`` strictly, with a readable error on mismatch."""
    load_weights(unwrap_model(model), strip_prefixes(state), source)


def weights_are_finite(model: nn.Module) -> bool:
    """True when every floating-point parameter and buffer of ``model`` is finite."""
    for t in unwrap_model(model).state_dict().values():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            return False
    return True


__all__ = [
    "FORMAT_VERSION",
    "load_checkpoint",
    "load_model_state",
    "make_checkpoint",
    "model_state",
    "RUN_FILES",
    "claim_run_dir",
    "config_for_resume",
    "resume_checkpoint",
    "rng_state",
    "run_dir_of",
    "save_checkpoint",
    "set_rng_state",
    "to_plain",
    "unwrap_model",
    "weights_are_finite",
]
