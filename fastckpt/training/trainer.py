"""``Trainer``: the Keras training loop over a model's layers and native kernels.

Each step runs the layers' ``forward_train``/``backward`` (native for built-in layers) on reusable
buffers and one fused optimizer pass per variable; Python only sequences the calls and keeps the
running logs. Nothing is allocated per step once the buffers for a batch size exist. When every
piece has a native implementation, whole epochs run in C++ (``fastckpt.training.fused``).
"""

from __future__ import annotations

import math
import os
from typing import Dict, Optional

import numpy as np

from fastckpt import activations, losses as losses_mod, metrics as metrics_mod, ops
from fastckpt.callbacks import CallbackList, History
from fastckpt.checks import is_int
from fastckpt.layers.dense import Dense
from fastckpt.training import data
from fastckpt.training.fused import FusedTrainer, build_fused
from fastckpt.variables import aligned_empty

__all__ = ["Trainer"]

_UNSUPPORTED_FIT = ("sample_weight", "class_weight", "steps_per_epoch", "validation_steps",
                    "validation_batch_size")


class Trainer:
    """The loop of one model; ``Model.fit``/``evaluate``/``predict`` delegate to it.

    It owns what the loop reuses between calls: the loss-gradient buffers and the fused native
    trainer (rebuilt when anything it depends on changes; ``reset()`` drops it).
    """

    def __init__(self, model):
        self.model = model
        self._fused: Optional[FusedTrainer] = None
        self._loss_ws: Dict[tuple, np.ndarray] = {}
        # The last Dense whose softmax the loss takes over in this run (None: no folding).
        self._logits_layer: Optional[Dense] = None

    def reset(self) -> None:
        """Forget the fused trainer (the model's layers changed)."""
        self._fused = None

    # --- one step -------------------------------------------------------------------------------
    def _configure_loss_fusion(self) -> bool:
        """Whether the loss sees logits. A softmax on the last Dense is folded into the loss
        (as tf.keras does): more accurate, and one pass cheaper."""
        model = self.model
        last = model.layers[-1] if model.layers else None
        from_logits = getattr(model.loss, "from_logits", False)
        fuse = (not from_logits and isinstance(last, Dense) and last.activation == "softmax")
        self._logits_layer = last if fuse else None
        return from_logits or fuse

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        folded = () if self._logits_layer is None else (self._logits_layer,)
        return self.model._forward_train([x], training, folded)[0]

    def _loss_grad_buffer(self, m: int, n: int) -> np.ndarray:
        ws = self._loss_ws
        if (m, n) not in ws:
            ws[(m, n)] = aligned_empty((m, n), np.float32)
        return ws[(m, n)]

    def _train_step(self, xb: np.ndarray, yb: np.ndarray, logits_loss: bool):
        model = self.model
        out = self._forward(xb, training=True)
        m, n = out.shape
        grad = self._loss_grad_buffer(m, n)
        correct, loss_sum = ops.sparse_ce(out, yb, logits_loss, losses_mod.EPSILON, grad=grad,
                                          grad_scale=1.0 / m)
        folded = () if self._logits_layer is None else (self._logits_layer,)
        model._backward([grad], folded)
        pairs = model._grads_and_vars()
        model.optimizer.apply_gradients(pairs)
        self._update_metrics(yb, out, loss_sum, correct)

    def _update_metrics(self, yb, out, loss_sum: float, correct: int) -> None:
        model = self.model
        m = out.shape[0]
        model._loss_tracker.total += loss_sum
        model._loss_tracker.count += m
        for metric in model.compiled_metrics:
            if isinstance(metric, metrics_mod.SparseCategoricalAccuracy):
                metric.add_counts(correct, m)
            else:
                metric.update_state(yb, self._final_activation(out))

    def _final_activation(self, out: np.ndarray) -> np.ndarray:
        if self._logits_layer is not None:
            return activations.softmax(out)
        return out

    def _fused_trainer(self, logits_loss: bool) -> Optional[FusedTrainer]:
        """The native whole-step loop, when every layer, the loss, metrics and optimizer have one
        (``FASTCKPT_FUSED=0`` forces the layer-by-layer path, e.g. to compare the two)."""
        if os.environ.get("FASTCKPT_FUSED", "1") == "0":
            return None
        fused = build_fused(self.model, logits_loss, self._logits_layer, cached=self._fused)
        if fused is not None:
            self._fused = fused
            fused.sync_in()
        return fused

    def _add_totals(self, totals) -> None:
        model = self.model
        loss_sum, correct, seen = totals
        model._loss_tracker.total += loss_sum
        model._loss_tracker.count += seen
        for metric in model.compiled_metrics:
            metric.add_counts(correct, seen)

    def _logs(self) -> Dict[str, float]:
        return {m.name: float(m.result()) for m in self.model.metrics}

    def _reset_metrics(self) -> None:
        for m in self.model.metrics:
            m.reset_state()

    # --- fit --------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            initial_epoch: int = 0, validation_freq: int = 1, **kwargs):
        model = self.model
        for k in _UNSUPPORTED_FIT:
            if kwargs.get(k) is not None:
                raise NotImplementedError(f"fit: {k} is not supported yet")
            kwargs.pop(k, None)
        data.reject_unknown("fit", kwargs)
        model._require_compiled("training it")
        batch_size = data.check_batch_size(batch_size)
        verbose = data.verbosity(verbose)
        if not is_int(epochs) or epochs < 0:
            raise ValueError(f"Expected a non-negative integer for epochs, got {epochs!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"Expected validation_split in [0, 1), got {validation_split}")

        xa = data.model_inputs(model, x)
        ya = data.prepare_y(model, y, xa.shape[0])
        xa, ya, val = data.validation_arrays(model, xa, ya, validation_data, validation_split)
        n = xa.shape[0]
        if n == 0:
            raise ValueError("Expected at least one training sample, got 0")
        # Batches never exceed the data (tf.keras slices the same way): a huge batch_size must not
        # size the batch buffers.
        batch_size = min(batch_size, n)
        steps = math.ceil(n / batch_size)

        logits_loss = self._configure_loss_fusion()
        model.optimizer.build(model.trainable_weights)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                     model=model, verbose=verbose, epochs=epochs, steps=steps,
                                     do_validation=val is not None)
        model.stop_training = False
        batch_hooks = callbacks.should_call_train_batch_hooks
        xbuf = aligned_empty((batch_size,) + xa.shape[1:], np.float32)
        ybuf = np.empty((batch_size,), np.int32)

        callbacks.set_peer_callbacks()
        callbacks.on_train_begin()
        # A BackupAndRestore that found a backup has restored the model; skip the epochs done.
        initial_epoch = callbacks.resume_epoch(initial_epoch)
        logs: Dict[str, float] = {}
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            callbacks.on_epoch_begin(epoch)
            # After on_epoch_begin: a callback may have changed the learning rate, which the
            # native trainer holds in its config (an unchanged one is returned as it is).
            fused = self._fused_trainer(logits_loss)
            order = data.epoch_order(model, n, shuffle)
            if fused is not None and not batch_hooks:
                # The whole epoch in one native call, GIL released.
                self._add_totals(fused.train_steps(xa, ya, order, batch_size, 0, steps))
                fused.sync_out()
            else:
                self._run_steps(callbacks, fused, xa, ya, order, batch_size, steps, xbuf, ybuf,
                                logits_loss, batch_hooks)
            logs = self._logs()
            if val is not None and (epoch + 1) % validation_freq == 0:
                callbacks.on_test_begin()
                val_logs = self._evaluate_arrays(val[0], val[1], batch_size, callbacks)
                callbacks.on_test_end(val_logs)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            callbacks.on_epoch_end(epoch, logs)
            callbacks.on_checkpoint_committed(epoch, logs)
            if model.stop_training:
                break
        callbacks.on_train_end(logs)
        return callbacks.history if callbacks.history is not None else History()

    def _run_steps(self, callbacks, fused, xa, ya, order, batch_size, steps, xbuf, ybuf,
                   logits_loss, batch_hooks) -> None:
        """One epoch step by step: per-batch hooks, or the layer-by-layer path."""
        n = xa.shape[0]
        for step in range(steps):
            lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
            if batch_hooks:
                callbacks.on_train_batch_begin(step)
            if fused is not None:
                self._add_totals(fused.train_steps(xa, ya, order, batch_size, step, step + 1))
                fused.sync_out()
            else:
                xb, yb = data.batch(xa, ya, order, lo, hi, xbuf, ybuf)
                self._train_step(xb, yb, logits_loss)
            if batch_hooks:
                callbacks.on_train_batch_end(step, self._logs())
            if self.model.stop_training:
                break

    # --- evaluate / predict ----------------------------------------------------------------------
    def _evaluate_arrays(self, xa: np.ndarray, ya: np.ndarray, batch_size: int,
                         callbacks=None) -> Dict[str, float]:
        model = self.model
        logits_loss = self._configure_loss_fusion()
        saved = [m._get_state() for m in model.metrics]
        self._reset_metrics()
        n = xa.shape[0]
        if callbacks is not None and not callbacks.should_call_test_batch_hooks:
            callbacks = None
        fused = self._fused_trainer(logits_loss) if callbacks is None else None
        if fused is not None:
            self._add_totals(fused.evaluate(xa, ya, batch_size))
        else:
            for step in range(math.ceil(n / batch_size)):
                lo, hi = step * batch_size, min(n, (step + 1) * batch_size)
                if callbacks is not None:
                    callbacks.on_test_batch_begin(step)
                out = self._forward(xa[lo:hi], training=False)
                correct, loss_sum = ops.sparse_ce(out, ya[lo:hi], logits_loss, losses_mod.EPSILON)
                self._update_metrics(ya[lo:hi], out, loss_sum, correct)
                if callbacks is not None:
                    callbacks.on_test_batch_end(step, self._logs())
        result = self._logs()
        for m, state in zip(model.metrics, saved):
            m._set_state(state)
        return result

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict: bool = False, **kwargs):
        model = self.model
        if sample_weight is not None or steps is not None:
            raise NotImplementedError("evaluate: sample_weight and steps are not supported yet")
        data.reject_unknown("evaluate", kwargs)
        model._require_compiled("evaluating it")
        batch_size = data.check_batch_size(batch_size)
        verbose = data.verbosity(verbose)
        xa = data.model_inputs(model, x)
        ya = data.prepare_y(model, y, xa.shape[0])
        if xa.shape[0] == 0:
            # tf.keras: ValueError("Expected input data to be non-empty.")
            raise ValueError(f"evaluate: expected input data to be non-empty, got x of shape "
                             f"{xa.shape}: the loss and metrics of no samples are undefined")
        batch_size = min(batch_size, xa.shape[0])
        n_steps = math.ceil(xa.shape[0] / batch_size)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=model,
                                     verbose=verbose, epochs=1, steps=n_steps)
        callbacks.on_test_begin()
        logs = self._evaluate_arrays(xa, ya, batch_size, callbacks)
        callbacks.on_test_end(logs)
        if return_dict:
            return logs
        values = [logs[name] for name in model.metrics_names]
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        model = self.model
        if steps is not None:
            raise NotImplementedError("predict: steps is not supported yet")
        data.reject_unknown("predict", kwargs)
        batch_size = data.check_batch_size(batch_size)
        verbose = data.verbosity(verbose)
        xa = data.model_inputs(model, x)
        n = xa.shape[0]
        n_steps = math.ceil(n / batch_size)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=model,
                                     verbose=verbose, epochs=1, steps=n_steps)
        self._logits_layer = None  # predict returns the model's outputs, softmax included
        out = np.empty((n,) + tuple(model.output_shape[1:]), np.float32)
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
