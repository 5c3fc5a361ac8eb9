"""Models: ``Sequential``, ``Functional`` (``Model(inputs, outputs)``), the ``Model`` base, and
whole-model ``save_model``/``load_model``."""

from fastckpt.models.model import Model
from fastckpt.models.sequential import Sequential
from fastckpt.models.functional import Functional
from fastckpt.saving.api import load_model, save_model

__all__ = ["Model", "Sequential", "Functional", "load_model", "save_model"]
