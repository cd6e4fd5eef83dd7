"""Training: the loop, its config, checkpoints, batching, distributed plumbing; knows no model and no task."""

from .batching import TokenBudgetBatcher, collate_pad
from .checkpoint import (
    CheckpointError, average_checkpoints, latest_checkpoint, load_checkpoint, save_best,
    save_checkpoint,
)
from .config import OptimConfig, ScheduleConfig, TrainConfig
from .distributed import DistInfo, init_distributed
from .trainer import Trainer, TrainingInterrupted, TrainResult, resolve_device, seed_everything

__all__ = [
    "TokenBudgetBatcher", "collate_pad", "CheckpointError", "average_checkpoints",
    "latest_checkpoint", "load_checkpoint", "save_best", "save_checkpoint",
    "OptimConfig", "ScheduleConfig", "TrainConfig", "DistInfo", "init_distributed",
    "Trainer", "TrainingInterrupted", "TrainResult", "resolve_device", "seed_everything",
]
