"""Callbacks for ``fit``/``evaluate``/``predict``: a re-export layer, one class per module.

The training loop drives them through ``CallbackList``; see its docstring for the batch-hook flags.
"""

from fastckpt.callbacks.backup_and_restore import BackupAndRestore
from fastckpt.callbacks.callback import Callback
from fastckpt.callbacks.callback_list import CallbackList
from fastckpt.callbacks.csv_logger import CSVLogger
from fastckpt.callbacks.early_stopping import EarlyStopping
from fastckpt.callbacks.history import History
from fastckpt.callbacks.lambda_callback import LambdaCallback
from fastckpt.callbacks.lr_scheduler import LearningRateScheduler
from fastckpt.callbacks.model_checkpoint import ModelCheckpoint
from fastckpt.callbacks.progbar_logger import ProgbarLogger
from fastckpt.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from fastckpt.callbacks.tensorboard import TensorBoard
from fastckpt.callbacks.terminate_on_nan import TerminateOnNaN

# Checkpointing callbacks live in their own modules (model_checkpoint.py, backup_and_restore.py), each
# added here with one import line and one __all__ entry.

__all__ = [
    "BackupAndRestore",
    "Callback",
    "CallbackList",
    "CSVLogger",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
]
