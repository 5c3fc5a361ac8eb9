"""``Model``: compile, fit, evaluate, predict — the Keras training loop over native kernels.

Each step runs the layers' ``forward_train``/``backward`` (native for built-in layers) on reusable
buffers and one fused optimizer pass per variable; Python only sequences the calls and keeps the
running logs. Nothing is allocated per step once the buffers for a batch size exist.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from fastckpt import activations, backend, losses as losses_mod, metrics as metrics_mod, ops, optimizers
from fastckpt.callbacks import CallbackList, History
from fastckpt.errors import CorruptCheckpointError
from fastckpt.layers.base import Layer
from fastckpt.layers.dense import Dense
from fastckpt.models.fused import build_fused
from fastckpt.saving import weights_io
from fastckpt.saving.api import save_model
from fastckpt.variables import Variable, aligned_empty

__all__ = ["Model"]

_UNSUPPORTED_FIT = ("sample_weight", "class_weight", "steps_per_epoch", "validation_steps",
                    "validation_batch_size")


def _check_batch_size(batch_size) -> int:
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"Expected an integer batch_size, got {batch_size!r}")
    if batch_size <= 0:
        raise ValueError(f"Expected batch_size > 0, got {batch_size}")
    return int(batch_size)


def _reject_unknown(what: str, kwargs: dict) -> None:
    """Keras' data-pipeline knobs do nothing here and are accepted; anything else is a typo."""
    for k in ("max_queue_size", "workers", "use_multiprocessing"):
        kwargs.pop(k, None)
    if kwargs:
        raise TypeError(f"{what}: unexpected keyword argument(s) {sorted(kwargs)}")


def _verbosity(verbose) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"Expected verbose in 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


