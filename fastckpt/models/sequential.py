"""``Sequential``: a plain stack of layers."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np

from fastckpt.layers.base import Layer
from fastckpt.layers.input_layer import InputLayer, KerasTensor
from fastckpt.models.model import Model
from fastckpt.saving.model_registry import register_model_class
from fastckpt.saving.serialization import deserialize_layer, serialize_layer

__all__ = ["Sequential"]


class Sequential(Model):
    """A linear stack of layers, as ``tf.keras.Sequential``.

    Example:
        >>> from fastckpt import keras
        >>> model = keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), keras.layers.Dense(2)])
        >>> model.count_params()
        26
    """

    _is_graph_network = True
    _is_layer_chain = True  # the fused trainer may run it as a chain of layers

    def __init__(self, layers: Optional[List[Any]] = None, name: Optional[str] = None):
        super().__init__(name=name)
        self._layers: List[Layer] = []
        self._input_layer: Optional[InputLayer] = None
        self._built_input_shape = None
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> List[Layer]:
        return list(self._layers)

    @property
    def built(self) -> bool:
        return self._built_input_shape is not None

    def add(self, layer) -> None:
        """Append a layer (or a ``keras.Input(...)`` placeholder as the first item)."""
        if isinstance(layer, KerasTensor):
            layer = layer._input_layer
        if not isinstance(layer, Layer):
            raise TypeError(f"The added layer must be an instance of class Layer. Received: "
                            f"layer={layer!r} of type {type(layer).__name__}.")
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError("An InputLayer can only be the first layer of a Sequential model")
            self._input_layer = layer
            self._ensure_built(layer._batch_input_shape)
            return
        if any(existing.name == layer.name for existing in self._layers):
            raise ValueError(f"All layers added to a Sequential model should have unique names. "
                             f"Name {layer.name!r} is already the name of a layer in this model.")
        self._layers.append(layer)
        if len(self._layers) == 1 and self._input_layer is None and layer._batch_input_shape:
            self._input_layer = InputLayer(batch_input_shape=layer._batch_input_shape,
                                           name=f"{layer.name}_input")
        if self.built:
            # Build the new layer on the output of the stack so far.
            shape, self._built_input_shape = self._built_input_shape, None
            self._ensure_built(shape)
        elif self._input_layer is not None:
            self._ensure_built(self._input_layer._batch_input_shape)

    def pop(self) -> Layer:
        if not self._layers:
            raise TypeError("There are no layers in the model.")
        layer = self._layers.pop()
        if self._layers and self.built:
            # The model's output is now the new last layer's (stale shapes mis-sized predict).
            self._output = self._layer_output_shapes()[-1]
        elif not self._layers:
            self._built_input_shape = None
            self._output = None
        self._trainer.reset()
        return layer

    def build(self, input_shape=None) -> None:
        if input_shape is None:
            if self._input_layer is None:
                raise ValueError("You must provide an input_shape argument to build a Sequential "
                                 "model without an Input.")
            input_shape = self._input_layer._batch_input_shape
        self._ensure_built(tuple(input_shape))

    def _ensure_built(self, input_shape) -> None:
        if self.built:
            return
        shape = tuple(input_shape)
        for layer in self._layers:
            layer._maybe_build(shape)
            shape = layer._infer_output_shape(shape)
        if self._layers:
            self._built_input_shape = tuple(input_shape)
            self._output = shape

    @property
    def input_shape(self):
        if not self.built:
            raise AttributeError(f"Model {self.name!r} has not been built: no input shape yet")
        return self._built_input_shape

    @property
    def output_shape(self):
        if not self.built:
            raise AttributeError(f"Model {self.name!r} has not been built: no output shape yet")
        return self._output

    def _layer_output_shapes(self) -> List[tuple]:
        shapes, shape = [], self._built_input_shape
        for layer in self._layers:
            shape = layer._infer_output_shape(shape)
            shapes.append(shape)
        return shapes

    def summary(self, line_length: Optional[int] = None, positions=None,
                print_fn: Optional[Callable[[str], None]] = None) -> None:
        """Print the layer table with tf.keras' columns and parameter counts."""
        if not self.built:
            raise ValueError("This model has not yet been built. Build the model first by calling "
                             "`build()` or by calling the model on a batch of data.")
        print_fn = print_fn or print
        line_length = line_length or 65
        positions = positions or [0.45, 0.85, 1.0]
        if positions[-1] <= 1:
            positions = [int(line_length * p) for p in positions]

        def row(fields):
            line = ""
            for i, field in enumerate(fields):
                if i > 0:
                    line = line[:-1] + " "
                line += str(field)
                line = line[: positions[i]]
                line += " " * (positions[i] - len(line))
            print_fn(line)

        print_fn(f'Model: "{self.name}"')
        print_fn("_" * line_length)
        row(["Layer (type)", "Output Shape", "Param #"])
        print_fn("=" * line_length)
        shapes = self._layer_output_shapes()
        for i, (layer, shape) in enumerate(zip(self._layers, shapes)):
            row([f"{layer.name} ({type(layer).__name__})", str(shape), layer.count_params()])
            print_fn("=" * line_length if i == len(self._layers) - 1 else "_" * line_length)
        trainable = sum(int(np.prod(w.shape)) for w in self.trainable_weights)
        total = self.count_params()
        print_fn(f"Total params: {total:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {total - trainable:,}")
        print_fn("_" * line_length)

    # --- config ---------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        layers = []
        if self._input_layer is not None:
            layers.append(serialize_layer(self._input_layer))
        layers.extend(serialize_layer(layer) for layer in self._layers)
        return {"name": self.name, "layers": layers}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects=None) -> "Sequential":
        model = cls(name=config.get("name"))
        for layer_config in config.get("layers", []):
            model.add(deserialize_layer(layer_config, custom_objects=custom_objects))
        return model


register_model_class("Sequential", Sequential)
