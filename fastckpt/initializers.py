"""Weight initializers, named as in Keras (``glorot_uniform``, ``he_normal``, ``zeros``, ...).

Each is called as ``init(shape, dtype)`` and returns a NumPy array. A random initializer given a
``seed`` returns the same values on every call and in every run; without one it draws a fresh
seed from fastckpt's global seed stream (``keras.utils.set_random_seed`` makes that
reproducible too). Distributions and scales are tf.keras': ``truncated_normal`` redraws values
beyond two standard deviations, and ``VarianceScaling`` divides its standard deviation by
0.8796..., the standard deviation of a unit normal truncated there.

Example:
    >>> a = GlorotUniform(seed=1)((3, 2))
    >>> bool((a == GlorotUniform(seed=1)((3, 2))).all())
    True
    >>> Identity(gain=2.0)((2, 3)).tolist()
    [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from fastckpt import backend
from fastckpt.checks import is_int, is_real
from fastckpt.errors import UnknownObjectError

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "Identity", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "VarianceScaling", "Orthogonal", "GlorotUniform", "GlorotNormal",
           "HeUniform", "HeNormal", "LecunUniform", "LecunNormal", "get", "serialize",
           "deserialize", "zeros", "ones", "constant", "identity", "random_normal",
           "random_uniform", "truncated_normal", "variance_scaling", "orthogonal", "glorot_uniform",
           "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal"]

#: Standard deviation of a unit normal truncated to [-2, 2] (tf.keras' constant).
TRUNCATED_STDDEV = 0.87962566103423978


def _dtype(dtype, what: str, allow_int: bool = False) -> np.dtype:
    dt = np.dtype(dtype or backend.floatx())
    if dt.kind != "f" and not (allow_int and dt.kind in "iub"):
        raise ValueError(f"{what}: expected a floating point dtype, got {dt.name}")
    return dt


def _shape(shape) -> tuple:
    if is_int(shape):
        shape = (shape,)
    try:
        out = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"Expected a shape (a tuple of integers), got {shape!r}") from None
    if any(d < 0 for d in out):
        raise ValueError(f"Expected a shape of non-negative integers, got {shape!r}")
    return out


def _number(value, name: str, where: str) -> float:
    if not is_real(value) or value != value:
        raise TypeError(f"{where}: expected {name} to be a number, got {value!r:.60}")
    return value


def _seed(seed, where: str):
    if seed is None or (is_int(seed) and 0 <= seed < 2**64):
        return seed
    if is_int(seed) and -2**63 <= seed < 0:
        return seed
    raise TypeError(f"{where}: expected seed to be None or an integer, got {seed!r:.60}")


def _fans(shape) -> tuple:
    """(fan_in, fan_out) as Keras computes them: a kernel's last two axes times the receptive
    field (the product of the others)."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


# Elements drawn per chunk: the float64 draws exist one chunk at a time, never for a whole
# weight (a 784x512 kernel drawn at once took a 3.2 MB transient, the peak of model building).
_CHUNK = 1 << 15


def _fill(draw, shape, dt: np.dtype, mul: float = 1.0, add: float = 0.0) -> np.ndarray:
    """An array of ``dt`` holding ``draw(size=k) * mul + add`` (computed in float64, then cast),
    drawn chunk after chunk in order: the very values of one draw of the whole shape."""
    out = np.empty(shape, dt)
    flat = out.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        x = draw(size=min(_CHUNK, flat.size - i))
        if mul != 1.0:
            x *= mul
        if add != 0.0:
            x += add
        flat[i:i + x.size] = x
    return out


def _truncated_normal(rng: np.random.Generator, shape, dt: np.dtype, mul: float = 1.0,
                      add: float = 0.0) -> np.ndarray:
    """Unit normal draws, each one beyond 2 redrawn until none is left (in the order of one draw
    of the whole shape, then of each redraw), times ``mul`` plus ``add``, cast to ``dt``."""
    out = np.empty(shape, dt)
    flat = out.reshape(-1)
    bad = np.empty(flat.size, bool)
    for i in range(0, flat.size, _CHUNK):
        x = rng.standard_normal(size=min(_CHUNK, flat.size - i))
        np.greater(np.abs(x), 2.0, out=bad[i:i + x.size])
        flat[i:i + x.size] = x * mul + add if add != 0.0 else x * mul
    idx = np.flatnonzero(bad)
    while idx.size:
        x = rng.standard_normal(size=idx.size)
        ok = np.abs(x) <= 2.0
        flat[idx[ok]] = x[ok] * mul + add if add != 0.0 else x[ok] * mul
        idx = idx[~ok]
    return out


