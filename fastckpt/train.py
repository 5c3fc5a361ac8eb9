"""``tf.train``-shaped namespace: checkpoints without a model class in sight."""

from fastckpt.checkpoint.checkpoint import Checkpoint
from fastckpt.checkpoint.manager import CheckpointManager
from fastckpt.checkpoint.reader import CheckpointReader, list_variables, load_checkpoint
from fastckpt.checkpoint.state import latest_checkpoint

__all__ = ["Checkpoint", "CheckpointManager", "CheckpointReader", "latest_checkpoint",
           "load_checkpoint", "list_variables"]
