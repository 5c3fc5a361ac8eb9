"""``keras.callbacks``: re-exports of ``fastckpt.callbacks``."""
from fastckpt.callbacks import *  # noqa: F401,F403
from fastckpt.callbacks import __all__  # noqa: F401
