"""Models: ``Sequential``, the ``Model`` base, and whole-model ``save_model``/``load_model``."""

from fastckpt.models.model import Model
from fastckpt.models.sequential import Sequential
from fastckpt.saving.api import load_model, save_model

__all__ = ["Model", "Sequential", "load_model", "save_model"]
