"""Training engine: optimizer and schedule, EMA, checkpoints, logging, signals, one step and the loop.

The entry point is :func:`train` (``nafrestore train`` calls it); the pieces are public for reuse and tests, with
the losses (:mod:`nafrestore.losses`, which the config checks loss names against) and the process-group helpers
(:mod:`nafrestore.utils.distributed`, which evaluation uses too) re-exported here. Validation scores through
:func:`nafrestore.evaluation.score`, the loop ``nafrestore eval`` uses too.
"""

from ..losses import LOSSES, CharbonnierLoss, L1Loss, MSELoss, PSNRLoss, WeightedLoss, build_loss
from ..utils.distributed import DistInfo, setup_distributed, teardown_distributed
from ..utils.files import read_metrics
from .checkpoint import (
    FORMAT_VERSION,
    config_for_resume,
    load_checkpoint,
    make_checkpoint,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap_model,
)
from .ema import ModelEMA
from .logging import RunLogger
from .optim import WarmupCosineSchedule, build_optimizer, lr_factor, param_groups
from .signals import StopSignals, TrainingInterrupted, resume_command
from .step import train_step
from .trainer import LogWindow, TrainingDivergedError, TrainState, train

__all__ = [
    "FORMAT_VERSION",
    "LOSSES",
    "CharbonnierLoss",
    "DistInfo",
    "L1Loss",
    "LogWindow",
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
    "load_checkpoint",
    "lr_factor",
    "make_checkpoint",
    "model_state",
    "param_groups",
    "read_metrics",
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
