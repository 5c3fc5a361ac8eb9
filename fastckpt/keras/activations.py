"""``keras.activations``: re-exports of ``fastckpt.activations``."""
from fastckpt.activations import *  # noqa: F401,F403
from fastckpt.activations import __all__  # noqa: F401
