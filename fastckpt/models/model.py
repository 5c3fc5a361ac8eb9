"""``Model``: weights, compile, random state and the save/load delegates.

``fit``/``evaluate``/``predict`` are methods of ``Model`` that delegate to its ``Trainer``
(``fastckpt.training``), which holds the loop.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from fastckpt import backend, losses as losses_mod, metrics as metrics_mod, optimizers
from fastckpt.checks import is_int
from fastckpt.errors import CorruptCheckpointError
from fastckpt.layers.base import Layer
from fastckpt.saving import weights_io
from fastckpt.saving.api import save_model
from fastckpt.training import compile_utils
from fastckpt.training.data import model_inputs
from fastckpt.training.trainer import Trainer
from fastckpt.variables import Variable

__all__ = ["Model"]


def _in(layer, layers) -> bool:
    return any(layer is other for other in layers)


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


class Model:
    """Base of ``Sequential``: weights, compile configuration; the loop is its ``Trainer``'s."""

    def __init__(self, name: Optional[str] = None):
        if name is None:
            name = backend.unique_name(backend.to_snake_case(type(self).__name__))
        else:
            backend.reserve_name(name)
        self.name = name
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

    # --- to be provided by subclasses -------------------------------------------------------
    @property
    def layers(self) -> List[Layer]:
        raise NotImplementedError

    @property
    def built(self) -> bool:
        raise NotImplementedError

    def _ensure_built(self, input_shape) -> None:
        raise NotImplementedError

    @property
    def input_shape(self):
        raise NotImplementedError

    @property
    def output_shape(self):
        raise NotImplementedError

    # --- weights ------------------------------------------------------------------------------
    @property
    def weights(self) -> List[Variable]:
        return [w for layer in self.layers for w in layer.weights]

    variables = weights

    @property
    def trainable_weights(self) -> List[Variable]:
        return [w for layer in self.layers for w in layer.trainable_weights]

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self) -> List[Variable]:
        return [w for layer in self.layers for w in layer.non_trainable_weights]

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
        """tf.keras' edges: ``layer_with_weights-K`` and ``layer-N`` per layer, then ``optimizer``."""
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
        return sum(layer.count_params() for layer in self.layers)

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
        layers = [[int(layer.rng_seed), int(layer.rng_offset)]
                  for layer in self.layers if hasattr(layer, "rng_offset")]
        return {"shuffle": [self._shuffle_seed, self._shuffle_epochs_drawn], "layers": layers}

    def _set_rng_state(self, state: Dict[str, Any]) -> None:
        def as_int(v, what):
            if not is_int(v) or not 0 <= v < 2**64:
                raise CorruptCheckpointError(f"rng_state: expected a non-negative 64-bit integer "
                                             f"for {what}, got {v!r:.40}")
            return v

        random_layers = [layer for layer in self.layers if hasattr(layer, "rng_offset")]
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
    def _output_layers(self) -> List[Optional[Layer]]:
        """The layer that produces each output, in output order (None where no single layer does).
        The Trainer may fold such a layer's softmax/sigmoid into the loss of that output."""
        return [self.layers[-1] if self.layers else None]

    def _forward_train(self, inputs: List[np.ndarray], training: bool,
                       logits_layers: Sequence[Layer] = ()) -> List[np.ndarray]:
        """One forward pass on a batch: a list of input arrays in, a list of outputs out. Layers
        keep what ``_backward`` needs. A layer in ``logits_layers`` leaves out its activation
        (the loss takes it over)."""
        if len(inputs) != 1:
            raise ValueError(f"Model {self.name!r} expects 1 input, got {len(inputs)}")
        h = inputs[0]
        for layer in self.layers:
            h = layer.forward_train(h, training, logits=True) if _in(layer, logits_layers) else \
                layer.forward_train(h, training)
        return [h]

    def _backward(self, grads: List[np.ndarray], logits_layers: Sequence[Layer] = ()) -> None:
        """Back-propagate the loss gradients of the outputs of the last ``_forward_train``;
        fills every trainable layer's gradient buffers."""
        g = grads[0]
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            g = layer.backward(g, need_input_grad=i > 0, logits=True) \
                if _in(layer, logits_layers) else layer.backward(g, need_input_grad=i > 0)

    def _grads_and_vars(self) -> List[tuple]:
        """``(gradient buffer, variable)`` for every trainable variable, each layer once (a
        layer shared by several calls has one set of accumulated gradients)."""
        seen, pairs = set(), []
        for layer in self.layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            pairs.extend(zip(layer._grad_buffers(), layer.trainable_weights))
        return pairs

    def __call__(self, inputs, training: bool = False):
        h = model_inputs(self, inputs, "inputs")
        for layer in self.layers:
            h = layer(h, training=training)
        return h