class Initializer:
    """Base class: ``__call__(shape, dtype=None) -> array``, ``get_config``, ``from_config``."""

    def __call__(self, shape, dtype=None, **kwargs) -> np.ndarray:
        raise NotImplementedError("Initializer subclasses must implement __call__(shape, dtype)")

    def get_config(self) -> Dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Initializer":
        config = dict(config)
        config.pop("dtype", None)
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """All zeros."""

    def __call__(self, shape, dtype=None, **kwargs):
        return np.zeros(_shape(shape), _dtype(dtype, "Zeros", allow_int=True))


class Ones(Initializer):
    """All ones."""

    def __call__(self, shape, dtype=None, **kwargs):
        return np.ones(_shape(shape), _dtype(dtype, "Ones", allow_int=True))


class Constant(Initializer):
    """Every element ``value`` (a number, or an array-like with as many elements as the shape,
    laid out in it)."""

    def __init__(self, value=0):
        if isinstance(value, dict):  # Keras 3 writes arrays as {"class_name": "__numpy__", ...}
            inner = value.get("config") if value.get("class_name") == "__numpy__" else None
            if not isinstance(inner, dict) or "value" not in inner:
                raise TypeError(f"Constant: unsupported value {value!r:.100}")
            value = inner["value"]
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Constant: expected a number or an array of numbers, got {value!r:.100}")
        self.value = value.tolist() if isinstance(value, np.ndarray) else value

    def __call__(self, shape, dtype=None, **kwargs):
        shape = _shape(shape)
        arr = np.asarray(self.value, _dtype(dtype, "Constant", allow_int=True))
        if arr.size == 1:
            return np.full(shape, arr.reshape(()), arr.dtype)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"Constant: {arr.size} values do not fill a tensor of shape {shape}")
        return arr.reshape(shape).copy()

    def get_config(self):
        return {"value": self.value}


class Identity(Initializer):
    """``gain`` times the identity matrix (2-D shapes only; a non-square one gets the leading
    diagonal)."""

    def __init__(self, gain: float = 1.0):
        self.gain = _number(gain, "gain", "Identity")

    def __call__(self, shape, dtype=None, **kwargs):
        shape = _shape(shape)
        dt = _dtype(dtype, "Identity")
        if len(shape) != 2:
            raise ValueError(f"Identity matrix initializer can only be used for 2D matrices. "
                             f"Received: shape={shape} of rank {len(shape)}.")
        return (self.gain * np.eye(*shape)).astype(dt)

    def get_config(self):
        return {"gain": self.gain}


class _Random(Initializer):
    """A random initializer: ``seed`` fixes its values; ``None`` draws from the global stream."""

    def __init__(self, seed=None):
        self.seed = _seed(seed, type(self).__name__)

    def _rng(self) -> np.random.Generator:
        seed = self.seed if self.seed is not None else backend.next_seed()
        return np.random.default_rng(seed % 2**64)

    def get_config(self) -> Dict[str, Any]:
        return {"seed": self.seed}


# The old private name, kept for code that subclassed it.
_Seeded = _Random


