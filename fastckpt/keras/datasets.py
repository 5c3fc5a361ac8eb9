"""``keras.datasets``: re-exports of ``fastckpt.datasets``."""
from fastckpt.datasets import *  # noqa: F401,F403
from fastckpt.datasets import __all__  # noqa: F401
