"""``keras.losses``: re-exports of ``fastckpt.losses``."""
from fastckpt.losses import *  # noqa: F401,F403
from fastckpt.losses import __all__  # noqa: F401
