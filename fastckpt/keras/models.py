"""``keras.models``: re-exports of ``fastckpt.models``."""
from fastckpt.models import *  # noqa: F401,F403
from fastckpt.models import __all__  # noqa: F401
