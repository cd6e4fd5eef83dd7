"""Training: checkpoints, batching; knows no model and no task."""

from .batching import TokenBudgetBatcher, collate_pad
from .checkpoint import (
    CheckpointError, average_checkpoints, latest_checkpoint, load_checkpoint, save_best,
    save_checkpoint,
)

__all__ = [
    "TokenBudgetBatcher", "collate_pad", "CheckpointError", "average_checkpoints",
    "latest_checkpoint", "load_checkpoint", "save_best", "save_checkpoint",
]
