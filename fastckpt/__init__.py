"""fastckpt: a Keras-shaped training core with C++ kernels and crash-safe checkpoints.

Use it as TensorFlow is used in its tutorials::

    import fastckpt as tf
    from fastckpt import distribute, keras, train
"""

from fastckpt import version
from fastckpt.version import VERSION as __version__
from fastckpt.config import get_num_threads, set_num_threads, show_config
from fastckpt import errors, losses, metrics, optimizers
from fastckpt import distribute, keras, train

__all__ = ["__version__", "version", "show_config", "set_num_threads", "get_num_threads", "keras",
           "losses", "metrics", "optimizers", "errors", "train", "distribute"]
