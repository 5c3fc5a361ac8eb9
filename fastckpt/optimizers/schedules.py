"""Learning-rate schedules (``keras.optimizers.schedules``): a step in, a float32 rate out.

Each schedule computes in float32, operation for operation as tf_keras 2.21 does, so an optimizer
driven by one follows tf_keras' trajectory. An optimizer given a schedule evaluates it at its
``iterations`` before every update.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from fastckpt.checks import is_int, is_real

__all__ = ["LearningRateSchedule", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay",
           "PolynomialDecay", "CosineDecay", "CosineDecayRestarts", "serialize", "deserialize",
           "get"]

_f32 = np.float32


def _step(step) -> np.float32:
    value = np.asarray(getattr(step, "value", step))
    if value.ndim != 0 or not (np.issubdtype(value.dtype, np.integer)
                               or np.issubdtype(value.dtype, np.floating)):
        raise TypeError(f"Expected a scalar step, got {step!r}")
    return value


def _number(name: str, value, positive: bool = False) -> None:
    if not is_real(value):
        raise TypeError(f"Expected a number for {name}, got {value!r}")
    if positive and not float(value) > 0:
        raise ValueError(f"Expected {name} > 0, got {value}")


class LearningRateSchedule:
    """Base class: subclasses define ``__call__(step)`` and ``get_config()``."""

    def __call__(self, step):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  f"`__call__(self, step)`.")

    def get_config(self) -> Dict[str, Any]:
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override "
                                  f"`get_config()` in order to be serializable.")

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "LearningRateSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _RateDecay(LearningRateSchedule):
    """The arguments both step-ratio decays take. ``_progress`` is ``step / decay_steps`` in
    float32, floored when ``staircase``."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase: bool = False,
                 name: Optional[str] = None):
        _number("initial_learning_rate", initial_learning_rate)
        _number("decay_steps", decay_steps, positive=True)
        _number("decay_rate", decay_rate)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.decay_rate = decay_rate
        self.staircase = staircase
        self.name = name

    def _progress(self, step):
        p = _f32(_step(step)) / _f32(self.decay_steps)
        return np.floor(p) if self.staircase else p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class ExponentialDecay(_RateDecay):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent floored when
    ``staircase``)."""

    def __call__(self, step):
        p = self._progress(step)
        return _f32(self.initial_learning_rate) * np.power(_f32(self.decay_rate), p)


class InverseTimeDecay(_RateDecay):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (the ratio floored when
    ``staircase``)."""

    def __call__(self, step):
        p = self._progress(step)
        return _f32(self.initial_learning_rate) / (_f32(1) + _f32(self.decay_rate) * p)


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` up to and including ``boundaries[0]``, ``values[1]`` up to ``boundaries[1]``,
    ..., ``values[-1]`` after the last boundary."""

    def __init__(self, boundaries, values, name: Optional[str] = None):
        boundaries, values = list(boundaries), list(values)
        if len(boundaries) != len(values) - 1:
            raise ValueError(f"The length of boundaries should be 1 less than the length of values. "
                             f"Received: boundaries={boundaries} of length {len(boundaries)}, and "
                             f"values={values} of length {len(values)}.")
        for i, b in enumerate(boundaries):
            _number(f"boundaries[{i}]", b)
        for i, v in enumerate(values):
            _number(f"values[{i}]", v)
        self.boundaries = boundaries
        self.values = values
        self.name = name

    def __call__(self, step):
        x = _step(step)
        # Keras casts the boundaries to the step's dtype (an integer step truncates them).
        bounds = [np.asarray(b).astype(x.dtype) if np.issubdtype(x.dtype, np.integer) else
                  _f32(b) if x.dtype == np.float32 else np.asarray(b, x.dtype)
                  for b in self.boundaries]
        i = 0
        while i < len(bounds) and x > bounds[i]:
            i += 1
        value = self.values[i]
        return np.int32(value) if is_int(value) else _f32(value)

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """From ``initial_learning_rate`` to ``end_learning_rate`` in ``decay_steps`` along
    ``(1 - step / decay_steps) ** power``; ``cycle`` restarts with a longer period."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0,
                 cycle: bool = False, name: Optional[str] = None):
        _number("initial_learning_rate", initial_learning_rate)
        _number("decay_steps", decay_steps, positive=True)
        _number("end_learning_rate", end_learning_rate)
        _number("power", power)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = cycle
        self.name = name

    def __call__(self, step):
        init = _f32(self.initial_learning_rate)
        end = _f32(self.end_learning_rate)
        s = _f32(_step(step))
        steps = _f32(self.decay_steps)
        if self.cycle:
            mult = _f32(1.0) if s == 0 else np.ceil(s / _f32(self.decay_steps))
            steps = steps * mult
        else:
            s = min(s, steps)
        p = s / steps
        return (init - end) * np.power(_f32(1) - p, _f32(self.power)) + end

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power,
                "cycle": self.cycle, "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` (or, after a linear warmup of
    ``warmup_steps`` to ``warmup_target``, from that) down to ``alpha`` times it."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name: Optional[str] = None,
                 warmup_target=None, warmup_steps=0):
        _number("initial_learning_rate", initial_learning_rate)
        _number("decay_steps", decay_steps, positive=True)
        _number("alpha", alpha)
        if warmup_target is not None:
            _number("warmup_target", warmup_target)
        _number("warmup_steps", warmup_steps)
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = decay_steps
        self.alpha = alpha
        self.name = name
        self.warmup_steps = warmup_steps
        self.warmup_target = warmup_target

    def _decay(self, s, steps, start):
        frac = s / steps
        cos = _f32(0.5) * (_f32(1.0) + np.cos(_f32(math.pi) * frac))
        return start * (_f32(1 - self.alpha) * cos + _f32(self.alpha))

    def __call__(self, step):
        init = _f32(self.initial_learning_rate)
        steps = _f32(self.decay_steps)
        s = _f32(_step(step))
        if self.warmup_target is None:
            return self._decay(min(s, steps), steps, init)
        target = _f32(self.warmup_target)
        warm = _f32(self.warmup_steps)
        s = min(s, steps + warm)
        if s < warm:
            return (target - init) * (s / warm) + init
        return self._decay(s - warm, steps, target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): periods grow by ``t_mul``, peaks by ``m_mul``."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0,
                 name: Optional[str] = None):
        _number("initial_learning_rate", initial_learning_rate)
        _number("first_decay_steps", first_decay_steps, positive=True)
        for n, v in (("t_mul", t_mul), ("m_mul", m_mul), ("alpha", alpha)):
            _number(n, v)
        self.initial_learning_rate = initial_learning_rate
        self.first_decay_steps = first_decay_steps
        self._t_mul = t_mul
        self._m_mul = m_mul
        self.alpha = alpha
        self.name = name

    def __call__(self, step):
        init = _f32(self.initial_learning_rate)
        alpha = _f32(self.alpha)
        t_mul = _f32(self._t_mul)
        m_mul = _f32(self._m_mul)
        frac = _f32(_step(step)) / _f32(self.first_decay_steps)
        one = _f32(1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if t_mul == one:
                i_restart = np.floor(frac)
                frac = frac - i_restart
            else:
                i_restart = np.floor(np.log(one - frac * (one - t_mul)) / np.log(t_mul))
                sum_r = (one - t_mul ** i_restart) / (one - t_mul)
                frac = (frac - sum_r) / t_mul ** i_restart
        m_fac = m_mul ** i_restart
        cos = _f32(0.5) * m_fac * (one + np.cos(_f32(math.pi) * frac))
        return init * ((one - alpha) * cos + alpha)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "first_decay_steps": self.first_decay_steps, "t_mul": self._t_mul,
                "m_mul": self._m_mul, "alpha": self.alpha, "name": self.name}


