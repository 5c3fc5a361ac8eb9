"""Optimizers (tf_keras 2.21's set and update rules), ``schedules``, and ``get`` for their
string names and configs."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from fastckpt.optimizers import schedules
from fastckpt.optimizers.adadelta import Adadelta
from fastckpt.optimizers.adagrad import Adagrad
from fastckpt.optimizers.adam import Adam
from fastckpt.optimizers.adamax import Adamax
from fastckpt.optimizers.adamw import AdamW
from fastckpt.optimizers.ftrl import Ftrl
from fastckpt.optimizers.lion import Lion
from fastckpt.optimizers.nadam import Nadam
from fastckpt.optimizers.optimizer import Optimizer
from fastckpt.optimizers.rmsprop import RMSprop
from fastckpt.optimizers.sgd import SGD

__all__ = ["Optimizer", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "AdamW", "Adamax", "Nadam",
           "Ftrl", "Lion", "schedules", "get", "serialize", "deserialize"]

_CLASSES = (SGD, RMSprop, Adagrad, Adadelta, Adam, AdamW, Adamax, Nadam, Ftrl, Lion)
#: Lower-case names (as ``compile('rmsprop')`` spells them) -> class.
_BY_NAME: Dict[str, type] = {c.__name__.lower(): c for c in _CLASSES}


def _lookup(name: str) -> Optional[type]:
    key = str(name).split(">")[-1].lower()
    if key.startswith("experimental") and key[len("experimental"):] in _BY_NAME:
        key = key[len("experimental"):]  # tf_keras' "experimentaladam" aliases
    return _BY_NAME.get(key)


def get(identifier: Union[str, dict, Optimizer]) -> Optimizer:
    """``'adam'`` -> ``Adam()``; a config dict -> the optimizer; an instance is returned as is."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _lookup(identifier)
        if cls is None:
            raise ValueError(f"Unknown optimizer {identifier!r}; expected one of {sorted(_BY_NAME)}"
                             f" or an Optimizer instance")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"Expected an optimizer name, config dict or Optimizer, got {identifier!r}")


def serialize(optimizer: Optimizer) -> Dict[str, Any]:
    """``{"module", "class_name", "config", "registered_name"}`` as tf_keras writes it."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"Expected an Optimizer, got {optimizer!r}")
    return {"module": "keras.optimizers", "class_name": type(optimizer).__name__,
            "config": optimizer.get_config(), "registered_name": None}


def deserialize(config: Dict[str, Any], custom_objects: Any = None) -> Optimizer:
    if not isinstance(config, dict):
        raise TypeError(f"Expected an optimizer config dict, got {config!r:.200}")
    name = config.get("class_name")
    cls = None
    if custom_objects:
        cls = custom_objects.get(name) or custom_objects.get(config.get("registered_name"))
    if cls is None:
        cls = _lookup(name)
    if cls is None:
        raise ValueError(f"Unknown optimizer class {name!r}; expected one of "
                         f"{sorted(c.__name__ for c in _CLASSES)}")
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(f"Optimizer {name}: config must be a dict, got {inner!r:.120}")
    return cls.from_config(inner, custom_objects=custom_objects)
