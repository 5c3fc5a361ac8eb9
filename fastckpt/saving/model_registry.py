"""The model classes ``saving`` knows, filled by ``fastckpt.models`` when it is imported.

``saving`` sits below ``models`` in the package's layers (docs/architecture.md), so it never imports a
model class: it asks this registry. ``fastckpt.models.sequential`` registers ``Sequential``.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["register_model_class", "model_class"]

_MODEL_CLASSES: Dict[str, type] = {}


def register_model_class(name: str, cls: type) -> type:
    """Make ``cls`` the model class ``saving`` builds and recognises under ``name``."""
    known = _MODEL_CLASSES.get(name)
    if known is not None and known is not cls:
        raise ValueError(f"model class {name!r} is already registered to {known}")
    _MODEL_CLASSES[name] = cls
    return cls


def model_class(name: str) -> type:
    """The class registered under ``name`` (``fastckpt.models`` registers its own on import)."""
    try:
        return _MODEL_CLASSES[name]
    except KeyError:
        raise LookupError(f"no model class {name!r} is registered; import fastckpt.models first "
                          f"(registered: {sorted(_MODEL_CLASSES)})") from None
