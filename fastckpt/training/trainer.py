"""``Trainer``: the Keras training loop over a model's graph protocol and native kernels.

Each step runs the model's ``_forward_train``/``_backward`` (native for built-in layers) on
reusable buffers, each output's loss through ``Loss._fwd_bwd`` (weighted by its loss weight and
the sample weights), the regularization penalties, one fused optimizer pass per variable, then
the weight constraints; Python only sequences the calls and keeps the running logs. When every
layer, loss and the optimizer have a native implementation (no regularizers or constraints, ...),
whole epochs run in C++ (``fastckpt.training.fused`` for a chain of Dense layers,
``fastckpt.training.graph_fused`` for graphs, several outputs, loss and sample weights); metrics
without a native count are then updated here from the batch outputs the native loop records.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Dict, List, Optional

import numpy as np

from fastckpt import activations, losses as losses_mod, metrics as metrics_mod, ops
from fastckpt.callbacks import CallbackList, History
from fastckpt.checks import is_int
from fastckpt.layers.dense import Dense
from fastckpt.layers.dropout import Dropout
from fastckpt.training import data
from fastckpt.training.data import ArrayData, IterData
from fastckpt.training.distributed import DataParallel, random_rows
from fastckpt.training.fused import (FusedTrainer, build_fused, is_chain, release_free_heap,
                                     snapshot_request)
from fastckpt.training.graph_fused import (GraphForward, GraphFusedTrainer, build_graph_forward,
                                           build_graph_fused)
from fastckpt.variables import aligned_empty

__all__ = ["Trainer", "flatten_metrics_in_order"]


def flatten_metrics_in_order(logs: Dict[str, float], names: List[str]):
    """``logs`` as a list in ``metrics_names`` order (a scalar when there is one value), as
    tf.keras returns ``evaluate``/``*_on_batch`` results."""
    results = [logs[n] for n in names if n in logs]
    results += [logs[k] for k in sorted(logs) if k not in names]
    return results[0] if len(results) == 1 else results


def _check_validation_freq(freq):
    if isinstance(freq, bool) or not (is_int(freq) or isinstance(freq, (list, tuple))):
        raise ValueError(f"Expected `validation_freq` to be a list or int. Received: "
                         f"validation_freq={freq!r} of the type {type(freq)}.")
    if is_int(freq) and freq < 1:
        raise ValueError(f"Expected validation_freq >= 1, got {freq}")
    return freq


def _should_eval(epoch: int, freq) -> bool:
    epoch += 1  # tf.keras counts user-facing epochs from 1
    return epoch % freq == 0 if is_int(freq) else epoch in freq


class Trainer:
    """The loop of one model; ``Model.fit``/``evaluate``/``predict`` delegate to it.

    It owns what the loop reuses between calls: the loss-gradient buffers and the fused native
    trainer (rebuilt when anything it depends on changes; ``reset()`` drops it).
    """

    def __init__(self, model):
        self.model = model
        self._fused = None  # a FusedTrainer or a GraphFusedTrainer: the last one used
        # The last of each kind, reused while nothing they depend on changes (a fit whose
        # validation data have sample weights alternates between the two).
        self._chain: Optional[FusedTrainer] = None
        self._graph: Optional[GraphFusedTrainer] = None
        self._loss_ws: Dict[tuple, np.ndarray] = {}
        # Per output: whether its loss takes over the output layer's activation (this run).
        self._fold: List[bool] = []
        self._logits_layers: tuple = ()
        # The Dense whose softmax the loss takes over on the single-output fused path.
        self._logits_layer: Optional[Dense] = None
        # Data parallelism of the current fit/evaluate/predict (None: this process alone).
        self._dp: Optional[DataParallel] = None

    def _start(self, verbose: int) -> int:
        """Sets up data parallelism for a fit/evaluate/predict call; returns the verbosity (rank
        0 alone shows progress)."""
        self._dp = DataParallel.for_model(self.model)
        return 0 if self._dp is not None and self._dp.rank != 0 else verbose

    def reset(self) -> None:
        """Forget the fused trainer (the model's layers changed)."""
        self._fused = self._chain = self._graph = None

    # --- configuration of a run -------------------------------------------------------------------
    def _configure(self) -> None:
        """Which output activations the losses take over: an output Dense whose activation is
        its loss's ``foldable_activation`` (softmax for the categorical cross-entropies, sigmoid
        for the binary ones) hands the loss its pre-activation values, as tf.keras does: more
        accurate, and one pass cheaper."""
        model = self.model
        comp = model._compiled
        try:
            out_layers = list(model._output_layers())
        except (NotImplementedError, AttributeError):
            out_layers = []
        fold, layers = [], []
        for k, loss in enumerate(comp.losses):
            layer = out_layers[k] if k < len(out_layers) else None
            act = getattr(loss, "foldable_activation", None) if loss is not None else None
            ok = (act is not None and not getattr(loss, "from_logits", False)
                  and isinstance(layer, Dense) and layer.activation == act)
            fold.append(ok)
        # A layer feeding two outputs can only leave out its activation for both.
        for k, layer in enumerate(out_layers[:len(fold)]):
            if fold[k] and any(out_layers[j] is layer and not fold[j] for j in range(len(fold))):
                fold[k] = False
        for k, layer in enumerate(out_layers[:len(fold)]):
            if fold[k] and not any(layer is l for l in layers):
                layers.append(layer)
        self._fold = fold
        self._logits_layers = tuple(layers)
        self._logits_layer = layers[0] if len(fold) == 1 and fold[0] else None
        self._reg_vars = [v for v in model.weights if getattr(v, "regularizer", None) is not None]
        for v in self._reg_vars:
            if not callable(getattr(v.regularizer, "add_gradient", None)):
                raise NotImplementedError(
                    f"The regularizer of weight {v.name!r} ({type(v.regularizer).__name__}) has no "
                    f"add_gradient(value, grad) method: fit needs the gradient of its penalty. "
                    f"Subclass keras.regularizers.Regularizer and implement it.")
        self._constrained = [v for v in model.trainable_weights
                             if getattr(v, "constraint", None) is not None]
        # Activity regularization is the layer's own work: its forward_train leaves the penalty
        # of that call (already divided by the batch rows, as tf.keras) in `_activity_penalty`
        # and its backward adds the penalty's gradient; the loop adds the penalty to the loss.
        self._activity_layers = [layer for layer in model.layers
                                 if getattr(layer, "activity_regularizer", None) is not None]

    def _fused_trainer(self, arrays: Optional[ArrayData], class_weight=None
                       ) -> Optional[FusedTrainer]:
        """The native whole-step loop, when every layer, loss and the optimizer have one and the
        data are plain arrays (``FASTCKPT_FUSED=0`` forces the layer-by-layer path, e.g. to
        compare the two). Sample weights (``class_weight`` is already in them), loss weights,
        several outputs and metrics without a native count run on the graph trainer."""
        if os.environ.get("FASTCKPT_FUSED", "1") == "0" or arrays is None:
            return None
        model = self.model
        comp = model._compiled
        if not comp.losses or any(loss is None for loss in comp.losses):
            return None
        if (any(y is None for y in arrays.ys) or self._reg_vars or self._constrained
                or any(getattr(loss, "ignore_class", None) is not None for loss in comp.losses)
                or any(y.dtype not in (np.int32, np.float32) for y in arrays.ys)):
            return None
        if any(getattr(layer, "activity_regularizer", None) is not None for layer in model.layers):
            return None
        # The chain trainer (one float input, Dense/Dropout, one unweighted output), else the
        # graph trainer.
        fused = None
        loss = comp.losses[0]
        if (len(comp.losses) == 1 and comp.loss_weights[0] in (None, 1.0)
                and not comp.weighted_metrics[0] and arrays.sws[0] is None
                and len(arrays.xs) == 1 and arrays.xs[0].dtype == np.float32
                and arrays.ys[0].dtype == np.int32):
            logits_loss = bool(getattr(loss, "from_logits", False)) or self._logits_layer is not None
            fused = build_fused(model, logits_loss, self._logits_layer, cached=self._chain)
            if fused is not None:
                self._chain = fused
        if fused is None:
            fused = build_graph_fused(model, self._fold, self._logits_layers, arrays.xs,
                                      self._graph, arrays.ys, arrays.sws)
            if fused is not None:
                self._graph = fused
        if fused is not None:
            self._fused = fused
            fused.sync_in()
        return fused

    # --- one step ---------------------------------------------------------------------------------
    def _grad_buffer(self, k: int, shape) -> np.ndarray:
        key = (k, tuple(shape))
        buf = self._loss_ws.get(key)
        if buf is None:
            buf = aligned_empty(shape, np.float32)
            self._loss_ws[key] = buf
        return buf

    def penalties(self) -> List[np.float32]:
        """Weight penalties at the current weights, then the activity penalties of the last
        forward pass (tf.keras' ``model.losses``)."""
        model = self.model
        out = [np.float32(v.regularizer(v.value)) for v in model.weights
               if getattr(v, "regularizer", None) is not None]
        out += [np.float32(layer._activity_penalty) for layer in model.layers
                if getattr(layer, "activity_regularizer", None) is not None
                and getattr(layer, "_activity_penalty", None) is not None]
        return out

    def _activity_penalty(self) -> float:
        total = 0.0
        for layer in self._activity_layers:
            p = getattr(layer, "_activity_penalty", None)
            if p is None:
                raise NotImplementedError(
                    f"Layer {layer.name!r} has an activity_regularizer but its forward_train does "
                    f"not report the penalty (`_activity_penalty`): fit cannot include it in the "
                    f"loss as tf.keras does.")
            total += float(p)
        return total

    def _step(self, xs, ys, sws, training: bool, global_rows: Optional[int] = None) -> None:
        """Forward, losses, metrics; with ``training`` also backward, penalties' gradients, the
        optimizer update and the constraints. ``global_rows``: this replica's batch is a share
        of a global batch of that many rows (data parallelism): losses are scaled by it and the
        gradients summed over the replicas before the update."""
        model = self.model
        comp = model._compiled
        dp = self._dp if training else None
        if dp is not None and int(xs[0].shape[0]) == 0:
            # A global batch smaller than the replica count: no rows here, still one update.
            dp.begin_backward(model)
            pairs = model._grads_and_vars()
            for g, _ in pairs:
                g.fill(0.0)
            self._apply(pairs, dp)
            return
        outs = model._forward_train(list(xs), training, self._logits_layers)
        if len(outs) != len(comp.losses):
            raise ValueError(f"Model {model.name!r} produced {len(outs)} outputs but was compiled "
                             f"for {len(comp.losses)} ({comp.names})")
        m = int(outs[0].shape[0])
        grads = [] if training else None
        total = 0.0
        out_masks = getattr(model, "_output_masks", None) or [None] * len(outs)
        for k, out in enumerate(outs):
            loss, y, sw = comp.losses[k], ys[k], sws[k]
            g = self._grad_buffer(k, out.shape) if training else None
            mask = _loss_mask(out_masks[k], out)
            if loss is None or y is None:
                if g is not None:
                    g.fill(0.0)
                    grads.append(g)
                self._update_metrics(k, y, out, sw, mask=mask)
                continue
            lsw = sw  # the loss's weights
            if mask is not None:  # as tf.keras: masked entries weigh 0, the rest share the batch
                sw = lsw = _masked_weights(sw, mask)
                if loss.reduction in ("auto", "sum_over_batch_size"):  # total / valid (nan at 0)
                    lsw = sw * (np.float32(mask.size / mask.sum()) if mask.any() else np.nan)
            w = comp.loss_weights[k]
            # Reported: the loss value (sum / rows for sum_over_batch_size, as Keras), tracked
            # as a mean over batches weighted by their rows. Differentiated: that value times
            # the loss weight (reduction 'none': the sum, as a gradient of a vector is in TF).
            per_row = loss.reduction in ("auto", "sum_over_batch_size")
            scale = (1.0 if w is None else w) / ((global_rows or m) if per_row else 1)
            s = loss._fwd_bwd(y, out, lsw, g, scale, self._fold[k])
            value_m = s if loss.reduction != "sum" else s * m  # loss value times batch rows
            tracker = comp.loss_trackers[k]
            if tracker is not None:
                tracker.total += value_m
                tracker.count += m
            total += value_m if w is None else w * value_m
            if g is not None:
                grads.append(g)
            self._update_metrics(k, y, out, sw, mask=mask)
        if self._reg_vars:
            total += m * sum(float(v.regularizer(v.value)) for v in self._reg_vars)
        if self._activity_layers:
            total += m * self._activity_penalty()
        model._loss_tracker.total += total
        model._loss_tracker.count += m
        if not training:
            return
        if dp is not None:  # each bucket of gradients is sent as soon as backward fills it
            model._backward(grads, self._logits_layers,
                            layer_done=dp.begin_backward(model).layer_done)
        else:
            model._backward(grads, self._logits_layers)
        self._apply(model._grads_and_vars(), dp)

    def _apply(self, pairs, dp) -> None:
        """Sum the gradients over the replicas (if any), add the penalties' gradients (the same
        on every replica, so added after the sum), update, constrain."""
        model = self.model
        if dp is not None:
            dp.allreduce_gradients(pairs)
        if self._reg_vars:
            for g, v in pairs:
                reg = getattr(v, "regularizer", None)
                if reg is not None:
                    reg.add_gradient(v.value, g)
        model.optimizer.apply_gradients(pairs)
        for v in self._constrained:
            new = np.asarray(v.constraint(v.value), dtype=v.value.dtype)
            if new.shape != v.value.shape:
                raise ValueError(f"The constraint of weight {v.name!r} returned shape {new.shape}, "
                                 f"expected {v.value.shape}")
            np.copyto(v.value, new)

    def _update_metrics(self, k: int, y, out: np.ndarray, sw, skip=(), mask=None) -> None:
        """Output ``k``'s metrics on one batch (``skip``: metrics the native loop counted).
        ``mask``: the output's mask as float32 (``_loss_mask``); ``sw`` then already holds it.
        As tf.keras, unweighted metrics are weighted by the mask alone."""
        comp = self.model._compiled
        if y is None or not (comp.metrics[k] or comp.weighted_metrics[k]):
            return
        activated = None
        # Labels the sparse cross-entropy has range-checked (the count kernel indexes with them).
        loss = comp.losses[k]
        checked = (isinstance(loss, losses_mod.SparseCategoricalCrossentropy)
                   and getattr(loss, "ignore_class", None) is None
                   and y.dtype == np.int32 and y.ndim == 1 and out.ndim == 2)
        for weighted, group in ((False, comp.metrics[k]), (True, comp.weighted_metrics[k])):
            w = sw if weighted else mask
            for metric in group:
                if not weighted and any(metric is m for m in skip):
                    continue
                if type(metric) is metrics_mod.SparseCategoricalAccuracy and w is None and checked:
                    # Arg-max is the same on logits and on probabilities.
                    metric.add_counts(ops.sparse_accuracy_count(out, y), out.shape[0])
                    continue
                if activated is None:
                    activated = self._activated(k, out)
                if w is None:
                    metric.update_state(y, activated)
                else:
                    metric.update_state(y, activated, sample_weight=w)

    def _activated(self, k: int, out: np.ndarray) -> np.ndarray:
        if self._fold[k]:
            act = self.model._compiled.losses[k].foldable_activation
            return getattr(activations, act)(out)
        return out

    def _add_totals(self, totals) -> None:
        model = self.model
        loss_sum, correct, seen = totals
        model._loss_tracker.total += loss_sum
        model._loss_tracker.count += seen
        for metric in model.compiled_metrics:  # accuracies: matches over rows, as add_counts
            metric.total += float(correct)
            metric.count += float(seen)

    def _add_graph_totals(self, fused: GraphFusedTrainer, res, arrays: ArrayData, order,
                          batch_size: int, s0: int) -> None:
        """A graph trainer's totals of steps [s0, ...): the total loss, each output's loss and
        native matches; then the outputs' other metrics, batch by batch from the recorded
        predictions, with the same target and sample-weight rows as the layer-by-layer path."""
        model = self.model
        comp = model._compiled
        loss_sum, _, seen, out_loss, out_correct, preds = res
        model._loss_tracker.total += loss_sum
        model._loss_tracker.count += seen
        for k, tracker in enumerate(comp.loss_trackers):
            if tracker is not None:
                tracker.total += out_loss[k]
                tracker.count += seen
            for metric in fused.native[k]:  # accuracies: matches over rows, as add_counts
                metric.total += float(out_correct[k])
                metric.count += float(seen)
        if not any(p is not None for p in preds):
            return
        base = s0 * batch_size
        lo = base
        while lo < base + seen:
            hi = min(lo + batch_size, base + seen)
            rows = slice(lo, hi) if order is None else order[lo:hi]
            for k, pred in enumerate(preds):
                if pred is None:
                    continue
                sw = arrays.sws[k]
                self._update_metrics(k, arrays.ys[k][rows], pred[lo - base:hi - base],
                                     None if sw is None else sw[rows], skip=fused.native[k])
            lo = hi

    def _fused_steps(self, fused, arrays: ArrayData, order, batch_size: int, s0: int, s1: int,
                     snap=None) -> None:
        """Training steps [s0, s1) of a pass in one native call, their totals and metrics."""
        if isinstance(fused, GraphFusedTrainer):
            res = fused.train_steps(arrays.xs[0], arrays.ys, arrays.sws, order, batch_size, s0,
                                    s1, snap)
            self._add_graph_totals(fused, res, arrays, order, batch_size, s0)
        else:
            self._add_totals(fused.train_steps(arrays.xs[0], arrays.ys[0], order, batch_size, s0,
                                               s1, snap))
        fused.sync_out()

    def _logs(self, reduce: bool = True) -> Dict[str, float]:
        """The running logs; under data parallelism, of all replicas (``reduce=False``: of this
        one, for hooks that replicas do not all reach the same number of times)."""
        metrics = self.model.metrics
        if self._dp is None or not reduce:
            return {m.name: float(m.result()) for m in metrics}
        local = [(m.total, m.count) for m in metrics]
        for m, (t, c) in zip(metrics, self._dp.reduce_metrics(metrics)):
            m.total, m.count = t, c
        logs = {m.name: float(m.result()) for m in metrics}
        for m, (t, c) in zip(metrics, local):
            m.total, m.count = t, c
        return logs

    def _reset_metrics(self) -> None:
        for m in self.model.metrics:
            m.reset_state()

    # --- data ---------------------------------------------------------------------------------
    def _arrays(self, x, y, sample_weight, what_x="x", what_y="y", what_w="sample_weight",
                class_weight=None, need_y=True) -> ArrayData:
        xs = data.prepare_inputs(self.model, x, what_x, build=True)
        n = data.n_samples(xs)
        ys, raw = data.prepare_targets(self.model, y, n, what_y, what_x, optional=not need_y)
        sws = data.prepare_sample_weights(self.model, sample_weight, n, what_w, what_x)
        arrays = ArrayData(xs, ys, sws, raw[0])
        if class_weight is not None:
            # Checked now (a label without a class weight raises before any step).
            data.apply_class_weight(class_weight, raw[0], None, what_y)
        return arrays

    def _source(self, x, y, sample_weight, what: str, class_weight=None, need_y=True):
        """Arrays (checked now) or an ``IterData`` (checked batch by batch)."""
        if data.is_iterable_source(x):
            kind = "keras.utils.Sequence" if isinstance(x, data.Sequence) else "python generator"
            if y is not None:
                raise ValueError(f"`y` argument is not supported when using {kind} as input.")
            if sample_weight is not None:
                raise ValueError(f"`sample_weight` argument is not supported when using {kind} "
                                 f"as input.")
            return IterData(x, what)
        if x is None:
            raise ValueError(f"Expected input data {what}, got None")
        return self._arrays(x, y, sample_weight, class_weight=class_weight, need_y=need_y,
                            what_x=what, what_y="y" if what == "x" else f"{what}[1]",
                            what_w="sample_weight" if what == "x" else f"{what}[2]")

    def _iter_batch(self, src: IterData, item, index: int, class_weight=None, need_y=True):
        """One generator/Sequence item, checked in full before the step that uses it."""
        where = f"batch {index} of {src.describe()}"
        bx, by, bw = data.unpack_batch(item, src.describe(), index, need_y)
        xs = data.prepare_inputs(self.model, bx, f"x in {where}", build=True)
        n = data.n_samples(xs)
        if not need_y:
            return xs, None, None
        ys, raw = data.prepare_targets(self.model, by, n, f"y in {where}", f"x in {where}")
        sws = data.prepare_sample_weights(self.model, bw, n, f"sample_weight in {where}",
                                          f"x in {where}")
        if class_weight is not None:
            sws = [data.apply_class_weight(class_weight, raw[0], sws[0], f"y in {where}")] + sws[1:]
        return xs, ys, sws

    def _validation_source(self, validation_data):
        if data.is_iterable_source(validation_data):
            return IterData(validation_data, "validation_data")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("Expected validation_data=(x_val, y_val) or (x_val, y_val, "
                             "val_sample_weight), a generator or a keras.utils.Sequence, got "
                             f"{type(validation_data).__name__}"
                             + (f" of {len(validation_data)} items"
                                if isinstance(validation_data, (tuple, list)) else ""))
        vx, vy = validation_data[0], validation_data[1]
        vw = validation_data[2] if len(validation_data) == 3 else None
        return self._arrays(vx, vy, vw, "validation_data[0]", "validation_data[1]",
                            "validation_data[2]")

    # --- fit --------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs: int = 1, verbose="auto", callbacks=None,
            validation_split: float = 0.0, validation_data=None, shuffle=True,
            class_weight=None, sample_weight=None, initial_epoch: int = 0, steps_per_epoch=None,
            validation_steps=None, validation_batch_size=None, validation_freq=1, **kwargs):
        model = self.model
        data.reject_unknown("fit", kwargs)
        model._require_compiled("training it")
        given_batch_size = batch_size
        batch_size = data.check_batch_size(batch_size)
        verbose = self._start(data.verbosity(verbose))
        if not is_int(epochs) or epochs < 0:
            raise ValueError(f"Expected a non-negative integer for epochs, got {epochs!r}")
        if not is_int(initial_epoch) or initial_epoch < 0:
            raise ValueError(f"Expected a non-negative integer for initial_epoch, got "
                             f"{initial_epoch!r}")
        if not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"Expected validation_split in [0, 1), got {validation_split}")
        steps_per_epoch = data.check_steps(steps_per_epoch, "steps_per_epoch")
        validation_steps = data.check_steps(validation_steps, "validation_steps")
        if validation_batch_size is not None:
            validation_batch_size = data.check_batch_size(validation_batch_size)
        validation_freq = _check_validation_freq(validation_freq)
        shuffle = data.check_shuffle(shuffle)
        cw_table = data.check_class_weight(model, class_weight)

        src = self._source(x, y, sample_weight, "x", class_weight=cw_table)
        val = None
        if validation_data is not None:
            val = self._validation_source(validation_data)
        elif validation_split:
            if not isinstance(src, ArrayData):
                raise ValueError(f"`validation_split` is only supported for Tensors or NumPy "
                                 f"arrays, found x of type {type(x).__name__}")
            src, val = data.split_validation(src, validation_split)
        if isinstance(src, ArrayData) and cw_table is not None:
            # Training samples only (after the split), multiplied into any sample weights.
            src.sws = [data.apply_class_weight(cw_table, src.raw0, src.sws[0], "y")] + src.sws[1:]
        if isinstance(src, ArrayData):
            if src.n == 0:
                raise ValueError("Expected at least one training sample, got 0")
            if given_batch_size is None and steps_per_epoch is not None:
                batch_size = math.ceil(src.n / steps_per_epoch)  # tf.keras' default then
            # Batches never exceed the data (tf.keras slices the same way): a huge batch_size
            # must not size the batch buffers.
            batch_size = min(batch_size, src.n)
            pass_steps = math.ceil(src.n / batch_size)
            steps = steps_per_epoch or pass_steps
        elif src.is_sequence:
            n_items = len(src)
            if steps_per_epoch is not None and steps_per_epoch > n_items:
                raise ValueError(f"steps_per_epoch={steps_per_epoch} is more than the "
                                 f"{n_items} batches of {src.describe()}")
            steps = steps_per_epoch or n_items
            if steps == 0:
                raise ValueError(f"Expected input data to be non-empty: {src.describe()} has "
                                 f"no batches")
        else:
            steps = steps_per_epoch

        # Build an unbuilt model from its first batch before the optimizer sees the weights.
        first = None
        if isinstance(src, IterData) and not model.built:
            first = self._first_item(src, steps, shuffle)
        self._configure()
        model.optimizer.build(model.trainable_weights)
        if self._dp is not None:
            if self._activity_layers:
                raise NotImplementedError("activity regularizers are not supported under a "
                                          "MultiWorkerMirroredStrategy yet")
            self._dp.sync_model(model)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                                     model=model, verbose=verbose, epochs=epochs, steps=steps,
                                     do_validation=val is not None)
        model.stop_training = False
        arrays = src if isinstance(src, ArrayData) else None

        callbacks.set_peer_callbacks()
        callbacks.on_train_begin()
        release_free_heap()  # peak RSS: what was freed so far goes back before the steps allocate
        # A BackupAndRestore that found a backup has restored the model; skip the epochs done.
        initial_epoch = callbacks.resume_epoch(initial_epoch)
        logs: Dict[str, float] = {}
        stream = _Stream(model, arrays, batch_size, shuffle) if arrays is not None else None
        for epoch in range(initial_epoch, epochs):
            self._reset_metrics()
            callbacks.on_epoch_begin(epoch)
            batch_hooks = callbacks.should_call_train_batch_hooks
            if self._dp is not None:
                # Per-batch logs are sums over the replicas (collective): if any replica has
                # batch hooks (rank 0's progress bar, say), every replica computes them.
                batch_hooks = any(self._dp.strategy.allgather(bool(batch_hooks)))
            # After on_epoch_begin: a callback may have changed the learning rate, which the
            # native trainer holds in its config (an unchanged one is returned as it is).
            # Replicas exchange gradients between steps: the step-by-step path.
            fused = self._fused_trainer(arrays, cw_table) if self._dp is None else None
            if arrays is not None:
                if steps_per_epoch is None:
                    stream.new_pass()  # each epoch is one pass over the data
                if fused is not None and steps_per_epoch is None and not batch_hooks:
                    # The whole epoch in one native call, GIL released.
                    order = stream.order
                    # A ModelCheckpoint due at this epoch's end may take its snapshot in the
                    # last step's optimizer update of the chain trainer (no copy pass after the
                    # epoch); the graph trainer has no such hook.
                    snap = (snapshot_request(callbacks, epoch)
                            if isinstance(fused, FusedTrainer) else None)
                    self._fused_steps(fused, arrays, order, batch_size, 0, steps, snap)
                else:
                    self._run_array_steps(callbacks, fused, stream, steps, batch_hooks)
            else:
                first = self._run_iter_steps(callbacks, src, steps, epoch, epochs, shuffle,
                                             cw_table, batch_hooks, first,
                                             inferred=steps_per_epoch is None)
                if steps is None:
                    steps = src.pulled  # a finite generator without steps_per_epoch: one pass
            logs = self._logs()
            if val is not None and _should_eval(epoch, validation_freq):
                callbacks.on_test_begin()
                val_logs = self._evaluate_source(val, validation_batch_size or batch_size,
                                                 validation_steps, callbacks)
                callbacks.on_test_end(val_logs)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            callbacks.on_epoch_end(epoch, logs)
            callbacks.on_checkpoint_committed(epoch, logs)
            if model.stop_training:
                break
        if epochs > 0:  # as tf_keras: an optimizer with use_ema leaves the averaged weights
            model.optimizer.finalize_variable_values(model.trainable_weights)
        callbacks.on_train_end(logs)
        # Peak RSS: validation's whole-pass workspaces and what the epochs freed go back before
        # whatever runs next (predict allocates its own pass buffers).
        if self._chain is not None:
            self._chain.release_workspace()
        release_free_heap()
        return callbacks.history if callbacks.history is not None else History()

    def _next_item(self, src: IterData, order, step: int, steps, epoch: int, epochs: int,
                   inferred: bool):
        """The next training item, None at the natural end of a finite generator's epoch."""
        try:
            return src.get(order[step] if order is not None else step)
        except StopIteration:
            if steps is None and step > 0:
                return None  # the generator's end is the end of the (only) epoch
            done = src.pulled
            if inferred:
                raise ValueError(
                    f"{src.describe()} was exhausted after {done} batches, before epoch "
                    f"{epoch + 1} of {epochs}: pass steps_per_epoch with a generator that yields "
                    f"at least steps_per_epoch * epochs batches, or a keras.utils.Sequence. The "
                    f"model is as at the end of epoch {epoch}.") from None
            raise ValueError(
                f"{src.describe()} stopped after {done} batches, at step {step + 1} of epoch "
                f"{epoch + 1}: steps_per_epoch={steps} and epochs={epochs} need {steps * epochs} "
                f"batches. The model is as at the end of epoch {epoch}.") from None

    def _snapshot(self):
        model = self.model
        variables = list(model.weights) + list(model.optimizer.variables)
        return [(v, np.array(v.value, copy=True)) for v in variables], model._get_rng_state()

    def _restore(self, snapshot) -> None:
        pairs, rng_state = snapshot
        for v, value in pairs:
            np.copyto(v.value, value)
        self.model._set_rng_state(rng_state)

    def _first_item(self, src: IterData, steps, shuffle):
        """Peek at the first batch of an unbuilt model's generator to build it (kept for the
        first step); a Sequence is simply indexed."""
        if src.is_sequence:
            bx, _, _ = data.unpack_batch(src.get(0), src.describe(), 0, need_y=True)
            data.prepare_inputs(self.model, bx, f"x in batch 0 of {src.describe()}", build=True)
            return None
        try:
            item = src.get(0)
        except StopIteration:
            raise ValueError(f"Expected input data to be non-empty: {src.describe()} yielded no "
                             f"batches") from None
        bx, _, _ = data.unpack_batch(item, src.describe(), 0, need_y=True)
        data.prepare_inputs(self.model, bx, f"x in batch 0 of {src.describe()}", build=True)
        return item

    def _run_array_steps(self, callbacks, fused, stream: "_Stream", steps: int,
                         batch_hooks: bool) -> None:
        """One epoch of array batches step by step: per-batch hooks, a ``steps_per_epoch``
        that cuts across passes, or the layer-by-layer path."""
        arrays = stream.arrays
        for step in range(steps):
            order, i = stream.next_step()
            if batch_hooks:
                callbacks.on_train_batch_begin(step)
            if fused is not None:
                self._fused_steps(fused, arrays, order, stream.batch_size, i, i + 1)
            else:
                lo, hi = i * stream.batch_size, min(arrays.n, (i + 1) * stream.batch_size)
                if self._dp is None:
                    xs, ys, sws = arrays.batch(order, lo, hi)
                    self._step(xs, ys, sws, training=True)
                else:  # this replica's share of the global batch
                    a, b = self._dp.local_rows(lo, hi)
                    xs, ys, sws = arrays.batch(order, a, b)
                    with random_rows(self.model.layers, a - lo, hi - lo):
                        self._step(xs, ys, sws, training=True, global_rows=hi - lo)
            if batch_hooks:
                callbacks.on_train_batch_end(step, self._logs())
            if self.model.stop_training:
                break

    def _run_iter_steps(self, callbacks, src: IterData, steps, epoch: int, epochs: int, shuffle,
                        cw_table, batch_hooks: bool, first, inferred: bool):
        model = self.model
        src.epoch_begin()
        order = data.sequence_order(model, len(src), shuffle) if src.is_sequence else None
        # Bad data met mid-epoch (a generator that ends early or yields a wrong batch) puts the
        # model back as it was at the start of this epoch: the state of the last epoch finished.
        snapshot = self._snapshot()
        step = 0
        while steps is None or step < steps:
            try:
                if first is not None:
                    item, first = first, None
                else:
                    item = self._next_item(src, order, step, steps, epoch, epochs, inferred)
                    if item is None:
                        break
                xs, ys, sws = self._iter_batch(src, item, step, cw_table)
            except BaseException:
                self._restore(snapshot)
                raise
            if batch_hooks:
                callbacks.on_train_batch_begin(step)
            if self._dp is None:
                self._step(xs, ys, sws, training=True)
            else:  # every replica draws the same global batch and takes its share of the rows
                a, m, xs, ys, sws = self._dp.share(xs, ys, sws)
                with random_rows(self.model.layers, a, m):
                    self._step(xs, ys, sws, training=True, global_rows=m)
            if batch_hooks:
                callbacks.on_train_batch_end(step, self._logs())
            step += 1
            if model.stop_training:
                break
        src.epoch_end()
        return first

    # --- evaluate / predict ----------------------------------------------------------------------
    def _evaluate_source(self, src, batch_size: int, steps: Optional[int],
                         callbacks=None) -> Dict[str, float]:
        """Loss and metrics over ``src`` (running training metrics saved and put back)."""
        model = self.model
        self._configure()
        saved = [m._get_state() for m in model.metrics]
        self._reset_metrics()
        if callbacks is not None and not callbacks.should_call_test_batch_hooks:
            callbacks = None
        try:
            if isinstance(src, ArrayData):
                self._evaluate_arrays(src, batch_size, steps, callbacks)
            else:
                self._evaluate_iter(src, steps, callbacks)
            result = self._logs()
        finally:
            for m, state in zip(model.metrics, saved):
                m._set_state(state)
        return result

    def _evaluate_arrays(self, arrays: ArrayData, batch_size: int, steps, callbacks) -> None:
        n = arrays.n
        batch_size = min(batch_size, max(n, 1))
        n_steps = math.ceil(n / batch_size)
        if steps is not None:
            if steps > n_steps:
                warnings.warn(f"Your input ran out of data: steps={steps} but the data hold "
                              f"{n_steps} batches of {batch_size}; evaluated those.", stacklevel=4)
            n_steps = min(n_steps, steps)
        rows = min(n, n_steps * batch_size)
        if self._dp is None:
            fused = self._fused_trainer(arrays) if callbacks is None and steps is None else None
            if fused is not None:
                if isinstance(fused, GraphFusedTrainer):
                    res = fused.evaluate(arrays.xs[0], arrays.ys, arrays.sws, batch_size)
                    self._add_graph_totals(fused, res, arrays, None, batch_size, 0)
                else:
                    self._add_totals(fused.evaluate(arrays.xs[0], arrays.ys[0], batch_size))
                return
            a, b = 0, rows
        else:
            # Each replica evaluates its share of the rows; the logs sum the replicas' totals.
            a, b = self._dp.local_rows(0, rows)
        for step in range(math.ceil((b - a) / batch_size)):
            lo, hi = a + step * batch_size, min(b, a + (step + 1) * batch_size)
            if callbacks is not None:
                callbacks.on_test_batch_begin(step)
            xs, ys, sws = arrays.batch(None, lo, hi)
            self._step(xs, ys, sws, training=False)
            if callbacks is not None:
                # This replica's logs: replicas may run different numbers of batches here.
                callbacks.on_test_batch_end(step, self._logs(reduce=False))

    def _evaluate_iter(self, src: IterData, steps, callbacks) -> None:
        total = steps if steps is not None else (len(src) if src.is_sequence else None)
        if src.is_sequence and steps is not None and steps > len(src):
            raise ValueError(f"steps={steps} is more than the {len(src)} batches of "
                             f"{src.describe()}")
        src.epoch_begin()
        step = 0
        while total is None or step < total:
            try:
                item = src.get(step)
            except StopIteration:
                if total is None and step > 0:
                    break
                raise ValueError(f"{src.describe()} stopped after {src.pulled} batches"
                                 + (f"; {total} steps were asked for" if total else
                                    ": it yielded no batches for this evaluation (a generator "
                                    "serves one pass: for validation in every epoch pass "
                                    "validation_steps with a repeating generator, or a "
                                    "keras.utils.Sequence)")) from None
            xs, ys, sws = self._iter_batch(src, item, step)
            if callbacks is not None:
                callbacks.on_test_batch_begin(step)
            if self._dp is not None:  # this replica's rows; the logs sum the replicas' totals
                _, _, xs, ys, sws = self._dp.share(xs, ys, sws)
            if self._dp is None or xs[0].shape[0]:
                self._step(xs, ys, sws, training=False)
            if callbacks is not None:
                callbacks.on_test_batch_end(step, self._logs())
            step += 1
        if src.is_sequence:
            src.epoch_end()

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None,
                 steps=None, callbacks=None, return_dict: bool = False, **kwargs):
        model = self.model
        data.reject_unknown("evaluate", kwargs)
        model._require_compiled("evaluating it")
        given = batch_size
        batch_size = data.check_batch_size(batch_size)
        steps = data.check_steps(steps, "steps")
        verbose = self._start(data.verbosity(verbose))
        src = self._source(x, y, sample_weight, "x")
        if isinstance(src, ArrayData):
            if src.n == 0:
                # tf.keras: ValueError("Expected input data to be non-empty.")
                raise ValueError(f"evaluate: expected input data to be non-empty, got x of shape "
                                 f"{src.xs[0].shape}: the loss and metrics of no samples are "
                                 f"undefined")
            if given is None and steps is not None:
                batch_size = math.ceil(src.n / steps)
            batch_size = min(batch_size, src.n)
            n_steps = math.ceil(src.n / batch_size)
            if steps is not None:
                n_steps = min(n_steps, steps)
        else:
            n_steps = steps or (len(src) if src.is_sequence else None)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=model,
                                     verbose=verbose, epochs=1, steps=n_steps)
        callbacks.on_test_begin()
        logs = self._evaluate_source(src, batch_size, steps, callbacks)
        callbacks.on_test_end(logs)
        if return_dict:
            return logs
        return flatten_metrics_in_order(logs, model.metrics_names)

    def _predict_batches(self, xs: List[np.ndarray]) -> List[np.ndarray]:
        return self.model._forward_train(list(xs), False, ())

    def _dense_chain(self, xs: List[np.ndarray]) -> Optional[List[Dense]]:
        """The Dense layers of a model that is a chain of Dense and Dropout layers only (Dropout
        is the identity in inference), when ``xs`` is one float32 matrix they take: predict runs
        them in one native call per pass. None for any other model or input."""
        model = self.model
        if not getattr(model, "_is_layer_chain", False) or not is_chain(model) or len(xs) != 1:
            return None
        layers = model.layers
        if any(type(layer) not in (Dense, Dropout) for layer in layers):
            return None
        dense = [layer for layer in layers if type(layer) is Dense]
        x = xs[0]
        if not dense or x.ndim != 2 or x.dtype != np.float32 or x.shape[1] != dense[0].kernel.shape[0]:
            return None
        for layer in dense:
            if layer.activation not in ops.ACTIVATIONS:
                return None
            k = layer.kernel.value
            if k.dtype != np.float32 or not k.flags.c_contiguous or (
                    layer.use_bias and (layer.bias.value.dtype != np.float32
                                        or not layer.bias.value.flags.c_contiguous)):
                return None
        return dense

    def _graph_forward(self, xs: List[np.ndarray]) -> Optional[GraphForward]:
        """predict's native whole-graph forward (one native call per pass) when every layer of
        the model has a native step, else None (``FASTCKPT_FUSED=0``: None)."""
        cached = getattr(self, "_graph_fwd", None)
        fwd = build_graph_forward(self.model, xs, cached)
        if fwd is not None:
            self._graph_fwd = fwd
        return fwd

    def _predict_copy(self, xs: List[np.ndarray]) -> List[np.ndarray]:
        """The outputs for ``xs`` in one pass, in new arrays the caller owns."""
        dense = self._dense_chain(xs)
        if dense is None:
            graph = self._graph_forward(xs)
            if graph is None:
                return [np.array(r, np.float32, copy=True) for r in self._predict_batches(xs)]
            n = xs[0].shape[0]
            outs = [np.empty((n,) + tuple(s[1:]), np.float32)
                    for s in data.output_shapes(self.model)]
            graph.run(xs, outs)
            return outs
        out = np.empty((xs[0].shape[0], dense[-1].units), np.float32)
        self._run_dense_chain(dense, xs[0], out)
        return [out]

    @staticmethod
    def _run_dense_chain(dense: List[Dense], x: np.ndarray, out: np.ndarray) -> None:
        """``dense`` on the rows of ``x``, the last layer's output written into ``out``; the
        layers' own workspaces hold the hidden outputs, as in the layer-by-layer pass."""
        m = x.shape[0]
        steps = [(layer.kernel.value, layer.bias.value if layer.use_bias else None,
                  layer._ws("y", (m, layer.units)), layer.activation) for layer in dense]
        last = steps[-1]
        steps[-1] = (last[0], last[1], out, last[3])
        ops.dense_chain_forward(x, steps)

    def _structure_outputs(self, outs: List[np.ndarray]):
        if len(outs) == 1:
            return outs[0]
        nested = getattr(self.model, "_nested_outputs", None)
        if isinstance(nested, dict):
            return {k: o for k, o in zip(sorted(nested), outs)}
        return list(outs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        model = self.model
        data.reject_unknown("predict", kwargs)
        given = batch_size
        batch_size = data.check_batch_size(batch_size)
        steps = data.check_steps(steps, "steps")
        verbose = self._start(data.verbosity(verbose))
        dp = self._dp
        if dp is not None and data.is_iterable_source(x):
            raise NotImplementedError("predict under a MultiWorkerMirroredStrategy takes arrays")
        if data.is_iterable_source(x):
            return self._predict_iter(IterData(x, "x"), steps, verbose, callbacks)
        xs = data.prepare_inputs(model, x, "x", build=True)
        n = data.n_samples(xs)
        if given is None and steps is not None and n:
            batch_size = math.ceil(n / steps)
        if steps is not None:
            n = min(n, steps * batch_size)
        if dp is not None:  # each replica predicts its share of the rows; all get every row
            a, b = dp.local_rows(0, n)
            xs = [arr[a:b] for arr in xs]
            n = b - a
        n_steps = math.ceil(n / batch_size)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=model,
                                     verbose=verbose, epochs=1, steps=n_steps)
        shapes = data.output_shapes(model)
        outs = [np.empty((n,) + tuple(s[1:]), np.float32) for s in shapes]
        callbacks.on_predict_begin()
        hooks = callbacks.should_call_predict_batch_hooks
        # Without per-batch hooks, whole batches are grouped into passes of at least 1024 rows
        # (the rule the C++ runtime shares, so its predictions equal these bit for bit).
        # Outputs can differ in the last bits from a batch-by-batch run, as they can in Keras
        # between batch sizes.
        rows = batch_size if hooks else ops.predict_pass_rows(batch_size)
        # A chain of Dense layers writes its last output straight into the returned array; a
        # graph of layers with native steps runs each pass in one native call.
        dense = self._dense_chain(xs)
        graph = self._graph_forward(xs) if dense is None else None
        for step in range(math.ceil(n / rows)):
            lo, hi = step * rows, min(n, (step + 1) * rows)
            if hooks:
                callbacks.on_predict_batch_begin(step)
            if dense is not None:
                self._run_dense_chain(dense, xs[0][lo:hi], outs[0][lo:hi])
            elif graph is not None:
                graph.run([a[lo:hi] for a in xs], [o[lo:hi] for o in outs])
            else:
                res = self._predict_batches([a[lo:hi] for a in xs])
                for o, r in zip(outs, res):
                    o[lo:hi] = r
            if hooks:
                part = [o[lo:hi] for o in outs]
                callbacks.on_predict_batch_end(step, {"outputs": self._structure_outputs(part)})
        callbacks.on_predict_end()
        if dp is not None:
            outs = [dp.gather_rows(o) for o in outs]
        return self._structure_outputs(outs)

    def _predict_iter(self, src: IterData, steps, verbose, callbacks):
        model = self.model
        total = steps if steps is not None else (len(src) if src.is_sequence else None)
        if not isinstance(callbacks, CallbackList):
            callbacks = CallbackList(callbacks, add_progbar=verbose != 0, model=model,
                                     verbose=verbose, epochs=1, steps=total)
        callbacks.on_predict_begin()
        hooks = callbacks.should_call_predict_batch_hooks
        chunks: List[List[np.ndarray]] = []
        step = 0
        while total is None or step < total:
            try:
                item = src.get(step)
            except StopIteration:
                if total is None and step > 0:
                    break
                raise ValueError(f"{src.describe()} stopped after {src.pulled} batches"
                                 + (f"; steps={total} were asked for" if total else
                                    ": it yielded no batches")) from None
            bx, _, _ = data.unpack_batch(item, src.describe(), step, need_y=False)
            xs = data.prepare_inputs(model, bx, f"x in batch {step} of {src.describe()}",
                                     build=True)
            if hooks:
                callbacks.on_predict_batch_begin(step)
            res = self._predict_copy(xs)
            chunks.append(res)
            if hooks:
                callbacks.on_predict_batch_end(step, {"outputs": self._structure_outputs(res)})
            step += 1
        callbacks.on_predict_end()
        outs = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
        return self._structure_outputs(outs)

    # --- single batches ---------------------------------------------------------------------------
    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None,
                       reset_metrics: bool = True, return_dict: bool = False):
        model = self.model
        self._dp = None  # one batch, in this process (not sharded over replicas)
        model._require_compiled("training it")
        cw = data.check_class_weight(model, class_weight)
        arrays = self._arrays(x, y, sample_weight, class_weight=cw)
        if arrays.n == 0:
            raise ValueError("train_on_batch: expected a non-empty batch, got 0 samples")
        if cw is not None:
            arrays.sws = [data.apply_class_weight(cw, arrays.raw0, arrays.sws[0], "y")]
        self._configure()
        model.optimizer.build(model.trainable_weights)
        if reset_metrics:
            self._reset_metrics()
        # Layer by layer: the same kernels in the same order as the fused path.
        self._step(arrays.xs, arrays.ys, arrays.sws, training=True)
        logs = self._logs()
        return logs if return_dict else flatten_metrics_in_order(logs, model.metrics_names)

    def test_on_batch(self, x, y=None, sample_weight=None, reset_metrics: bool = True,
                      return_dict: bool = False):
        model = self.model
        self._dp = None
        model._require_compiled("evaluating it")
        arrays = self._arrays(x, y, sample_weight)
        if arrays.n == 0:
            raise ValueError("test_on_batch: expected a non-empty batch, got 0 samples")
        self._configure()
        if reset_metrics:
            self._reset_metrics()
        self._step(arrays.xs, arrays.ys, arrays.sws, training=False)
        logs = self._logs()
        return logs if return_dict else flatten_metrics_in_order(logs, model.metrics_names)

    def predict_on_batch(self, x):
        self._dp = None
        xs = data.prepare_inputs(self.model, x, "x", build=True)
        return self._structure_outputs(self._predict_copy(xs))


