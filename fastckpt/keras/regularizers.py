"""``keras.regularizers``: re-exports of ``fastckpt.regularizers``."""
from fastckpt.regularizers import *  # noqa: F401,F403
from fastckpt.regularizers import __all__  # noqa: F401
