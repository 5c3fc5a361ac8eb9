"""Models: ``Sequential`` and the ``Model`` base."""

from fastckpt.models.model import Model
from fastckpt.models.sequential import Sequential

__all__ = ["Model", "Sequential"]