class _Stream:
    """Array batches as tf.keras draws them: a pass over the data per epoch, or with
    ``steps_per_epoch`` one continuous stream of passes cut into epochs of that many steps
    (each pass with its own shuffle order)."""

    def __init__(self, model, arrays: ArrayData, batch_size: int, shuffle):
        self.model = model
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pass_steps = math.ceil(arrays.n / batch_size)
        self.order = None
        self.pos = self.pass_steps  # no pass drawn yet

    def new_pass(self):
        self.order = data.epoch_order(self.model, self.arrays.n, self.shuffle, self.batch_size)
        self.pos = 0
        return self.order

    def next_step(self):
        if self.pos >= self.pass_steps:
            self.order = data.epoch_order(self.model, self.arrays.n, self.shuffle, self.batch_size)
            self.pos = 0
        i = self.pos
        self.pos += 1
        return self.order, i


def _loss_mask(mask, out: np.ndarray) -> Optional[np.ndarray]:
    """An output's mask (one flag per loss entry, ``out.shape[:-1]``) as float32, else None."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if out.ndim < 2 or mask.shape != out.shape[:-1]:
        return None
    return mask.astype(np.float32)


def _masked_weights(sw, mask: np.ndarray) -> np.ndarray:
    """tf.keras' ``apply_mask``: per-sample weights (``(rows,)``, ``(rows, 1)`` or one per entry)
    times the mask, one weight per loss entry."""
    if sw is None:
        return mask
    w = np.asarray(sw, np.float32)
    if w.ndim == mask.ndim + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    while w.ndim < mask.ndim:
        w = w[..., None]
    return (w * mask).astype(np.float32)

