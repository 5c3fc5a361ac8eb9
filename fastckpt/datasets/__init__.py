"""Datasets in Keras' shapes: ``mnist`` (Keras' cached file) and ``digits`` (offline, via scikit-learn).

``fastckpt.keras.datasets`` re-exports these modules, as ``tf.keras.datasets`` does.
"""

from fastckpt.datasets import digits, mnist
from fastckpt.datasets.mnist import DatasetDownloadError, DatasetError

__all__ = ["mnist", "digits", "DatasetError", "DatasetDownloadError"]
