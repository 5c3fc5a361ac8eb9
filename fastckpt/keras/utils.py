"""``keras.utils``: re-exports of ``fastckpt.utils``."""
from fastckpt.utils import *  # noqa: F401,F403
from fastckpt.utils import __all__  # noqa: F401
