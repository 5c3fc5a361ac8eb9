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


# --- normalization, embedding and pooling layers ------------------------------------------------
from fastckpt.layers.embedding import Embedding  # noqa: E402
from fastckpt.layers.normalization import (  # noqa: E402
    BatchNormalization, LayerNormalization, Normalization)
from fastckpt.layers.pooling import (  # noqa: E402
    GlobalAveragePooling1D, GlobalAvgPool1D, GlobalMaxPool1D, GlobalMaxPooling1D)

__all__ += ["BatchNormalization", "LayerNormalization", "Normalization", "Embedding",
            "GlobalAveragePooling1D", "GlobalMaxPooling1D", "GlobalAvgPool1D", "GlobalMaxPool1D"]

