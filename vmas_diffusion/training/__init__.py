"""Training: the objective (task), the Accelerate loop, checkpoints and trackers."""

from .checkpoints import CheckpointManager, latest_checkpoint, list_checkpoints
from .task import VideoMusicTask, item_generators, mix_seed
from .trackers import JSONLTracker, read_metrics
from .trainer import Trainer, TrainResult, train

__all__ = [
    "CheckpointManager",
    "JSONLTracker",
    "TrainResult",
    "Trainer",
    "VideoMusicTask",
    "item_generators",
    "latest_checkpoint",
    "list_checkpoints",
    "mix_seed",
    "read_metrics",
    "train",
]
