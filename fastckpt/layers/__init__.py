"""Layers: the built-in Keras layers and the ``Layer`` base for your own.

Every public layer class listed in ``__all__`` is a built-in that saved configs may name
(``fastckpt.saving.serialization.BUILTIN_LAYERS`` is derived from this list).
"""

from fastckpt.layers.base import InputSpec, Layer
from fastckpt.layers.dense import Dense
from fastckpt.layers.dropout import Dropout
from fastckpt.layers.input_layer import Input, InputLayer

__all__ = ["Layer", "Dense", "Dropout", "InputLayer", "Input", "InputSpec"]

# --- activation, shape, merge, noise and rescaling layers ---------------------------------------
from fastckpt.layers.activation import Activation  # noqa: E402
from fastckpt.layers.advanced_activations import ELU, LeakyReLU, PReLU, ReLU, Softmax  # noqa: E402
from fastckpt.layers.merge import (  # noqa: E402
    Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average, concatenate,
    maximum, minimum, multiply, subtract)
from fastckpt.layers.noise import AlphaDropout, GaussianDropout, GaussianNoise  # noqa: E402
from fastckpt.layers.rescaling import Rescaling  # noqa: E402
from fastckpt.layers.reshaping import Flatten, Reshape  # noqa: E402

__all__ += ["Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Flatten", "Reshape",
            "Rescaling", "Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum",
            "Minimum", "GaussianNoise", "GaussianDropout", "AlphaDropout", "add", "subtract",
            "multiply", "average", "maximum", "minimum", "concatenate"]


# --- normalization, embedding and pooling layers ------------------------------------------------
from fastckpt.layers.embedding import Embedding  # noqa: E402
from fastckpt.layers.normalization import (  # noqa: E402
    BatchNormalization, LayerNormalization, Normalization)
from fastckpt.layers.pooling import (  # noqa: E402
    GlobalAveragePooling1D, GlobalAvgPool1D, GlobalMaxPool1D, GlobalMaxPooling1D)

__all__ += ["BatchNormalization", "LayerNormalization", "Normalization", "Embedding",
            "GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D"]

