"""``keras.metrics``: re-exports of ``fastckpt.metrics``."""
from fastckpt.metrics import *  # noqa: F401,F403
from fastckpt.metrics import __all__  # noqa: F401