class Model:
    """Base of ``Sequential``: weights, compile configuration, and the training loop."""

    def __init__(self, name: Optional[str] = None):
        if name is None:
            name = backend.unique_name(backend.to_snake_case(type(self).__name__))
        else:
            backend.reserve_name(name)
        self.name = name
        self.optimizer: Optional[optimizers.Optimizer] = None
        self.loss: Optional[losses_mod.Loss] = None
        self.compiled_metrics: List[metrics_mod.Metric] = []
        self._compile_config: Optional[Dict[str, Any]] = None
        self._loss_tracker = metrics_mod.Mean(name="loss")
        self.stop_training = False
        self.history = None
        self._shuffle_seed: Optional[int] = None
        self._shuffle_epochs_drawn = 0

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
        """Configure training: ``optimizer`` (name or instance), ``loss``, ``metrics``."""
        if loss_weights is not None or weighted_metrics is not None:
            raise NotImplementedError("loss_weights and weighted_metrics are not supported yet")
        kwargs.pop("pss_evaluation_shards", None)
        kwargs.pop("auto_scale_loss", None)
        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {sorted(kwargs)}")
        if loss is None:
            raise ValueError("compile: expected a loss, e.g. loss='sparse_categorical_crossentropy'")
        self.optimizer = optimizers.get(optimizer)
        self.loss = losses_mod.get(loss)
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, metrics_mod.Metric)) or callable(metrics):
            metrics = [metrics]
        self.compiled_metrics = [metrics_mod.get(m, loss=self.loss) for m in metrics]
        names = [m.name for m in self.compiled_metrics]
        if len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"compile: metric names must be unique and not 'loss', got {names}")
        self._compile_config = {
            "optimizer": optimizer if isinstance(optimizer, str) else optimizers.serialize(self.optimizer),
            "loss": loss if isinstance(loss, str) else losses_mod.serialize(self.loss),
            "metrics": [m if isinstance(m, str) else metrics_mod.serialize(mo)
                        for m, mo in zip(metrics, self.compiled_metrics)],
        }
        self.stop_training = False

    @property
    def metrics(self) -> List[metrics_mod.Metric]:
        return [self._loss_tracker] + list(self.compiled_metrics) if self.loss else []

    @property
    def metrics_names(self) -> List[str]:
        return [m.name for m in self.metrics]

    def _require_compiled(self, what: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"You must compile your model before {what}: call "
                               f"model.compile(optimizer=..., loss=...) first.")

    # --- input checks ---------------------------------------------------------------------------
    def _prepare_x(self, x, what: str = "x") -> np.ndarray:
        if x is None:
            raise ValueError(f"Expected input data {what}, got None")
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"Expected {what} to be a numeric array, got dtype {arr.dtype}")
        if arr.ndim < 2:
            raise ValueError(f"Expected {what} of rank >= 2 (samples, features...), got shape {arr.shape}")
        if self.built:
            want = self.input_shape
            if arr.ndim != len(want):
                raise ValueError(f"Model {self.name!r} expects input of rank {len(want)} "
                                 f"(shape {want}), got {what} of shape {arr.shape}")
            for got, exp in zip(arr.shape[1:], want[1:]):
                if exp is not None and got != exp:
                    raise ValueError(f"Model {self.name!r} expects {what} with shape "
                                     f"{tuple(want)}, got {arr.shape}: feature count {got} != {exp}")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _inputs(self, x, what: str = "x") -> np.ndarray:
        """Checked float32 inputs; an unbuilt model is built from their shape first."""
        xa = self._prepare_x(x, what)
        self._ensure_built((None,) + xa.shape[1:])
        return self._prepare_x(xa, what)

    def _prepare_y(self, y, n: int, what: str = "y") -> np.ndarray:
        if y is None:
            raise ValueError(f"Expected targets {what}, got None")
        arr = np.asarray(y)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"Expected {what} to be numeric class labels, got dtype {arr.dtype}")
        if arr.shape[:1] != (n,):
            raise ValueError(f"Data cardinality is ambiguous: x has {n} samples but {what} has "
                             f"{arr.shape[0] if arr.ndim else 'no'} samples. Make sure all arrays "
                             f"contain the same number of samples.")
        n_classes = self.output_shape[-1]
        return losses_mod._labels(arr, n, n_classes, what)

    # --- one step -------------------------------------------------------------------------------
    def _configure_loss_fusion(self) -> bool:
        """Whether the loss sees logits. A softmax on the last Dense is folded into the loss
        (as tf.keras does): more accurate, and one pass cheaper."""
        last = self.layers[-1] if self.layers else None
        from_logits = getattr(self.loss, "from_logits", False)
        fuse = (not from_logits and isinstance(last, Dense) and last.activation == "softmax")
        if isinstance(last, Dense):
            last._logits_for_loss = fuse
        return from_logits or fuse

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        h = x
        for layer in self.layers:
            h = layer.forward_train(h, training)
        return h

    def _loss_grad_buffer(self, m: int, n: int) -> np.ndarray:
        ws = self.__dict__.setdefault("_loss_ws", {})
        if (m, n) not in ws:
            ws[(m, n)] = aligned_empty((m, n), np.float32)
        return ws[(m, n)]

    def _train_step(self, xb: np.ndarray, yb: np.ndarray, logits_loss: bool):
        out = self._forward(xb, training=True)
        m, n = out.shape
        grad = self._loss_grad_buffer(m, n)
        correct, loss_sum = ops.sparse_ce(out, yb, logits_loss, losses_mod.EPSILON, grad=grad,
                                          grad_scale=1.0 / m)
        g = grad
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            g = layers[i].backward(g, need_input_grad=i > 0)
        pairs = [(buf, var) for layer in layers
                 for buf, var in zip(layer._grad_buffers(), layer.trainable_weights)]
        self.optimizer.apply_gradients(pairs)
        self._update_metrics(yb, out, loss_sum, correct)

    def _update_metrics(self, yb, out, loss_sum: float, correct: int) -> None:
        m = out.shape[0]
        self._loss_tracker.total += loss_sum
        self._loss_tracker.count += m
        for metric in self.compiled_metrics:
            if isinstance(metric, metrics_mod.SparseCategoricalAccuracy):
                metric.add_counts(correct, m)
            else:
                metric.update_state(yb, self._final_activation(out))

    def _final_activation(self, out: np.ndarray) -> np.ndarray:
        last = self.layers[-1]
        if isinstance(last, Dense) and last._logits_for_loss:
            return activations.softmax(out)
        return out

    def _fused_trainer(self, logits_loss: bool):
        """The native whole-step loop, when every layer, the loss, metrics and optimizer have one
        (``FASTCKPT_FUSED=0`` forces the layer-by-layer path, e.g. to compare the two)."""
        import os
        if os.environ.get("FASTCKPT_FUSED", "1") == "0":
            return None
        fused = build_fused(self, logits_loss)
        if fused is not None:
            fused.sync_in()
        return fused

    def _add_totals(self, totals) -> None:
        loss_sum, correct, seen = totals
        self._loss_tracker.total += loss_sum
        self._loss_tracker.count += seen
        for metric in self.compiled_metrics:
            metric.add_counts(correct, seen)

    def _logs(self) -> Dict[str, float]:
        return {m.name: float(m.result()) for m in self.metrics}

    def _reset_metrics(self) -> None:
        for m in self.metrics:
            m.reset_state()

    # --- fit --------------------------------------------------------------------------------------
    def _epoch_order(self, n: int, shuffle: bool) -> Optional[np.ndarray]:
        if not shuffle:
            return None
        if self._shuffle_seed is None:
            self._shuffle_seed = backend.next_seed()
        # One generator per epoch from (seed, epoch index): resuming needs only these two ints.
        rng = np.random.default_rng([self._shuffle_seed, self._shuffle_epochs_drawn])
        self._shuffle_epochs_drawn += 1
        return rng.permutation(n)

    def fit(self, x=None, y=None, batch_size=None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            initial_epoch: int = 0, validation_freq: int = 1, **kwargs):
        """Train for ``epochs`` epochs; returns a ``History``."""
        for k in _UNSUPPORTED_FIT:
            if kwargs.get(k) is not None:
                raise NotImplementedError(f"fit: {k} is not supported yet")
            kwargs.pop(k, None)
        _reject_unknown("fit", kwargs)
        self._require_compiled("training it")
        batch_size = _check_batch_size(batch_size)
        verbose = _verbosity(verbose)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"Expected a non-negative integer for epochs, got {epochs!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"Expected validation_split in [0, 1), got {validation_split}")

        xa = self._inputs(x)
        ya = self._prepare_y(y, xa.shape[0])
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("Expected validation_data=(x_val, y_val), got "
                                 f"{type(validation_data).__name__}")
            vx = self._prepare_x(validation_data[0], "validation_data[0]")
            val = (vx, self._prepare_y(validation_data[1], vx.shape[0], "validation_data[1]"))
        elif validation_split:
            split = int(xa.shape[0] * (1.0 - float(validation_split)))
            val = (xa[split:], ya[split:])
            xa, ya = xa[:split], ya[:split]
        n = xa.shape[0]
        if n == 0:
            raise ValueError("Expected at least one training sample, got 0")
        # Batches never exceed the data (tf.keras slices the same way): a huge batch_size must not
        # size the batch buffers.
        batch_size = min(batch_size, n)
        steps = math.ceil(n / batch_size)

        logits_loss = self._configure_loss_fusion()
        self.optimizer.build(self.trainable_weights)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                     model=self, verbose=verbose, epochs=epochs, steps=steps,
                                     do_validation=val is not None)
        self.stop_training = False
        batch_hooks = callbacks.should_call_train_batch_hooks
        xbuf = aligned_empty((batch_size,) + xa.shape[1:], np.float32)
        ybuf = np.empty((batch_size,), np.int32)

        for cb in callbacks:
            if hasattr(cb, "_set_peer_callbacks"):
                cb._set_peer_callbacks(callbacks)
        callbacks.on_train_begin()
        # A BackupAndRestore that found a backup has restored the model; skip the epochs done.
        for cb in callbacks:
            resume = getattr(cb, "_resume_epoch", None)
            if resume is not None:
                initial_epoch = max(initial_epoch, resume)
        fused = self._fused_trainer(logits_loss)
        logs: Dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            callbacks.on_epoch_begin(epoch)
            order = self._epoch_order(n, shuffle)
            if fused is not None and not batch_hooks:
                # The whole epoch in one native call, GIL released.
                self._add_totals(fused.train_steps(xa, ya, order, batch_size, 0, steps))
                fused.sync_out()
            for step in range(steps if fused is None or batch_hooks else 0):
                lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
                if batch_hooks:
                    callbacks.on_train_batch_begin(step)
                if fused is not None:
                    self._add_totals(fused.train_steps(xa, ya, order, batch_size, step, step + 1))
                    fused.sync_out()
                else:
                    if order is None:
                        xb, yb = xa[lo:hi], ya[lo:hi]
                    else:
                        idx = order[lo:hi]
                        xb = np.take(xa, idx, axis=0, out=xbuf[: hi - lo])
                        yb = np.take(ya, idx, axis=0, out=ybuf[: hi - lo])
                    self._train_step(xb, yb, logits_loss)
                if batch_hooks:
                    callbacks.on_train_batch_end(step, self._logs())
                if self.stop_training:
                    break
            logs = self._logs()
            if val is not None and (epoch + 1) % validation_freq == 0:
                callbacks.on_test_begin()
                val_logs = self._evaluate_arrays(val[0], val[1], batch_size, callbacks)
                callbacks.on_test_end(val_logs)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            callbacks.on_epoch_end(epoch, logs)
            for cb in callbacks:
                if hasattr(cb, "_on_epoch_committed"):
                    cb._on_epoch_committed(epoch, logs)
            if self.stop_training:
                break
        callbacks.on_train_end(logs)
        return callbacks.history if callbacks.history is not None else History()

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
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**64:
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

    # --- evaluate / predict ----------------------------------------------------------------------
    def _evaluate_arrays(self, xa: np.ndarray, ya: np.ndarray, batch_size: int,
                         callbacks=None) -> Dict[str, float]:
        logits_loss = self._configure_loss_fusion()
        saved = [(m.total, m.count) for m in self.metrics]
        self._reset_metrics()
        n = xa.shape[0]
        steps = math.ceil(n / batch_size)
        if callbacks is not None and not callbacks.should_call_test_batch_hooks:
            callbacks = None
        fused = self._fused_trainer(logits_loss) if callbacks is None else None
        if fused is not None:
            self._add_totals(fused.evaluate(xa, ya, batch_size))
            steps = 0
        for step in range(steps):
            lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
            if callbacks is not None:
                callbacks.on_test_batch_begin(step)
            out = self._forward(xa[lo:hi], training=False)
            correct, loss_sum = ops.sparse_ce(out, ya[lo:hi], logits_loss, losses_mod.EPSILON)
            self._update_metrics(ya[lo:hi], out, loss_sum, correct)
            if callbacks is not None:
                callbacks.on_test_batch_end(step, self._logs())
        result = self._logs()
        for m, (t, c) in zip(self.metrics, saved):
            m.total, m.count = t, c
        return result

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict: bool = False, **kwargs):
        """Loss (and metrics) on ``x, y``: a scalar, ``[loss, *metrics]``, or a dict."""
        if sample_weight is not None or steps is not None:
            raise NotImplementedError("evaluate: sample_weight and steps are not supported yet")
        _reject_unknown("evaluate", kwargs)
        self._require_compiled("evaluating it")
        batch_size = _check_batch_size(batch_size)
        verbose = _verbosity(verbose)
        xa = self._inputs(x)
        ya = self._prepare_y(y, xa.shape[0])
        if xa.shape[0] == 0:
            # tf.keras: ValueError("Expected input data to be non-empty.")
            raise ValueError(f"evaluate: expected input data to be non-empty, got x of shape "
                             f"{xa.shape}: the loss and metrics of no samples are undefined")
        batch_size = min(batch_size, xa.shape[0])
        n_steps = math.ceil(xa.shape[0] / batch_size)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                     verbose=verbose, epochs=1, steps=n_steps)
        callbacks.on_test_begin()
        logs = self._evaluate_arrays(xa, ya, batch_size, callbacks)
        callbacks.on_test_end(logs)
        if return_dict:
            return logs
        values = [logs[name] for name in self.metrics_names]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        """Outputs for ``x`` in inference mode (dropout off), as a float32 array."""
        if steps is not None:
            raise NotImplementedError("predict: steps is not supported yet")
        _reject_unknown("predict", kwargs)
        batch_size = _check_batch_size(batch_size)
        verbose = _verbosity(verbose)
        xa = self._inputs(x)
        n = xa.shape[0]
        n_steps = math.ceil(n / batch_size)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=self,
                                     verbose=verbose, epochs=1, steps=n_steps)
        last = self.layers[-1] if self.layers else None
        if isinstance(last, Dense):
            last._logits_for_loss = False
        out = np.empty((n,) + tuple(self.output_shape[1:]), np.float32)
        callbacks.on_predict_begin()
        hooks = callbacks.should_call_predict_batch_hooks
        # Without per-batch hooks, whole batches are grouped into inference passes (the rule the
        # fused evaluate and the C++ runtime share, so its predictions equal these bit for bit).
        # Outputs can differ in the last bits from a batch-by-batch run, as they can in Keras
        # between batch sizes.
        rows = batch_size if hooks else ops.inference_pass_rows(batch_size)
        for step in range(math.ceil(n / rows)):
            lo, hi = step * rows, min(n, (step + 1) * rows)
            if hooks:
                callbacks.on_predict_batch_begin(step)
            out[lo:hi] = self._forward(xa[lo:hi], training=False)
            if hooks:
                callbacks.on_predict_batch_end(step, {"outputs": out[lo:hi]})
        callbacks.on_predict_end()
        return out

    def __call__(self, inputs, training: bool = False):
        h = self._inputs(inputs, "inputs")
        for layer in self.layers:
            h = layer(h, training=training)
        return h
