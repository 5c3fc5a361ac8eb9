"""``InputLayer`` and ``Input``: a model's inputs as symbolic tensors."""

from __future__ import annotations

from typing import Any, Dict, Optional

from fastckpt import backend
from fastckpt.layers.base import KerasTensor, Layer, Node, _as_shape

__all__ = ["InputLayer", "Input", "KerasTensor"]


def _input_name() -> str:
    # tf.keras numbers automatic input names from 1: input_1, input_2, ...
    name = backend.unique_name("input")
    return backend.unique_name("input") if name == "input" else name


class InputLayer(Layer):
    """Declares the input shape of a model; does no computation. Its one node's output is the
    symbolic tensor ``keras.Input`` returns (``layer.output``).

    Example:
        >>> InputLayer(input_shape=(784,)).get_config()["batch_input_shape"]
        [None, 784]
    """

    _is_input_layer = True

    def __init__(self, input_shape=None, batch_size=None, dtype=None, name=None,
                 batch_input_shape=None, shape=None, sparse=None, ragged=None, batch_shape=None,
                 input_tensor=None, optional=False, **kwargs):
        if shape is not None and input_shape is None:
            input_shape = shape
        if batch_shape is not None and batch_input_shape is None:
            batch_input_shape = batch_shape
        if input_shape is None and batch_input_shape is None:
            raise ValueError("InputLayer: expected input_shape=(...) or batch_input_shape=(None, ...)")
        if input_tensor is not None:
            raise NotImplementedError("InputLayer: input_tensor is not supported")
        if sparse or ragged or optional:
            raise NotImplementedError("InputLayer: sparse, ragged and optional inputs are not "
                                      "supported")
        super().__init__(name=name, dtype=dtype, input_shape=input_shape,
                         batch_input_shape=batch_input_shape, batch_size=batch_size, **kwargs)
        self.built = True
        Node(self, None, [KerasTensor(self._batch_input_shape, self.dtype, name=self.name)])

    def compute_output_shape(self, input_shape):
        return tuple(self._batch_input_shape)

    def get_config(self) -> Dict[str, Any]:
        return {"batch_input_shape": list(self._batch_input_shape), "dtype": self.dtype,
                "sparse": False, "ragged": False, "name": self.name}


def Input(shape=None, batch_size: Optional[int] = None, name: Optional[str] = None, dtype=None,
          batch_shape=None, sparse=None, ragged=None, tensor=None, optional=False,
          **kwargs) -> KerasTensor:
    """``keras.Input(shape=(784,))``: a symbolic input for ``keras.Model(inputs, outputs)``
    (or the first item of a ``Sequential``). ``None`` marks a dimension of any size; the batch
    dimension is added in front (``batch_size``, default unknown)."""
    if kwargs:
        raise TypeError(f"Input: unexpected keyword argument(s) {sorted(kwargs)}")
    if shape is None and batch_shape is None:
        raise ValueError("Please provide to Input a `shape` or a `batch_shape` argument. Note "
                         "that `shape` does not include the batch dimension.")
    if shape is not None and batch_shape is not None:
        raise ValueError("Only provide the `shape` OR `batch_shape` argument to Input, not both.")
    if isinstance(shape, int):
        shape = (shape,)
    if name is None:
        name = _input_name()
    if batch_shape is not None:
        layer = InputLayer(batch_input_shape=_as_shape(batch_shape), name=name, dtype=dtype,
                           sparse=sparse, ragged=ragged, input_tensor=tensor, optional=optional)
    else:
        layer = InputLayer(input_shape=shape, batch_size=batch_size, name=name, dtype=dtype,
                           sparse=sparse, ragged=ragged, input_tensor=tensor, optional=optional)
    return layer.output
