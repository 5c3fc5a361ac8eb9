"""The ``tf.keras``-shaped namespace: ``from fastckpt import keras``. Re-exports only."""

from fastckpt.keras import callbacks, datasets, layers, losses, metrics, models, optimizers, utils
from fastckpt.keras import activations  # noqa: E402
from fastckpt.keras import constraints, initializers, regularizers
from fastckpt.layers import Input
from fastckpt.models import Model, Sequential
from fastckpt.backend import clear_session

__all__ = ["activations", "callbacks", "constraints", "datasets", "initializers", "layers", "losses",
           "metrics", "models", "optimizers", "regularizers", "utils", "Input", "Model", "Sequential",
           "clear_session"]
