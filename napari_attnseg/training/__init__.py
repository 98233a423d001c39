"""Training: reviewed-slice datasets, augmentation, Dice+CE losses, the training loop (a
generator job), the quick fine-tune into the model registry, and distributed helpers.

Importing this package imports torch (widgets import it lazily).
"""

from .dataset import (
    TrainingPair,
    data_hash,
    read_dataset,
    reviewed_mask,
    reviewed_slices,
    split_by_group,
    split_reviewed_slices,
)
from .finetune import FinetuneResult, finetune_job
from .loop import TrainConfig, TrainingError, TrainResult, evaluate_dice, train, train_job

__all__ = [
    "FinetuneResult",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "TrainingPair",
    "data_hash",
    "evaluate_dice",
    "finetune_job",
    "read_dataset",
    "reviewed_mask",
    "reviewed_slices",
    "split_by_group",
    "split_reviewed_slices",
    "train",
    "train_job",
]
