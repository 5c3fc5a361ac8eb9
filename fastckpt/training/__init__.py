"""The training loop: ``fit``/``evaluate``/``predict`` over a model's layers (``Trainer``), input
checks and batching (``data``), and the fused native path (``fused``).

``Model.fit``/``evaluate``/``predict`` delegate here. This package sits below ``models`` and above
``callbacks`` (docs/architecture.md): it never imports a model class, it is handed the model.
"""

from fastckpt.training.trainer import Trainer

__all__ = ["Trainer"]
