"""Training engine: losses, optimizer and schedule, EMA, checkpoints, logging, validation, DDP and the loop.

The entry point is :func:`train` (``nafrestore train`` calls it); the pieces are public for reuse and tests.
"""

from .checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    make_checkpoint,
    model_state,
    resolve_resume_path,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap_model,
)
from .distributed import DistInfo, setup_distributed, teardown_distributed
from .ema import ModelEMA
from .logging import RunLogger, read_metrics
from .losses import LOSSES, CharbonnierLoss, L1Loss, MSELoss, PSNRLoss, WeightedLoss, build_loss
from .optim import WarmupCosineSchedule, build_optimizer, lr_factor, param_groups
from .trainer import (
    BatchStream,
    StopSignals,
    TrainingDivergedError,
    TrainingInterrupted,
    TrainState,
    config_for_resume,
    resume_command,
    train,
    train_step,
)
from .validation import evaluate, restore

__all__ = [
    "FORMAT_VERSION",
    "LOSSES",
    "BatchStream",
    "CharbonnierLoss",
    "DistInfo",
    "L1Loss",
    "MSELoss",
    "ModelEMA",
    "PSNRLoss",
    "RunLogger",
    "StopSignals",
    "TrainState",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "WarmupCosineSchedule",
    "WeightedLoss",
    "build_loss",
    "build_optimizer",
    "config_for_resume",
    "evaluate",
    "load_checkpoint",
    "lr_factor",
    "make_checkpoint",
    "model_state",
    "param_groups",
    "read_metrics",
    "resolve_resume_path",
    "restore",
    "resume_command",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "setup_distributed",
    "teardown_distributed",
    "train",
    "train_step",
    "unwrap_model",
]
