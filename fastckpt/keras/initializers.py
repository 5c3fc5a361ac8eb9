"""``keras.initializers``: re-exports of ``fastckpt.initializers``."""
from fastckpt.initializers import *  # noqa: F401,F403
from fastckpt.initializers import __all__  # noqa: F401
