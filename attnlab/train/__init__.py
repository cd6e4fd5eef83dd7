"""Training: the loop, its config, checkpoints, batching, distributed plumbing; knows no model and no task."""

from .batching import ExampleBatcher, TokenBudgetBatcher, collate_pad, make_batcher
from .checkpoint import (
    TrainCheckpointError, average_checkpoints, latest_checkpoint, load_checkpoint, save_best,
    save_checkpoint,
)
from .config import OptimConfig, ScheduleConfig, TrainConfig
from .losses import ClassCrossEntropy, Loss, MeanSquaredError, TokenCrossEntropy
from .distributed import DistInfo, init_distributed
from .trainer import Trainer, TrainingInterrupted, TrainResult, resolve_device, seed_everything

__all__ = [
    "TokenBudgetBatcher", "ExampleBatcher", "make_batcher", "collate_pad", "TrainCheckpointError", "average_checkpoints",
    "latest_checkpoint", "load_checkpoint", "save_best", "save_checkpoint",
    "OptimConfig", "ScheduleConfig", "TrainConfig", "Loss", "TokenCrossEntropy", "ClassCrossEntropy",
    "MeanSquaredError", "DistInfo", "init_distributed",
    "Trainer", "TrainingInterrupted", "TrainResult", "resolve_device", "seed_everything",
]