_BY_NAME = {c.__name__: c for c in (ExponentialDecay, InverseTimeDecay, PiecewiseConstantDecay,
                                    PolynomialDecay, CosineDecay, CosineDecayRestarts)}


def serialize(learning_rate_schedule: LearningRateSchedule) -> Dict[str, Any]:
    """The schedule as tf_keras writes it inside an optimizer config."""
    if not isinstance(learning_rate_schedule, LearningRateSchedule):
        raise TypeError(f"Expected a LearningRateSchedule, got {learning_rate_schedule!r}")
    return {"module": "keras.optimizers.schedules",
            "class_name": type(learning_rate_schedule).__name__,
            "config": learning_rate_schedule.get_config(), "registered_name": None}


def deserialize(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None
                ) -> LearningRateSchedule:
    """A schedule from ``serialize``'s dict (or the legacy ``{"class_name", "config"}``)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Expected a schedule config dict with 'class_name', got {config!r:.200}")
    name = config["class_name"]
    cls = (custom_objects or {}).get(name)
    if cls is None and isinstance(config.get("registered_name"), str):
        cls = (custom_objects or {}).get(config["registered_name"])
    if cls is None:
        cls = _BY_NAME.get(str(name).split(">")[-1])
    if cls is None:
        raise ValueError(f"Unknown learning rate schedule {name!r}; expected one of "
                         f"{sorted(_BY_NAME)} or one passed in custom_objects")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"Schedule {name}: config must be a dict, got {inner!r:.120}")
    return cls.from_config(dict(inner))


def get(identifier) -> LearningRateSchedule:
    """A schedule instance as is, or one from its config dict."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise ValueError(f"Could not interpret learning rate schedule identifier: {identifier!r}")
