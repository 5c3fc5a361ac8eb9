"""``keras.optimizers.schedules``: re-exports of ``fastckpt.optimizers.schedules``."""
from fastckpt.optimizers.schedules import *  # noqa: F401,F403
from fastckpt.optimizers.schedules import __all__  # noqa: F401
