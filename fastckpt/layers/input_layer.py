"""``InputLayer`` and ``Input``: declare a model's input shape."""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastckpt.layers.base import Layer, _as_shape

__all__ = ["InputLayer", "Input", "KerasTensor"]


class InputLayer(Layer):
    """Declares the input shape of a model; does no computation.

    Example:
        >>> InputLayer(input_shape=(784,)).get_config()["batch_input_shape"]
        [None, 784]
    """

    def __init__(self, input_shape=None, batch_size=None, dtype=None, name=None,
                 batch_input_shape=None, shape=None, sparse=None, ragged=None, **kwargs):
        if shape is not None and input_shape is None:
            input_shape = shape
        if input_shape is None and batch_input_shape is None:
            raise ValueError("InputLayer: expected input_shape=(...) or batch_input_shape=(None, ...)")
        super().__init__(name=name, dtype=dtype, input_shape=input_shape,
                         batch_input_shape=batch_input_shape, batch_size=batch_size, **kwargs)
        self.built = True

    def get_config(self) -> Dict[str, Any]:
        return {"batch_input_shape": list(self._batch_input_shape), "dtype": self.dtype,
                "sparse": False, "ragged": False, "name": self.name}


class KerasTensor:
    """The symbolic result of ``Input(...)``: carries a shape and the InputLayer that made it."""

    def __init__(self, layer: InputLayer):
        self._input_layer = layer

    @property
    def shape(self):
        return tuple(self._input_layer._batch_input_shape)

    @property
    def dtype(self) -> str:
        return self._input_layer.dtype

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self._input_layer.name}>"


def Input(shape=None, batch_size: Optional[int] = None, name: Optional[str] = None, dtype=None,
          batch_shape=None, **kwargs) -> KerasTensor:
    """``keras.Input(shape=(784,))``: a placeholder to start a ``Sequential`` with."""
    if batch_shape is not None:
        layer = InputLayer(batch_input_shape=_as_shape(batch_shape), name=name, dtype=dtype)
    else:
        layer = InputLayer(input_shape=shape, batch_size=batch_size, name=name, dtype=dtype)
    return KerasTensor(layer)
