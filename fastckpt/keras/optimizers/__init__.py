"""``keras.optimizers``: re-exports of ``fastckpt.optimizers``."""
from fastckpt.optimizers import *  # noqa: F401,F403
from fastckpt.optimizers import __all__  # noqa: F401
from fastckpt.keras.optimizers import schedules  # noqa: F401,E402