class RandomNormal(_Random):
    """Normal draws with ``mean`` and ``stddev``."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None):
        super().__init__(seed)
        self.mean = _number(mean, "mean", "RandomNormal")
        self.stddev = _number(stddev, "stddev", "RandomNormal")

    def __call__(self, shape, dtype=None, **kwargs):
        dt = _dtype(dtype, "RandomNormal")
        return _fill(self._rng().standard_normal, _shape(shape), dt, self.stddev, self.mean)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(_Random):
    """Normal draws with ``mean`` and ``stddev``; values beyond two ``stddev`` are redrawn."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed=None):
        super().__init__(seed)
        self.mean = _number(mean, "mean", "TruncatedNormal")
        self.stddev = _number(stddev, "stddev", "TruncatedNormal")

    def __call__(self, shape, dtype=None, **kwargs):
        dt = _dtype(dtype, "TruncatedNormal")
        return _truncated_normal(self._rng(), _shape(shape), dt, self.stddev, self.mean)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(_Random):
    """Uniform draws in ``[minval, maxval)``."""

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed=None):
        super().__init__(seed)
        self.minval = _number(minval, "minval", "RandomUniform")
        self.maxval = _number(maxval, "maxval", "RandomUniform")

    def __call__(self, shape, dtype=None, **kwargs):
        dt = _dtype(dtype, "RandomUniform", allow_int=True)
        rng, shape = self._rng(), _shape(shape)
        if dt.kind in "iu":
            return rng.integers(int(self.minval), int(self.maxval), size=shape).astype(dt)
        return _fill(rng.random, shape, dt, self.maxval - self.minval, self.minval)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")


class VarianceScaling(_Random):
    """Draws scaled to the weight's fans: variance ``scale / n`` with ``n`` the fan_in, fan_out
    or their mean (``mode``), from a ``'truncated_normal'`` (``'normal'`` means the same),
    ``'untruncated_normal'`` or ``'uniform'`` distribution."""

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "truncated_normal", seed=None, **kwargs):
        for k in ("input_axes", "output_axes"):  # Keras 3: only their default (None) is supported
            if kwargs.pop(k, None) is not None:
                raise NotImplementedError(f"{type(self).__name__}: {k} is not supported")
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kwargs)}")
        super().__init__(seed)
        _number(scale, "scale", type(self).__name__)
        if not scale > 0.0:
            raise ValueError(f"`scale` must be positive float. Received: scale={scale}.")
        if mode not in _MODES:
            raise ValueError(f"Invalid `mode` argument: {mode!r}. Please use one of {list(_MODES)}.")
        if not isinstance(distribution, str):
            raise TypeError(f"Invalid `distribution` argument: {distribution!r:.60}")
        distribution = distribution.lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"Invalid `distribution` argument: {distribution!r}. Allowed "
                             f"distributions: {list(_DISTRIBUTIONS)}.")
        self.scale, self.mode, self.distribution = scale, mode, distribution

    def __call__(self, shape, dtype=None, **kwargs):
        dt = _dtype(dtype, type(self).__name__)
        shape = _shape(shape)
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            return _truncated_normal(rng, shape, dt, math.sqrt(scale) / TRUNCATED_STDDEV)
        if self.distribution == "untruncated_normal":
            return _fill(rng.standard_normal, shape, dt, math.sqrt(scale))
        limit = math.sqrt(3.0 * scale)
        return _fill(rng.random, shape, dt, 2.0 * limit, -limit)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                "seed": self.seed}


class _Preset(VarianceScaling):
    """A ``VarianceScaling`` with fixed settings: its config is just the seed."""

    _settings: tuple = ()

    def __init__(self, seed=None, **kwargs):
        scale, mode, distribution = self._settings
        super().__init__(scale=scale, mode=mode, distribution=distribution, seed=seed, **kwargs)

    def get_config(self):
        return {"seed": self.seed}


class GlorotUniform(_Preset):
    """Uniform in ``±sqrt(6 / (fan_in + fan_out))`` (Keras' default kernel initializer)."""
    _settings = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Truncated normal, variance ``2 / (fan_in + fan_out)``."""
    _settings = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    """Uniform in ``±sqrt(6 / fan_in)``."""
    _settings = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    """Truncated normal, variance ``2 / fan_in``."""
    _settings = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """Uniform in ``±sqrt(3 / fan_in)``."""
    _settings = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """Truncated normal, variance ``1 / fan_in``."""
    _settings = (1.0, "fan_in", "truncated_normal")


class Orthogonal(_Random):
    """An orthogonal matrix (of the weight flattened to ``(prod(shape[:-1]), shape[-1])``) times
    ``gain``: the Q of a QR decomposition of normal draws, signs fixed by R's diagonal."""

    def __init__(self, gain: float = 1.0, seed=None):
        super().__init__(seed)
        self.gain = _number(gain, "gain", "Orthogonal")

    def __call__(self, shape, dtype=None, **kwargs):
        shape = _shape(shape)
        dt = _dtype(dtype, "Orthogonal")
        if len(shape) < 2:
            raise ValueError(f"The tensor to initialize must be at least two-dimensional. "
                             f"Received: shape={shape} of rank {len(shape)}.")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = self._rng().standard_normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(dt)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_CLASSES = [Zeros, Ones, Constant, Identity, RandomNormal, RandomUniform, TruncatedNormal,
            VarianceScaling, Orthogonal, GlorotUniform, GlorotNormal, HeUniform, HeNormal,
            LecunUniform, LecunNormal]
