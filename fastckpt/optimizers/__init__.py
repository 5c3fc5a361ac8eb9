"""Optimizers: ``Adam``, ``SGD``, and ``get`` for their string names and configs."""

from __future__ import annotations

from typing import Any, Union

from fastckpt.optimizers.adam import Adam
from fastckpt.optimizers.optimizer import Optimizer
from fastckpt.optimizers.sgd import SGD

__all__ = ["Optimizer", "Adam", "SGD", "get", "serialize", "deserialize"]

_BY_NAME = {"adam": Adam, "sgd": SGD}


def get(identifier: Union[str, dict, Optimizer]) -> Optimizer:
    """``'adam'`` -> ``Adam()``; a config dict -> the optimizer; an instance is returned as is."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"Unknown optimizer {identifier!r}; expected one of {sorted(_BY_NAME)}"
                             f" or an Optimizer instance")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"Expected an optimizer name, config dict or Optimizer, got {identifier!r}")


def serialize(optimizer: Optimizer) -> dict:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: dict, custom_objects: Any = None) -> Optimizer:
    name = config.get("class_name")
    cls = _BY_NAME.get(str(name).lower())
    if cls is None and custom_objects:
        cls = custom_objects.get(name)
    if cls is None:
        raise ValueError(f"Unknown optimizer class {name!r}; expected one of "
                         f"{sorted(c.__name__ for c in _BY_NAME.values())}")
    return cls.from_config(config.get("config", {}))
