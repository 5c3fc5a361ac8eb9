"""Weight initializers, named as in Keras (``glorot_uniform``, ``zeros``, ...)."""

from __future__ import annotations

import math
from typing import Callable, Union

import numpy as np

from fastckpt import backend

__all__ = ["Initializer", "GlorotUniform", "HeNormal", "RandomNormal", "Zeros", "Ones", "get"]


class Initializer:
    def __call__(self, shape, dtype="float32") -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Initializer":
        return cls(**config)


def _fans(shape) -> tuple:
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


class _Seeded(Initializer):
    def __init__(self, seed=None):
        self.seed = seed

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed if self.seed is not None else backend.next_seed())

    def get_config(self) -> dict:
        return {"seed": self.seed}


class GlorotUniform(_Seeded):
    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = _fans(shape)
        limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
        return self._rng().uniform(-limit, limit, size=shape).astype(dtype)


class HeNormal(_Seeded):
    def __call__(self, shape, dtype="float32"):
        fan_in, _ = _fans(shape)
        std = math.sqrt(2.0 / max(1.0, fan_in)) / 0.87962566103423978  # truncated-normal correction
        x = self._rng().standard_normal(size=shape)
        x = np.clip(x, -2.0, 2.0)
        return (x * std).astype(dtype)


class RandomNormal(_Seeded):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, dtype="float32"):
        return self._rng().normal(self.mean, self.stddev, size=shape).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class Zeros(Initializer):
    def __call__(self, shape, dtype="float32"):
        return np.zeros(shape, dtype)


class Ones(Initializer):
    def __call__(self, shape, dtype="float32"):
        return np.ones(shape, dtype)


_BY_NAME = {
    "glorot_uniform": GlorotUniform, "GlorotUniform": GlorotUniform,
    "he_normal": HeNormal, "HeNormal": HeNormal,
    "random_normal": RandomNormal, "RandomNormal": RandomNormal,
    "zeros": Zeros, "Zeros": Zeros, "ones": Ones, "Ones": Ones,
}


def get(identifier: Union[str, dict, Initializer, Callable, None]) -> Initializer:
    if identifier is None:
        return Zeros()
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"Unknown initializer {identifier!r}; expected one of {sorted(_BY_NAME)}")
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict):
        cls = _BY_NAME.get(identifier.get("class_name"))
        if cls is None:
            raise ValueError(f"Unknown initializer class {identifier.get('class_name')!r}")
        return cls.from_config(identifier.get("config", {}))
    raise TypeError(f"Expected an initializer name, config dict or Initializer, got {identifier!r}")


def serialize(init: Initializer) -> dict:
    return {"class_name": type(init).__name__, "config": init.get_config()}
