"""The fused path of ``fit``: whole epochs in C++ when every piece has a native implementation.

Eligible: a chain (one input, one output) of built-in ``Dense``/``Dropout`` layers only, an
optimizer whose ``_fused_config()`` is not None (``Adam``/``SGD``), sparse categorical
cross-entropy with no loss weight, metrics the loss kernel counts (sparse categorical accuracy),
and no sample or class weights, regularizers or constraints (the Trainer checks those). Anything
else — a custom layer, another loss or metric, a graph — takes the layer-by-layer path, which
runs the same kernels in the same order, so both give bit-identical weights (tested).
"""

from __future__ import annotations

import ctypes
from typing import Optional

from fastckpt import losses as losses_mod, metrics as metrics_mod, ops
from fastckpt.layers.dense import Dense
from fastckpt.layers.dropout import Dropout

__all__ = ["FusedTrainer", "build_fused", "fused_key", "is_chain", "release_free_heap",
           "snapshot_request"]

# The graph-protocol implementations that run ``model.layers`` as a chain, in order.
_CHAIN_IMPLS = ("Model._forward_train", "Sequential._forward_train")


def _malloc_trim():
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc; absent elsewhere (musl, macOS)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Gives the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op
    elsewhere). ``fit`` calls it once its buffers are allocated and once it is done: the
    transients freed before (a model's weights drawn in float64, NumPy temporaries) stay resident
    otherwise, because glibc raises its mmap threshold after the first large free and keeps what
    later frees leave in the heap. A fraction of a millisecond."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def is_chain(model) -> bool:
    """Whether ``model`` runs its layers one after the other (one input, one output): the only
    graph the native loop executes."""
    fwd = getattr(type(model), "_forward_train", None)
    return (getattr(fwd, "__qualname__", None) in _CHAIN_IMPLS
            and len(model.input_names) <= 1 and len(model.output_names) == 1)


def snapshot_request(callbacks, epoch: int):
    """The first callback's request to snapshot the weights and slots in the last step of
    ``epoch`` (``ModelCheckpoint._fused_snapshot_request``), or None."""
    for cb in getattr(callbacks, "callbacks", ()):
        hook = getattr(cb, "_fused_snapshot_request", None)
        if hook is not None:
            request = hook(epoch, callbacks)
            if request is not None:
                return request
    return None


class FusedTrainer:
    def __init__(self, model, impl, key, buffers=()):
        self.model = model
        self.impl = impl
        self.key = key
        self.dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]
        # Per trainable variable (trainer order): its value and slot0..2 arrays (None: absent).
        self.buffers = list(buffers)

    def sync_in(self) -> None:
        """Python's dropout counters may have moved (layer-by-layer calls, a restored state)."""
        self.impl.set_dropout_state([(d.rng_seed, d.rng_offset) for d in self.dropouts])

    def sync_out(self) -> None:
        for d, off in zip(self.dropouts, self.impl.dropout_offsets()):
            d.rng_offset = int(off)

    def train_steps(self, x, y, order, batch_size: int, s0: int, s1: int, snapshot=None):
        """Steps [s0, s1). With ``snapshot`` (a request from ``snapshot_request``), the last
        step's update also fills the snapshot: ``snapshot.prepare(buffers)`` (called after the
        other steps) returns the staged image and the (variable, array, offset) targets, and
        ``snapshot.filled(crcs)`` receives the (variable, array, crc) of what was filled."""
        it = self.model.optimizer.iterations.value.reshape(1)
        if snapshot is None or s1 <= s0:
            return self.impl.train_steps(x, y, order, batch_size, s0, s1, it)
        head = (self.impl.train_steps(x, y, order, batch_size, s0, s1 - 1, it) if s1 - 1 > s0
                else (0.0, 0, 0))
        prepared = snapshot.prepare(self.buffers)
        if prepared is None:
            tail = self.impl.train_steps(x, y, order, batch_size, s1 - 1, s1, it)
        else:
            staged, targets = prepared
            *tail, crcs = self.impl.train_steps(x, y, order, batch_size, s1 - 1, s1, it, staged,
                                                targets)
            snapshot.filled(crcs)
        return head[0] + tail[0], head[1] + tail[1], head[2] + tail[2]

    def evaluate(self, x, y, batch_size: int):
        return self.impl.evaluate(x, y, batch_size)

    def release_workspace(self) -> None:
        """Frees the native workspaces (sized again by the next call): ``fit`` calls it at its
        end, so validation's whole-pass buffers do not stay resident beside what runs next."""
        self.impl.release_workspace()


def fused_key(model, logits_loss: bool, logits_layer):
    """What a built trainer depends on: the same key means the same native buffers and config."""
    opt = model.optimizer
    parts = [id(opt), logits_loss, type(opt).__name__, tuple(sorted(opt.get_config().items()))]
    for layer in model.layers:
        parts.append((id(layer), layer.trainable, layer is logits_layer,
                      tuple(w.value.ctypes.data for w in layer.weights)))
    parts.append(tuple(s.value.ctypes.data for s in opt.variables))
    return tuple(parts)


def build_fused(model, logits_loss: bool, logits_layer, cached: Optional[FusedTrainer] = None
                ) -> Optional[FusedTrainer]:
    """A trainer for ``model`` or ``None`` when some piece has no native implementation.
    ``logits_layer`` is the ``Dense`` whose softmax the loss takes over (or ``None``); ``cached``,
    a trainer built before, is returned as it is when nothing it depends on has changed."""
    if not getattr(model, "_is_layer_chain", False):  # a graph or a subclass's call(): not a chain
        return None
    opt, loss = model.optimizer, model.loss
    opt_config = opt._fused_config()
    if opt_config is None or type(loss) is not losses_mod.SparseCategoricalCrossentropy:
        return None
    if loss.reduction not in ("auto", "sum_over_batch_size"):
        return None
    if any(type(m) is not metrics_mod.SparseCategoricalAccuracy for m in model.compiled_metrics):
        return None
    if not is_chain(model) or any(type(layer) not in (Dense, Dropout) for layer in model.layers):
        return None
    key = fused_key(model, logits_loss, logits_layer)
    if cached is not None and cached.key == key:
        return cached
    opt.build(model.trainable_weights)
    layers = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            act = "linear" if layer is logits_layer else layer.activation
            grads = layer._grad_buffers() if layer.trainable else []
            layers.append({
                "kind": "dense", "in": layer.kernel.shape[0], "out": layer.units,
                "act": ops.ACTIVATIONS[act], "trainable": layer.trainable,
                "kernel": layer.kernel.value, "bias": layer.bias.value if layer.use_bias else None,
                "d_kernel": grads[0] if grads else None,
                "d_bias": grads[1] if grads and layer.use_bias else None,
            })
        else:
            layers.append({"kind": "dropout", "rate": layer.rate, "seed": layer.rng_seed,
                           "offset": layer.rng_offset})
    variables = []
    for layer in model.layers:
        for var, grad in zip(layer.trainable_weights, layer._grad_buffers()):
            slots = [opt.get_slot(var, s).value for s in opt.slot_names]
            slots += [None] * (3 - len(slots))
            variables.append({"size": int(var.value.size), "value": var.value, "grad": grad,
                              "slot0": slots[0], "slot1": slots[1], "slot2": slots[2]})
    impl = ops.make_trainer(layers, variables, opt_config, logits_loss, losses_mod.EPSILON,
                            model.input_shape[-1])
    buffers = [(v["value"], v["slot0"], v["slot1"], v["slot2"]) for v in variables]
    return FusedTrainer(model, impl, key, buffers)
