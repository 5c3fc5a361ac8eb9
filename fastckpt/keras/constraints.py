"""``keras.constraints``: re-exports of ``fastckpt.constraints``."""
from fastckpt.constraints import *  # noqa: F401,F403
from fastckpt.constraints import __all__  # noqa: F401
