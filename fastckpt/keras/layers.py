"""``keras.layers``: re-exports of ``fastckpt.layers``."""
from fastckpt.layers import *  # noqa: F401,F403
from fastckpt.layers import __all__  # noqa: F401
