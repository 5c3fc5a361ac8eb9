"""Layer configs to and from JSON-able dicts, through a registry of known classes only.

Loading never imports a module or evaluates anything named in a file: a ``class_name`` resolves
to a built-in class, a class registered with ``register_keras_serializable``, or one passed in
``custom_objects`` / ``custom_object_scope`` — otherwise it is an error naming the class.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

from fastckpt.errors import UnknownObjectError
from fastckpt import layers as layers_mod
from fastckpt.saving.model_registry import model_class

__all__ = ["BUILTIN_LAYERS", "register_keras_serializable", "custom_object_scope", "get_registered_object",
           "get_registered_name", "serialize_layer", "deserialize_layer"]

_GLOBAL_REGISTRY: Dict[str, type] = {}
_scope = threading.local()


# The one table of built-in layer classes a config may name: every concrete layer class that
# ``fastckpt.layers`` exports (the ``Layer`` base is for subclassing, not for configs).
BUILTIN_LAYERS: Dict[str, type] = {
    name: obj for name, obj in vars(layers_mod).items()
    if name in layers_mod.__all__ and isinstance(obj, type) and issubclass(obj, layers_mod.Layer)
    and obj is not layers_mod.Layer}


def register_keras_serializable(package: str = "Custom", name: Optional[str] = None) -> Callable:
    """Class decorator: make a custom layer loadable by name (``"package>Name"``)."""

    def decorator(cls):
        key = f"{package}>{name or cls.__name__}"
        if key in _GLOBAL_REGISTRY and _GLOBAL_REGISTRY[key] is not cls:
            raise ValueError(f"{key} has already been registered to {_GLOBAL_REGISTRY[key]}")
        _GLOBAL_REGISTRY[key] = cls
        cls._registered_name = key
        return cls

    return decorator


def get_registered_name(cls) -> str:
    return getattr(cls, "_registered_name", cls.__name__)


@contextmanager
def custom_object_scope(*scopes: Dict[str, Any]) -> Iterator[None]:
    """``with custom_object_scope({'MyLayer': MyLayer}): load_model(...)``."""
    stack = getattr(_scope, "stack", [])
    _scope.stack = stack + [dict(s) for s in scopes if s]
    try:
        yield
    finally:
        _scope.stack = stack


def get_registered_object(name: str, custom_objects: Optional[Dict[str, Any]] = None,
                          module_objects: Optional[Dict[str, Any]] = None):
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    for scope in reversed(getattr(_scope, "stack", [])):
        if name in scope:
            return scope[name]
    if name in _GLOBAL_REGISTRY:
        return _GLOBAL_REGISTRY[name]
    if module_objects and name in module_objects:
        return module_objects[name]
    return None


def serialize_layer(layer) -> Dict[str, Any]:
    return {"class_name": get_registered_name(type(layer)), "config": layer.get_config()}


def deserialize_layer(config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None):
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Expected a layer config dict with 'class_name' and 'config', got {config!r:.200}")
    name = config["class_name"]
    if not isinstance(name, str):
        raise ValueError(f"Expected a string class_name, got {name!r:.100}")
    cls = get_registered_object(name, custom_objects, BUILTIN_LAYERS)
    if cls is None and name in ("Sequential", "Functional", "Model"):
        inner = config.get("config", {})
        return model_class("Sequential" if name == "Sequential" else "Functional").from_config(
            dict(inner), custom_objects=custom_objects)
    if cls is None:
        # A Keras-3 registered name like "package>Name" may be passed by its short name.
        cls = get_registered_object(name.split(">")[-1], custom_objects, BUILTIN_LAYERS)
    if cls is None:
        raise UnknownObjectError(
            f"Unknown layer: {name!r}. Please ensure you are using a keras.utils.custom_object_scope "
            f"and that this object is included in the scope, pass it as "
            f"custom_objects={{{name!r}: {name}}}, or decorate the class with "
            f"@keras.utils.register_keras_serializable().")
    inner = config.get("config", {})
    if not isinstance(inner, dict):
        raise ValueError(f"Expected the config of {name!r} to be a dict, got {type(inner).__name__}")
    return cls.from_config(dict(inner))
