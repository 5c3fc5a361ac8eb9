"""fastckpt: a Keras-shaped training core with C++ kernels and crash-safe checkpoints."""
from fastckpt.version import VERSION as __version__