_BY_NAME: Dict[str, type] = {}
for _cls in _CLASSES:
    _BY_NAME[_cls.__name__] = _cls
    _BY_NAME[backend.to_snake_case(_cls.__name__)] = _cls
    _BY_NAME[_cls.__name__ + "V2"] = _cls  # tf.keras' internal aliases, seen in old configs
# Aliases tf.keras and Keras 3 accept.
_BY_NAME.update(normal=RandomNormal, uniform=RandomUniform, one=Ones, zero=Zeros,
                IdentityInitializer=Identity, OrthogonalInitializer=Orthogonal,
                glorot_uniformV2=GlorotUniform, glorot_normalV2=GlorotNormal,
                he_uniformV2=HeUniform, he_normalV2=HeNormal, lecun_uniformV2=LecunUniform,
                lecun_normalV2=LecunNormal)
del _cls

# Keras' lowercase function-style aliases.
zeros, ones, constant, identity = Zeros, Ones, Constant, Identity
random_normal, random_uniform, truncated_normal = RandomNormal, RandomUniform, TruncatedNormal
variance_scaling, orthogonal = VarianceScaling, Orthogonal
glorot_uniform, glorot_normal, he_uniform, he_normal = GlorotUniform, GlorotNormal, HeUniform, HeNormal
lecun_uniform, lecun_normal = LecunUniform, LecunNormal


def _lookup(name: str, custom_objects: Optional[Dict[str, Any]]):
    for n in (name, name.split(">")[-1]):
        if custom_objects and n in custom_objects:
            return custom_objects[n]
    return _BY_NAME.get(name) or _BY_NAME.get(name.split(">")[-1])


def _names() -> list:
    return sorted(n for n in _BY_NAME if not n.endswith("V2"))


def deserialize(config, custom_objects: Optional[Dict[str, Any]] = None) -> Initializer:
    """An initializer from a name or a tf.keras / Keras 3 config dict. Nothing is imported."""
    if isinstance(config, str):
        config = {"class_name": config, "config": {}}
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Could not interpret initializer identifier: {config!r:.200}")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise TypeError(f"Initializer config must be a dict, got {inner!r:.120}")
    registered = config.get("registered_name")
    cls = _lookup(registered, custom_objects) if isinstance(registered, str) else None
    cls = cls or _lookup(config["class_name"], custom_objects)
    if cls is None:
        raise UnknownObjectError(f"Unknown initializer {config['class_name']!r}; expected one of "
                                 f"{_names()}")
    return cls.from_config(dict(inner))


def get(identifier: Union[str, dict, Initializer, Callable, None]) -> Optional[Initializer]:
    """``None`` (returned as is), a name (``'he_normal'``), a config dict, an initializer class or
    instance, or any callable ``(shape, dtype) -> array``."""
    if identifier is None:
        return None
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if callable(identifier):
        return identifier
    raise TypeError(f"Expected an initializer name, config dict or Initializer, got {identifier!r}")


def serialize(init) -> Optional[Dict[str, Any]]:
    """``{'class_name': ..., 'config': ...}`` (tf.keras' spelling), or None."""
    if init is None:
        return None
    name = getattr(type(init), "_registered_name", type(init).__name__)
    get_config = getattr(init, "get_config", None)
    return {"class_name": name, "config": get_config() if get_config else {}}
