"""``Optimizer``: iterations, learning rate (a float or a schedule), per-variable slots, gradient
clipping, decoupled weight decay, an EMA of the weights, and ``apply_gradients``.

Everything follows tf_keras 2.21's optimizer base: variable order (``variables[0]`` is
``iterations``, then the EMA averages, then each slot group per trainable variable in model
order), checkpoint edges (``_iterations``, ``_learning_rate`` or ``_current_learning_rate``,
``_variables/N``), config keys, and the order of a step (schedule, clip, decay, update, EMA,
``iterations += 1``). Every element-wise pass is a native kernel (``fastckpt.ops``).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fastckpt import ops
from fastckpt.checkpoint.object_graph import TrackableList
from fastckpt.checks import is_int, is_real
from fastckpt.optimizers import schedules as schedules_mod
from fastckpt.variables import Variable

__all__ = ["Optimizer"]

_f32 = np.float32


class _SlotNames(tuple):
    """Slot names in storage order; ``in`` also accepts the names tf_keras' legacy optimizers
    gave the same slots (so their checkpoints restore)."""

    aliases: Dict[str, str] = {}

    def __new__(cls, names, aliases=None):
        obj = super().__new__(cls, names)
        obj.aliases = dict(aliases or {})
        return obj

    def __contains__(self, name) -> bool:
        return tuple.__contains__(self, name) or name in self.aliases


class LearningRateValue(float):
    """The current learning rate: a float that also offers ``numpy()`` and ``assign()`` (what
    scripts call on tf.keras' learning-rate variable)."""

    def __new__(cls, value: float, optimizer: "Optimizer"):
        obj = super().__new__(cls, value)
        obj._optimizer = optimizer
        return obj

    def numpy(self) -> np.float32:
        return _f32(self)

    def assign(self, value) -> None:
        self._optimizer.learning_rate = value


class _CallableList(list):
    """tf_keras' ``optimizer.variables`` is also callable (``optimizer.variables()``)."""

    def __call__(self):
        return self


def _short(x: np.float32) -> float:
    """The shortest decimal that is this float32 (0.001, not 0.0010000000474974513)."""
    return float(str(_f32(x)))


class Optimizer:
    #: Names of the per-variable slots, in storage order (e.g. ``("m", "v")`` for Adam).
    slot_names: Tuple[str, ...] = _SlotNames(())
    #: Legacy tf_keras slot name -> ours.
    _legacy_slots: Dict[str, str] = {}

    def __init__(self, learning_rate=0.001, name: str = "Optimizer", weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema: bool = False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, jit_compile: bool = True,
                 **kwargs):
        kwargs.pop("is_legacy_optimizer", None)
        kwargs.pop("mesh", None)
        lr_alias = kwargs.pop("lr", None)
        if lr_alias is not None:
            learning_rate = lr_alias
        for k in ("loss_scale_factor", "gradient_accumulation_steps"):  # Keras 3 options
            if kwargs.get(k) is not None:
                raise NotImplementedError(f"{type(self).__name__}: {k} is not supported")
            kwargs.pop(k, None)
        if kwargs.get("decay") in (0, 0.0, None):
            kwargs.pop("decay", None)
        for k in ("decay", "gradient_aggregator", "gradient_transformers"):
            if k in kwargs:
                raise ValueError(f"{k} is deprecated in the new Keras optimizer, please check the "
                                 f"docstring for valid arguments (got {k}={kwargs[k]!r}).")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"Expected a non-empty string for name, got {name!r}")
        self.name = name
        for n, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                     ("global_clipnorm", global_clipnorm), ("weight_decay", weight_decay)):
            if v is not None:
                self._check_positive(n, v)
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError(f"At most one of `clipnorm` and `global_clipnorm` can be set. "
                             f"Received: clipnorm={clipnorm}, global_clipnorm={global_clipnorm}.")
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.weight_decay = weight_decay
        self.use_ema = bool(use_ema)
        if self.use_ema:
            if not is_real(ema_momentum) or not 0 <= float(ema_momentum) <= 1:
                raise ValueError(f"`ema_momentum` must be in the range [0, 1]. Received: "
                                 f"ema_momentum={ema_momentum}")
            if ema_overwrite_frequency and (not is_int(ema_overwrite_frequency)
                                            or ema_overwrite_frequency < 1):
                raise ValueError(f"`ema_overwrite_frequency` must be an integer > 1 or None. "
                                 f"Received: ema_overwrite_frequency={ema_overwrite_frequency}")
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.jit_compile = False  # tf_keras reports False without a GPU; there is no XLA here
        self._iterations = Variable(np.int64(0), name=f"{name}/iteration", trainable=False)
        self._schedule: Optional[schedules_mod.LearningRateSchedule] = None
        self._learning_rate: Optional[Variable] = None
        self._current_learning_rate: Optional[Variable] = None
        self._set_learning_rate(learning_rate)
        self._built_for: List[Variable] = []
        self._index: Dict[int, int] = {}
        self._slots: List[List[Variable]] = []  # per trainable variable, one per slot name
        self._averages: List[Variable] = []     # EMA of each trainable variable
        self._scratch: Dict[int, np.ndarray] = {}  # clipped-gradient buffers, per variable
        self._exclude_ids: List[int] = []
        self._exclude_names: List[str] = []

    def _init_slots(self, names: Sequence[str]) -> None:
        self.slot_names = _SlotNames(names, self._legacy_slots)

    @staticmethod
    def _check_positive(name: str, value) -> None:
        if not is_real(value):
            raise TypeError(f"Expected a number for {name}, got {value!r}")
        if not float(value) >= 0.0:
            raise ValueError(f"Expected {name} >= 0, got {value}")

    # --- learning rate ------------------------------------------------------------------------
    def _set_learning_rate(self, value) -> None:
        if isinstance(value, dict):
            value = schedules_mod.deserialize(value)
        if isinstance(value, schedules_mod.LearningRateSchedule):
            self._schedule = value
            now = _f32(value(self._iterations.value))
            if self._current_learning_rate is None:
                self._current_learning_rate = Variable(now, name=f"{self.name}/current_learning_rate",
                                                       trainable=False)
            else:
                self._current_learning_rate.assign(now)
            return
        if callable(value):
            raise TypeError(f"Expected a float or a LearningRateSchedule for learning_rate, got a "
                            f"callable {value!r}; subclass keras.optimizers.schedules."
                            f"LearningRateSchedule")
        self._check_positive("learning_rate", value)
        if self._learning_rate is None:
            self._learning_rate = Variable(_f32(value), name=f"{self.name}/learning_rate",
                                           trainable=False)
        else:
            self._learning_rate.assign(_f32(value))

    @property
    def learning_rate(self) -> LearningRateValue:
        """The rate of the next step (a schedule's value at the current ``iterations``)."""
        var = self._current_learning_rate if self._schedule is not None else self._learning_rate
        return LearningRateValue(float(var.value), self)

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if self._schedule is not None and not isinstance(
                value, (schedules_mod.LearningRateSchedule, dict)):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its "
                            "`learning_rate` constructor argument, hence its learning rate is not "
                            "settable. If you need the learning rate to be settable, you should "
                            "instantiate the optimizer with a float `learning_rate` argument.")
        self._set_learning_rate(value)

    lr = learning_rate

    def _current_lr(self) -> np.float32:
        """Evaluates the schedule at ``iterations`` (tf_keras does this first in every step)."""
        if self._schedule is None:
            return _f32(self._learning_rate.value)
        now = _f32(self._schedule(self._iterations.value))
        self._current_learning_rate.value[...] = now
        return now

    # --- state ------------------------------------------------------------------------------
    @property
    def iterations(self) -> Variable:
        return self._iterations

    @property
    def built(self) -> bool:
        return bool(self._built_for) or bool(self._slots)

    def _slot_initial(self, slot: str) -> float:
        """Initial value of a slot (Adagrad's and Ftrl's accumulators start above zero)."""
        return 0.0

    def build(self, var_list: Sequence[Variable]) -> None:
        """Create the EMA averages and slots for ``var_list`` (idempotent for the same list)."""
        var_list = list(var_list)
        if self._built_for and [id(v) for v in self._built_for] == [id(v) for v in var_list]:
            return
        self._built_for = var_list
        self._index = {id(v): i for i, v in enumerate(var_list)}
        self._scratch = {}
        self._averages = ([Variable(np.array(v.value, copy=True), name=f"{self.name}/average/{v.path}",
                                    trainable=False) for v in var_list] if self.use_ema else [])
        self._slots = [[Variable(np.full(v.shape, self._slot_initial(s), v.dtype),
                                 name=f"{self.name}/{s}/{v.path}", trainable=False)
                        for s in self.slot_names] for v in var_list]
        self._build_extra(var_list)

    def _build_extra(self, var_list: List[Variable]) -> None:
        """Per-optimizer state outside the slots (Nadam's u_product)."""

    #: Slots stored per variable in one pass (e.g. Adam's m, v); later groups follow the whole
    #: first pass (Adam's amsgrad vhat), which is tf.keras' variable order.
    def _slot_groups(self) -> Tuple[Tuple[str, ...], ...]:
        return (tuple(self.slot_names),) if self.slot_names else ()

    @property
    def variables(self) -> List[Variable]:
        """``[iterations, averages..., m0, v0, m1, v1, ...]``: tf.keras' order, which
        checkpoints and ``.h5`` files keep."""
        out = _CallableList([self._iterations] + list(self._averages))
        for group in self._slot_groups():
            for slots in self._slots:
                out.extend(slots[self.slot_names.index(s)] for s in group)
        return out

    def _keras3_variables(self) -> List[Variable]:
        """The variables in Keras 3's order for ``.keras`` archives (the writer puts the
        learning rate second); the same as ``variables`` except where Keras 3 differs."""
        return self.variables

    def _extra_trackables(self) -> List[Tuple[str, Variable]]:
        return []

    def _trackable_children(self, for_restore: bool = False):
        lr_edge = (("_current_learning_rate", self._current_learning_rate) if self._schedule is not None
                   else ("_learning_rate", self._learning_rate))
        edges = [("_iterations", self._iterations), lr_edge,
                 ("_variables", TrackableList(self.variables))] + self._extra_trackables()
        if for_restore:  # names of tf.keras' legacy optimizers, matched but never written
            edges.append(("iter", self._iterations))
            if self._schedule is None:
                edges += [("learning_rate", self._learning_rate), ("lr", self._learning_rate)]
        return edges

    def get_slot(self, var: Variable, slot_name: str) -> Variable:
        names = tuple(self.slot_names)
        if slot_name not in names:
            slot_name = self._legacy_slots.get(slot_name, slot_name)
        i = self._index.get(id(var))
        if i is None or slot_name not in names:
            raise ValueError(f"{self.name} has no slot {slot_name!r} for variable {var.name}")
        return self._slots[i][self.slot_names.index(slot_name)]

    def set_weights(self, weights) -> None:
        """Assign ``variables`` from a list of arrays in the same order."""
        if not self.built:
            raise ValueError("You are calling `set_weights()` on an optimizer that has not yet "
                             "been built. Please call `optimizer.build(trainable_variables)` to "
                             "create the optimizer weights before calling `set_weights()`.")
        live = self.variables
        weights = list(weights)
        if len(weights) != len(live):
            raise ValueError(f"Expected {len(live)} optimizer weights, got {len(weights)}")
        for var, w in zip(live, weights):
            if np.shape(w) != var.shape:
                raise ValueError(f"Optimizer variable {var.name} has shape {var.shape} not "
                                 f"compatible with provided weight shape {np.shape(w)}.")
        for var, w in zip(live, weights):
            var.assign(np.asarray(w).astype(var.dtype, copy=False))

    def get_weights(self) -> List[np.ndarray]:
        return [np.array(v.value, copy=True) for v in self.variables]

    # --- weight decay -----------------------------------------------------------------------
    def exclude_from_weight_decay(self, var_list=None, var_names=None) -> None:
        """Leave some variables out of weight decay: the given ones, and any whose name matches
        one of the ``var_names`` patterns (``re.search``). Only before the optimizer is built."""
        if self.built:
            raise ValueError("`exclude_from_weight_decay()` can only be configued before the "
                             "optimizer is built.")
        self._exclude_ids = [id(v) for v in var_list] if var_list else []
        self._exclude_names = list(var_names or [])

    def _use_weight_decay(self, var: Variable) -> bool:
        if id(var) in self._exclude_ids:
            return False
        return not any(re.search(n, var.name) for n in self._exclude_names)

    # --- updates ----------------------------------------------------------------------------
    def _buffer(self, i: int, grad: np.ndarray) -> np.ndarray:
        buf = self._scratch.get(i)
        if buf is None or buf.shape != grad.shape:
            buf = self._scratch[i] = np.empty(grad.shape, np.float32)
        return buf

    def _clip(self, grads: List[np.ndarray], idx: List[int]) -> List[np.ndarray]:
        """tf_keras' order of precedence: clipnorm, else global_clipnorm, else clipvalue."""
        if self.clipnorm and self.clipnorm > 0:
            c = _f32(self.clipnorm)
            out = []
            for g, i in zip(grads, idx):
                l2 = _f32(ops.sum_squares(g))
                norm = np.sqrt(l2) if l2 > 0 else l2
                buf = self._buffer(i, g)
                ops.scale_div(g, buf, c, max(norm, c))
                out.append(buf)
            return out
        if self.global_clipnorm and self.global_clipnorm > 0:
            c = _f32(self.global_clipnorm)
            total = _f32(sum(float(_f32(ops.sum_squares(g))) for g in grads))
            norm = np.sqrt(total)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = c * min(_f32(1.0) / norm, _f32(1.0) / c) + (norm - norm)
            out = []
            for g, i in zip(grads, idx):
                buf = self._buffer(i, g)
                ops.scale_div(g, buf, scale, 1.0)
                out.append(buf)
            return out
        if self.clipvalue and self.clipvalue > 0:
            c = _f32(self.clipvalue)
            out = []
            for g, i in zip(grads, idx):
                buf = self._buffer(i, g)
                ops.clip_values(g, buf, -c, c)
                out.append(buf)
            return out
        return grads

    def apply_gradients(self, grads_and_vars: Iterable[Tuple[np.ndarray, Variable]], name=None,
                        skip_gradients_aggregation: bool = False, **kwargs):
        """One step on ``[(gradient, variable), ...]``; pairs whose gradient is None are skipped.
        Returns ``iterations``."""
        kwargs.pop("experimental_aggregate_gradients", None)
        if kwargs:
            raise TypeError(f"apply_gradients: unexpected keyword argument(s) {sorted(kwargs)}")
        lr = self._current_lr()
        pairs = list(grads_and_vars)
        if not pairs:
            return self._iterations
        for p in pairs:
            if not isinstance(p, (tuple, list)) or len(p) != 2:
                raise TypeError(f"apply_gradients: expected (gradient, variable) pairs, got {p!r:.100}")
        variables = [v for _, v in pairs]
        if not self.built or any(id(v) not in self._index for v in variables):
            self.build(variables)
        pairs = [(g, v) for g, v in pairs if g is not None]
        if not pairs:
            raise ValueError(f"No gradients provided for any variable: "
                             f"{[v.name for v in variables]}.")
        grads, idx = [], []
        for grad, var in pairs:
            grad = np.asarray(grad)
            if grad.shape != var.shape or grad.dtype != np.float32 or not grad.flags.c_contiguous:
                if grad.shape != var.shape:
                    raise ValueError(f"Gradient for {var.name}: expected shape {var.shape}, "
                                     f"got {grad.shape}")
                grad = np.ascontiguousarray(grad, np.float32)
            grads.append(grad)
            idx.append(self._index[id(var)])
        grads = self._clip(grads, idx)
        step = int(self._iterations.value) + 1
        self._begin_step(step)
        wd = self.weight_decay
        for grad, (_, var), i in zip(grads, pairs, idx):
            if wd and self._use_weight_decay(var):
                ops.decay_weights(var.value, wd, lr)
            self._update(var.value, grad, [s.value for s in self._slots[i]], step, lr)
        if self.use_ema:
            m = float(self.ema_momentum)
            freq = self.ema_overwrite_frequency
            overwrite = bool(freq) and step % int(freq) == 0
            for _, var in pairs:
                ops.ema_update(self._averages[self._index[id(var)]].value, var.value, m, 1 - m,
                               overwrite)
        self._iterations.value[...] = step
        return self._iterations

    def _begin_step(self, step: int) -> None:
        """Once per step, before the per-variable updates (Nadam advances its u_product)."""

    def _update(self, var: np.ndarray, grad: np.ndarray, slots: List[np.ndarray], step: int,
                lr: np.float32) -> None:
        raise NotImplementedError

    def minimize(self, loss, var_list, tape=None):
        raise NotImplementedError("minimize needs automatic differentiation; compute the gradients "
                                  "and call apply_gradients([(grad, var), ...])")

    def finalize_variable_values(self, var_list: Sequence[Variable]) -> None:
        """With ``use_ema``, overwrite the variables with their moving averages (``fit`` does this
        after its last epoch)."""
        if not self.use_ema:
            return
        for var in var_list:
            i = self._index.get(id(var))
            if i is not None:
                var.value[...] = self._averages[i].value

    def _plain(self) -> bool:
        """No schedule, clipping, weight decay or EMA: the update rule alone."""
        return (self._schedule is None and not self.use_ema and not self.weight_decay
                and not self.clipnorm and not self.global_clipnorm and not self.clipvalue)

    def _fused_config(self) -> Optional[Dict[str, Any]]:
        """The native trainer's optimizer config (``kernels/trainer.h``), or None when this
        optimizer, as configured, has no whole-epoch native loop (the Trainer then runs the
        layer-by-layer path, whose updates are the same kernels, step by step)."""
        return None

    # --- config -----------------------------------------------------------------------------
    def _lr_config(self):
        if self._schedule is not None:
            return schedules_mod.serialize(self._schedule)
        return _short(self._learning_rate.value)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "jit_compile": self.jit_compile, "is_legacy_optimizer": False,
                "learning_rate": self._lr_config()}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects=None) -> "Optimizer":
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules_mod.deserialize(config["learning_rate"],
                                                                custom_objects=custom_objects)
        return cls(**config)
