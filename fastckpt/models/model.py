"""``Model``: weights, compile, random state and the save/load delegates.

``fit``/``evaluate``/``predict`` are methods of ``Model`` that delegate to its ``Trainer``
(``fastckpt.training``), which holds the loop.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from fastckpt import backend, distribute, losses as losses_mod, metrics as metrics_mod, optimizers
from fastckpt.checks import is_int, unique_objects
from fastckpt.errors import CorruptCheckpointError
from fastckpt.layers.base import Layer, is_symbolic
from fastckpt.layers.input_layer import Input, InputLayer
from fastckpt.saving import weights_io
from fastckpt.saving.api import save_model
from fastckpt.saving.model_registry import model_class
from fastckpt.training import compile_utils
from fastckpt.training.data import model_inputs
from fastckpt.training.trainer import Trainer
from fastckpt.variables import Variable

__all__ = ["Model"]


def _in(layer, layers) -> bool:
    return any(layer is other for other in layers)

_TAKES_MASK: Dict[Any, bool] = {}


def _takes_mask(fn) -> bool:
    """Whether ``fn`` accepts ``mask=`` (by name or through ``**kwargs``); cached per function."""
    key = getattr(fn, "__func__", fn)
    if key not in _TAKES_MASK:
        try:
            params = inspect.signature(fn).parameters.values()
            _TAKES_MASK[key] = any(p.name == "mask" or p.kind is p.VAR_KEYWORD for p in params)
        except (TypeError, ValueError):
            _TAKES_MASK[key] = False
    return _TAKES_MASK[key]


def _mask_kwargs(layer, mask, fn) -> dict:
    """Keras passes a mask only to a layer that supports masking and whose ``fn`` (``call`` or
    ``forward_train``) takes ``mask``."""
    if mask is None or not getattr(layer, "supports_masking", False) or not _takes_mask(fn):
        return {}
    return {"mask": mask}


def _next_mask(layer, inputs, mask):
    """The mask after ``layer``: its ``compute_mask``, else passed through by a layer that
    supports masking and dropped by one that does not."""
    fn = getattr(layer, "compute_mask", None)
    if fn is not None:
        return fn(inputs, mask)
    return mask if getattr(layer, "supports_masking", False) else None


def _serialize_struct(value, module):
    """A compile argument as configs: names kept as given, objects serialized, per structure."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {k: _serialize_struct(v, module) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_serialize_struct(v, module) for v in value]
    try:
        return module.serialize(value)
    except (AttributeError, TypeError, ValueError):
        return getattr(value, "__name__", None) or getattr(value, "name", None) or repr(value)


class Model(Layer):
    """Base of ``Sequential`` and ``Functional``: weights, compile configuration; the loop is
    its ``Trainer``'s. ``keras.Model(inputs, outputs)`` builds a ``Functional`` model. A model is
    a layer too: it can be called on symbolic tensors inside another model."""

    def __new__(cls, *args, **kwargs):
        if cls is Model and (args or "inputs" in kwargs or "outputs" in kwargs):
            return super().__new__(model_class("Functional"))
        return super().__new__(cls)

    def __init__(self, name: Optional[str] = None, trainable: bool = True, dtype=None, **kwargs):
        for k in ("autocast", "dynamic"):
            kwargs.pop(k, None)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) "
                            f"{sorted(kwargs)}")
        if name is None:
            name = backend.unique_name(backend.to_snake_case(type(self).__name__))
        else:
            if not isinstance(name, str) or not name:
                raise TypeError(f"Expected a non-empty string model name, got {name!r}")
            backend.reserve_name(name)
        self.name = name
        self._trainable = bool(trainable)
        self.dtype = "float32"
        self._batch_input_shape = None
        self._weights = []
        self._workspace = {}
        self._grads = []
        self._inbound_nodes = []
        self.optimizer: Optional[optimizers.Optimizer] = None
        self.loss: Optional[losses_mod.Loss] = None
        self.compiled_metrics: List[metrics_mod.Metric] = []
        self._compiled: Optional[compile_utils.CompiledOutputs] = None
        self._output_losses: List[Optional[losses_mod.Loss]] = []
        self._compile_config: Optional[Dict[str, Any]] = None
        self._loss_tracker = metrics_mod.Mean(name="loss")
        self.stop_training = False
        self.history = None
        self._shuffle_seed: Optional[int] = None
        self._shuffle_epochs_drawn = 0
        self._trainer = Trainer(self)
        backend.note_model_created()
        # The strategy whose scope() the model was created in (None: one process).
        self._distribute_strategy = distribute.get_strategy() if distribute.has_strategy() else None

    # --- Sequential and Functional override these; a subclass with __init__ + call uses them ----
    def __setattr__(self, name: str, value) -> None:
        # A subclassed model's layers are the Layer attributes it sets (as Keras tracks them).
        if not name.startswith("_"):
            items = value if isinstance(value, (list, tuple)) else [value]
            if items and all(isinstance(v, Layer) for v in items):
                tracked = self.__dict__.setdefault("_tracked_layers", [])
                for v in items:
                    if not any(v is t for t in tracked):
                        tracked.append(v)
        object.__setattr__(self, name, value)

    @property
    def layers(self) -> List[Layer]:
        return list(self.__dict__.get("_tracked_layers", []))

    @property
    def built(self) -> bool:
        return self.__dict__.get("_sub_shapes") is not None

    @built.setter
    def built(self, value) -> None:
        if not value:
            self.__dict__["_sub_shapes"] = None

    def _ensure_built(self, input_shape) -> None:
        """Build a subclassed model: trace ``call`` on a symbolic input when it only calls layers
        (then it trains like a Functional model); otherwise run it once on zeros."""
        if self.built:
            return
        shape = tuple(input_shape)
        traced = None
        try:
            inp = Input(batch_shape=shape)
            out = self._call_with(self.call, inp, None, None)
            traced = model_class("Functional")(inp, out, name=f"{self.name}_graph")
            out_shape = traced.output_shape
        except Exception:  # call does more than call layers: inference only
            x = np.zeros(tuple(1 if d is None else d for d in shape), np.float32)
            y = self._call_with(self.call, x, False, None)
            out_shape = (None,) + tuple(np.shape(y)[1:])
        self.__dict__["_traced"] = traced
        self.__dict__["_sub_shapes"] = (shape, out_shape)

    @property
    def input_shape(self):
        if not self.built:
            raise AttributeError(f"Model {self.name!r} has not been built: no input shape yet")
        return self.__dict__["_sub_shapes"][0]

    @property
    def output_shape(self):
        if not self.built:
            raise AttributeError(f"Model {self.name!r} has not been built: no output shape yet")
        return self.__dict__["_sub_shapes"][1]

    # Sequential and Functional set this: their layers form a graph of nodes.
    _is_graph_network = False

    def _is_subclassed(self) -> bool:
        return not self._is_graph_network

    def summary(self, line_length: Optional[int] = None, positions=None, print_fn=None,
                expand_nested: bool = False, show_trainable: bool = False, layer_range=None):
        """A subclassed model's table: its layers with their parameter counts, as tf.keras."""
        if not self.built:
            raise ValueError("This model has not yet been built. Build the model first by calling "
                             "`build()` or by calling the model on a batch of data.")
        print_fn = print_fn or print
        line_length = line_length or 65
        positions = list(positions or [0.45, 0.85, 1.0])
        if positions[-1] <= 1:
            positions = [int(line_length * p) for p in positions]
        print_fn(f'Model: "{self.name}"')
        print_fn("_" * line_length)
        _print_row(["Layer (type)", "Output Shape", "Param #"], positions, print_fn)
        print_fn("=" * line_length)
        layers = self.layers
        for i, layer in enumerate(layers):
            _print_row([f"{layer.name} ({type(layer).__name__})", _layer_output_shape(layer),
                        layer.count_params()], positions, print_fn)
            if i != len(layers) - 1:
                print_fn(" " * line_length)
        print_fn("=" * line_length)
        print_param_counts(self, print_fn, line_length)

    # --- as a layer (a model nested in another) ---------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value) -> None:
        """As in Keras: freezing a model freezes every layer in it."""
        self._trainable = bool(value)
        for layer in self.layers:
            layer.trainable = bool(value)

    def _maybe_build(self, input_shape) -> None:
        if not self.built:
            self._ensure_built(input_shape)

    def compute_output_shape(self, input_shape):
        if self._is_subclassed():
            self._maybe_build(input_shape)
            return (tuple(input_shape)[0],) + tuple(self.output_shape[1:])
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer._infer_output_shape(shape))
        return shape

    def _random_layers(self) -> List[Layer]:
        """Layers with a counter-based RNG, nested models' included, in layer order."""
        out = []
        for layer in self.layers:
            if isinstance(layer, Model):
                out.extend(layer._random_layers())
            elif hasattr(layer, "rng_offset"):
                out.append(layer)
        return unique_objects(out)

    def forward_train(self, x, training: bool, mask=None):
        """The layer protocol for a nested model: one input (or a list), one output (or a list)."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        outs = self._forward_train(xs, training)
        return outs[0] if len(outs) == 1 else outs

    def backward(self, grad_output, need_input_grad: bool = True):
        grads = list(grad_output) if isinstance(grad_output, (list, tuple)) else [grad_output]
        gin = self._backward(grads, need_input_grads=need_input_grad)
        if not need_input_grad:
            return None
        return gin[0] if len(gin) == 1 else gin

    def _grad_buffers(self) -> List[np.ndarray]:
        return [g for g, _ in self._grads_and_vars()]

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects=None) -> "Model":
        """``keras.Model.from_config(functional.get_config())`` builds a Functional model."""
        if isinstance(config, dict) and "input_layers" in config and "output_layers" in config:
            return model_class("Functional").from_config(config, custom_objects=custom_objects)
        return cls(**config)

    def get_config(self) -> Dict[str, Any]:
        raise NotImplementedError(f"Model {self.name!r} ({type(self).__name__}) has no config: "
                                  f"subclassed models cannot be serialized; use Sequential or "
                                  f"the Functional API")

    # --- weights ------------------------------------------------------------------------------
    @property
    def weights(self) -> List[Variable]:
        return unique_objects(w for layer in self.layers for w in layer.weights)

    variables = weights

    @property
    def trainable_weights(self) -> List[Variable]:
        if not self.trainable:
            return []
        return unique_objects(w for layer in self.layers for w in layer.trainable_weights)

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self) -> List[Variable]:
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    non_trainable_variables = non_trainable_weights

    def get_weights(self) -> List[np.ndarray]:
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights: Sequence) -> None:
        weights = list(weights)
        own = self.weights
        if len(weights) != len(own):
            raise ValueError(f"Model {self.name!r} expects {len(own)} weight arrays, got {len(weights)}")
        for var, value in zip(own, weights):
            if np.shape(value) != var.shape:
                raise ValueError(f"Weight {var.name}: expected shape {var.shape}, got {np.shape(value)}")
        for var, value in zip(own, weights):
            var.assign(value)

    def _trackable_children(self, for_restore: bool = False):
        """tf.keras' edges: ``layer_with_weights-K`` and ``layer-N`` per layer, then ``optimizer``
        (a subclassed model: its attribute names, as tf.keras tracks them)."""
        if self._is_subclassed():
            edges = [(k, v) for k, v in self.__dict__.items() if not k.startswith("_")
                     and isinstance(v, Layer)]
            if self.optimizer is not None:
                edges.append(("optimizer", self.optimizer))
            return edges
        edges = []
        k = 0
        for n, layer in enumerate(self.layers):
            if layer.weights:
                edges.append((f"layer_with_weights-{k}", layer))
                k += 1
            edges.append((f"layer-{n}", layer))
        if self.optimizer is not None:
            edges.append(("optimizer", self.optimizer))
        return edges

    def count_params(self) -> int:
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    # --- compile ------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None,
                weighted_metrics=None, run_eagerly=None, steps_per_execution=None,
                jit_compile=None, **kwargs) -> None:
        """Configure training: ``optimizer`` (name or instance), ``loss``, ``metrics``,
        ``loss_weights`` and ``weighted_metrics`` — each one value, a list (one per output) or
        a dict keyed by output name, as in tf.keras."""
        kwargs.pop("pss_evaluation_shards", None)
        kwargs.pop("auto_scale_loss", None)
        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kwargs)}")
        if loss is None:
            raise ValueError("compile: expected a loss, e.g. loss='sparse_categorical_crossentropy'")
        names = list(self.output_names) or ["output_1"]
        resolved = compile_utils.resolve(names, loss, loss_weights, metrics, weighted_metrics)
        self.optimizer = optimizers.get(optimizer)
        self._compiled = resolved
        self._output_losses = resolved.losses
        if len(names) == 1:
            self.loss = resolved.losses[0]
        elif isinstance(loss, dict):
            self.loss = {k: resolved.losses[names.index(k)] for k in loss}
        elif isinstance(loss, (list, tuple)):
            self.loss = list(resolved.losses)
        else:
            self.loss = resolved.losses[0]
        self.compiled_metrics = resolved.flat_metrics
        self._compile_config = {
            "optimizer": optimizer if isinstance(optimizer, str) else optimizers.serialize(self.optimizer),
            "loss": _serialize_struct(loss, losses_mod),
            "metrics": _serialize_struct(metrics, metrics_mod) if metrics is not None else [],
            "loss_weights": loss_weights,
            "weighted_metrics": _serialize_struct(weighted_metrics, metrics_mod),
        }
        if len(names) == 1 and isinstance(loss, (list, tuple, dict)):
            self._compile_config["loss"] = _serialize_struct(resolved.losses[0], losses_mod)
        self.stop_training = False
        self._trainer.reset()

    @property
    def metrics(self) -> List[metrics_mod.Metric]:
        """The loss tracker(s) then the compiled metrics, in tf.keras' order: ``loss``, each
        ``<output>_loss`` (several outputs), then per output its metrics and weighted metrics."""
        if self.loss is None or self._compiled is None:
            return []
        trackers = [t for t in self._compiled.loss_trackers if t is not None]
        return [self._loss_tracker] + trackers + list(self.compiled_metrics)

    @property
    def metrics_names(self) -> List[str]:
        return [m.name for m in self.metrics]

    def reset_metrics(self) -> None:
        """Reset the state of every metric (the loss trackers included)."""
        for m in self.metrics:
            m.reset_state()

    @property
    def losses(self) -> List[np.float32]:
        """The current regularization penalties, one per regularized weight (tf.keras' ``model.losses``)."""
        return self._trainer.penalties()

    def _require_compiled(self, what: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"You must compile your model before {what}: call "
                               f"model.compile(optimizer=..., loss=...) first.")

    # --- the loop (fastckpt.training) -----------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch: int = 0, steps_per_epoch=None,
            validation_steps=None, validation_batch_size=None, validation_freq=1, **kwargs):
        """Train for ``epochs`` epochs; returns a ``History``. ``x``/``y`` are arrays, lists or
        dicts (by input/output name), a generator or a ``keras.utils.Sequence``."""
        return self._trainer.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                                 callbacks=callbacks, validation_split=validation_split,
                                 validation_data=validation_data, shuffle=shuffle,
                                 class_weight=class_weight, sample_weight=sample_weight,
                                 initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
                                 validation_steps=validation_steps,
                                 validation_batch_size=validation_batch_size,
                                 validation_freq=validation_freq, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict: bool = False, **kwargs):
        """Loss (and metrics) on ``x, y``: a scalar, ``[loss, *metrics]``, or a dict."""
        return self._trainer.evaluate(x, y, batch_size=batch_size, verbose=verbose,
                                      sample_weight=sample_weight, steps=steps,
                                      callbacks=callbacks, return_dict=return_dict, **kwargs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        """Outputs for ``x`` in inference mode (dropout off): a float32 array, or a list of
        them for several outputs."""
        return self._trainer.predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                                     callbacks=callbacks, **kwargs)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       reset_metrics: bool = True, return_dict: bool = False):
        """One training step on exactly this batch; returns the loss (and metrics)."""
        return self._trainer.train_on_batch(x, y, sample_weight=sample_weight,
                                            class_weight=class_weight,
                                            reset_metrics=reset_metrics, return_dict=return_dict)

    def test_on_batch(self, x, y=None, sample_weight=None, reset_metrics: bool = True,
                      return_dict: bool = False):
        """Loss (and metrics) on exactly this batch, without training."""
        return self._trainer.test_on_batch(x, y, sample_weight=sample_weight,
                                           reset_metrics=reset_metrics, return_dict=return_dict)

    def predict_on_batch(self, x):
        """Outputs for exactly this batch (one inference pass)."""
        return self._trainer.predict_on_batch(x)

    # --- weights on disk -------------------------------------------------------------------------
    def save_weights(self, filepath, overwrite: bool = True, save_format: Optional[str] = None,
                     options=None, fsync: bool = True) -> None:
        """Save all weights (and optimizer state) as a TensorFlow checkpoint, or as Keras HDF5
        when ``filepath`` ends in ``.h5``/``.hdf5`` or ``save_format='h5'``. Atomic: a crash
        leaves the previous files intact."""
        weights_io.save_weights(self, filepath, overwrite=overwrite, save_format=save_format,
                                fsync=fsync)

    def load_weights(self, filepath, skip_mismatch: bool = False, by_name: bool = False,
                     options=None):
        """Restore weights saved by ``save_weights`` (or by tf.keras / Keras). Strict: a missing,
        unexpected or mis-shaped weight raises ``CheckpointMismatchError`` and nothing changes.
        Returns a status with ``assert_consumed()`` / ``expect_partial()`` for TF checkpoints."""
        return weights_io.load_weights(self, filepath, skip_mismatch=skip_mismatch, by_name=by_name)

    def save(self, filepath, overwrite: bool = True, include_optimizer: bool = True,
             save_format: Optional[str] = None, **kwargs) -> None:
        """Save architecture, weights, compile configuration and optimizer state: a directory
        (no suffix), Keras HDF5 (``.h5``) or Keras 3 (``.keras``). Atomic."""
        save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer,
                   save_format=save_format, **kwargs)

    # --- random state (saved with whole models so a resumed run is bit-identical) --------------
    def _get_rng_state(self) -> Dict[str, Any]:
        """Shuffle seed and epochs drawn, and each random layer's [seed, offset], in layer order
        (by position: a rebuilt model may carry other automatic names)."""
        layers = [[int(layer.rng_seed), int(layer.rng_offset)] for layer in self._random_layers()]
        return {"shuffle": [self._shuffle_seed, self._shuffle_epochs_drawn], "layers": layers}

    def _set_rng_state(self, state: Dict[str, Any]) -> None:
        def as_int(v, what):
            if not is_int(v) or not 0 <= v < 2**64:
                raise CorruptCheckpointError(f"rng_state: expected a non-negative 64-bit integer "
                                             f"for {what}, got {v!r:.40}")
            return v

        random_layers = self._random_layers()
        shuffle = state.get("shuffle") if isinstance(state, dict) else None
        pairs = state.get("layers") if isinstance(state, dict) else None
        if (not isinstance(shuffle, list) or len(shuffle) != 2 or not isinstance(pairs, list)
                or not all(isinstance(p, list) and len(p) == 2 for p in pairs)):
            raise CorruptCheckpointError(f"rng_state: expected {{'shuffle': [seed, epochs], 'layers': "
                                         f"[[seed, offset], ...]}}, got {str(state)[:120]}")
        if len(pairs) != len(random_layers):
            raise CorruptCheckpointError(f"rng_state: {len(pairs)} random layers saved, the model "
                                         f"has {len(random_layers)}")
        seed = None if shuffle[0] is None else as_int(shuffle[0], "shuffle seed")
        drawn = as_int(shuffle[1], "shuffle epoch count")
        values = [(as_int(p[0], "layer seed"), as_int(p[1], "layer offset")) for p in pairs]
        self._shuffle_seed, self._shuffle_epochs_drawn = seed, drawn
        for layer, (lseed, offset) in zip(random_layers, values):
            layer.rng_seed, layer.rng_offset = lseed, offset

    @property
    def input_names(self) -> List[str]:
        """Names of the model's inputs (the keys ``fit``/``predict`` accept in a dict ``x``)."""
        layer = getattr(self, "_input_layer", None)
        return [layer.name] if layer is not None else \
            ([f"{self.layers[0].name}_input"] if self.layers else [])

    @property
    def output_names(self) -> List[str]:
        """Names of the model's outputs (the keys of dict ``y``, loss and metric dicts, and the
        prefixes of per-output History keys)."""
        return [self.layers[-1].name] if self.layers else []

    # --- the graph protocol the Trainer drives (Sequential: a chain; Functional: a DAG) --------
    def _subclass_forward(self, inputs, training, logits_layers):
        traced = self.__dict__.get("_traced")
        if traced is not None:
            return traced._forward_train(inputs, training, logits_layers)
        if training:
            self._require_traced()
        out = self._call_with(self.call, inputs[0], False, None)
        return [np.ascontiguousarray(out, np.float32)]

    def _require_traced(self):
        traced = self.__dict__.get("_traced")
        if traced is None:
            raise NotImplementedError(
                f"Model {self.name!r}: its call() does more than call layers on its input, so it "
                f"cannot be trained by fit (inference works). Write it with the Functional API, "
                f"or move the NumPy math into a custom layer with backward().")
        return traced

    def _output_layers(self) -> List[Optional[Layer]]:
        """The layer that produces each output, in output order (None where no single layer does).
        The Trainer may fold such a layer's softmax/sigmoid into the loss of that output."""
        if self._is_subclassed():
            traced = self.__dict__.get("_traced")
            return traced._output_layers() if traced is not None else [None]
        return [self.layers[-1] if self.layers else None]

    def _forward_train(self, inputs: List[np.ndarray], training: bool,
                       logits_layers: Sequence[Layer] = ()) -> List[np.ndarray]:
        """One forward pass on a batch: a list of input arrays in, a list of outputs out. Layers
        keep what ``_backward`` needs. A layer in ``logits_layers`` leaves out its activation
        (the loss takes it over)."""
        self._output_masks = None  # the outputs' masks (Keras' _keras_mask), set by the pass
        if self._is_subclassed():
            return self._subclass_forward(inputs, training, logits_layers)
        if len(inputs) != 1:
            raise ValueError(f"Model {self.name!r} expects 1 input, got {len(inputs)}")
        h = inputs[0]
        mask = None
        for layer in self.layers:
            kw = _mask_kwargs(layer, mask, layer.forward_train)
            h_in = h
            h = layer.forward_train(h, training, logits=True, **kw) if _in(layer, logits_layers) \
                else layer.forward_train(h, training, **kw)
            mask = _next_mask(layer, h_in, mask)
        self._output_masks = [mask]
        return [h]

    def _backward(self, grads: List[np.ndarray], logits_layers: Sequence[Layer] = (),
                  need_input_grads: bool = False,
                  layer_done=None) -> Optional[List[np.ndarray]]:
        """Back-propagate the loss gradients of the outputs of the last ``_forward_train``;
        fills every trainable layer's gradient buffers. With ``need_input_grads`` (a model
        nested in another) returns the gradient of each input. ``layer_done(layer)`` is called
        as soon as a layer of ``self.layers`` has its weight gradients complete (after its last
        use, for a layer used twice): data parallelism starts sending them then."""
        if self._is_subclassed():
            traced = self._require_traced()
            return traced._backward(grads, logits_layers, need_input_grads, layer_done)
        g = grads[0]
        layers = self.layers
        first = {}
        if layer_done is not None:  # a layer listed twice is complete at its first position
            for i, layer in enumerate(layers):
                first.setdefault(id(layer), i)
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            need = i > 0 or need_input_grads
            g = layer.backward(g, need_input_grad=need, logits=True) \
                if _in(layer, logits_layers) else layer.backward(g, need_input_grad=need)
            if layer_done is not None and first[id(layer)] == i:
                layer_done(layer)
        return [g] if need_input_grads else None

    def _grads_and_vars(self) -> List[tuple]:
        """``(gradient buffer, variable)`` for every trainable variable, each layer once (a
        layer shared by several calls has one set of accumulated gradients)."""
        if not self.trainable:
            return []
        seen, pairs = set(), []
        for layer in unique_objects(self.layers):
            for grad, var in zip(layer._grad_buffers(), layer.trainable_weights):
                if id(var) not in seen:
                    seen.add(id(var))
                    pairs.append((grad, var))
        return pairs

    def __call__(self, inputs, *args, **kwargs):
        if is_symbolic(inputs):
            return self._symbolic_call(inputs, **kwargs)
        training = kwargs.pop("training", False)
        mask = kwargs.pop("mask", None)
        if not self.built and self._is_subclassed() and not isinstance(inputs, (list, tuple, dict)):
            self._ensure_built((None,) + tuple(np.shape(inputs)[1:]))
        return self._call_with(self.call, inputs, training, mask, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        h = model_inputs(self, inputs, "inputs")
        mask = None
        for layer in self.layers:
            h_in = h
            h = layer(h, training=training, **_mask_kwargs(layer, mask, layer.call))
            mask = _next_mask(layer, h_in, mask)
        return h


# --- summary tables (shared with Functional) -------------------------------------------------------
def _layer_output_shape(layer):
    shapes = []
    for node in getattr(layer, "_inbound_nodes", []):
        s = [tuple(t.shape) for t in node.outputs]
        shapes.append(s[0] if len(s) == 1 else s)
    if not shapes or any(s != shapes[0] for s in shapes):
        return "multiple"
    if isinstance(layer, InputLayer):
        return [shapes[0]]
    return shapes[0]


def _print_row(fields, positions, print_fn) -> None:
    """One table row, wrapped as tf.keras wraps it (after "),", "],", "'," ...)."""
    left = [str(x) for x in fields]
    while any(left):
        line = ""
        for col in range(len(left)):
            start = positions[col - 1] if col > 0 else 0
            end = positions[col]
            space = 2 if col != len(positions) - 1 else 0
            cutoff = end - start - space
            if col != len(positions) - 1:
                cutoff -= 1
            fit = left[col][:cutoff]
            cands = [fit.find(x) + len(x) for x in ("),", "},", "],", "',") if fit.find(x) >= 0]
            if cands:
                cutoff = min(cands)
                fit = fit[:cutoff]
            if col == 0:
                line += " "
            line += fit
            line += " " * space if space else ""
            left[col] = left[col][cutoff:]
            line += " " * (positions[col] - len(line))
        print_fn(line)


def _readable_size(n: float) -> str:
    for unit in ("Byte", "KB", "MB", "GB", "TB", "PB"):
        if n / 1024 < 1:
            return f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} PB"


def print_param_counts(model, print_fn, line_length: int) -> None:
    """The totals under tf.keras' summary table, with their memory size."""
    def count(ws):
        return sum(int(np.prod(w.shape)) for w in ws), \
            sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in ws)

    tc, tb = count(model.trainable_weights)
    nc, nb = count(model.non_trainable_weights)
    print_fn(f"Total params: {tc + nc} ({_readable_size(tb + nb)})")
    print_fn(f"Trainable params: {tc} ({_readable_size(tb)})")
    print_fn(f"Non-trainable params: {nc} ({_readable_size(nb)})")
    print_fn("_" * line_length)
