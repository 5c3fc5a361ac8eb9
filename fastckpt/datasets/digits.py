"""The UCI handwritten digits, in MNIST's shapes: the real dataset the offline demo trains on.

scikit-learn ships the UCI "Optical Recognition of Handwritten Digits" test set: 1797 scans by 43 writers,
each reduced to 8x8 cells counting ink pixels (0-16). ``load_data`` returns them the way
``mnist.load_data`` returns MNIST, so the tutorial's code runs unchanged on them offline:

* each 8x8 image is resized bilinearly (pixel-centre sampling, like PIL/OpenCV) to 20x20 and placed in
  the middle of a 28x28 canvas — MNIST fits its digits in a 20x20 box centred in 28x28;
* intensities 0-16 are scaled to 0-255 and rounded to uint8;
* the split is stratified (each digit keeps its share in train and test) and deterministic for a seed.

Needs scikit-learn: ``pip install fastckpt[demo]``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from fastckpt.checks import is_int, is_real

__all__ = ["load_data", "to_mnist_images"]

_BOX = 20  # side of the box MNIST fits digits into
_SIZE = 28  # side of an MNIST image

Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def _resize_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) weights of 1-D linear interpolation with pixel centres aligned (half-pixel offsets)."""
    pos = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    m = np.zeros((dst, src))
    np.add.at(m, (np.arange(dst), lo), 1 - frac)
    np.add.at(m, (np.arange(dst), hi), frac)
    return m


def to_mnist_images(images: np.ndarray, max_value: float = 16.0) -> np.ndarray:
    """Turns (n, h, w) images with values in ``[0, max_value]`` into MNIST-style (n, 28, 28) uint8 images.

    Bilinear resize to 20x20 (separable, so one matrix product per axis), centred on a 28x28 canvas,
    scaled to 0-255.

    Example:
        >>> img = np.zeros((1, 8, 8)); img[0, 2:6, 3:5] = 16
        >>> out = to_mnist_images(img)
        >>> out.shape, out.dtype, int(out.max()), int(out[0, :4].sum()), int(out[0, :, :4].sum())
        ((1, 28, 28), dtype('uint8'), 255, 0, 0)
    """
    images = np.asarray(images)
    if images.ndim != 3 or min(images.shape[1:], default=0) < 1:
        raise ValueError(f"Expected images of shape (n, height, width), got {images.shape}")
    if not np.issubdtype(images.dtype, np.number) or np.issubdtype(images.dtype, np.complexfloating):
        raise TypeError(f"Expected real numeric images, got dtype {images.dtype}")
    if not max_value > 0:
        raise ValueError(f"Expected max_value > 0, got {max_value!r}")
    rows = _resize_matrix(images.shape[1], _BOX)
    cols = _resize_matrix(images.shape[2], _BOX)
    box = np.einsum("ij,njk,lk->nil", rows, images.astype(np.float64), cols)
    box = np.clip(np.rint(box * (255.0 / max_value)), 0, 255).astype(np.uint8)
    out = np.zeros((images.shape[0], _SIZE, _SIZE), np.uint8)
    pad = (_SIZE - _BOX) // 2
    out[:, pad:pad + _BOX, pad:pad + _BOX] = box
    return out


def _stratified_split(labels: np.ndarray, test_split: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    # RandomState rather than default_rng: its streams are frozen across NumPy versions, so a seed names
    # the same split everywhere (Generator streams may change between releases).
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        # At least one sample of each digit on each side, whatever the fraction.
        n_test = int(min(max(round(len(idx) * test_split), 1), len(idx) - 1)) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    # Shuffled across classes so that a prefix (the tutorial takes [:1000]) holds every digit.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_data(test_split: float = 0.2, seed: int = 0) -> Arrays:
    """Loads the UCI digits as ``(x_train, y_train), (x_test, y_test)`` in MNIST's shapes and dtype.

    Args:
        test_split: fraction of each digit's samples held out for testing, strictly between 0 and 1.
            The default 0.2 gives 1438 training and 359 test images.
        seed: the shuffle and split; the same seed gives the same arrays on every machine.

    Returns:
        uint8 arrays: ``x_*`` of shape (n, 28, 28) with pixels 0-255, ``y_*`` of shape (n,) with digits 0-9.

    Raises:
        ImportError: scikit-learn is not installed (``pip install fastckpt[demo]``).

    Example:
        >>> (x_train, y_train), (x_test, y_test) = load_data()
        >>> x_train.shape, x_test.shape, x_train.dtype, sorted(set(y_test.tolist())) == list(range(10))
        ((1438, 28, 28), (359, 28, 28), dtype('uint8'), True)
    """
    if not is_real(test_split) or not 0 < test_split < 1:
        raise ValueError(f"Expected test_split to be a fraction strictly between 0 and 1, got {test_split!r}")
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"Expected seed to be an integer in [0, 2**32), got {seed!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            "fastckpt.datasets.digits needs scikit-learn, which ships the UCI digits: "
            "pip install fastckpt[demo]"
        ) from e
    bunch = load_digits()
    images, labels = np.asarray(bunch.images), np.asarray(bunch.target)
    if images.ndim != 3 or images.shape[1:] != (8, 8) or labels.shape != (images.shape[0],):
        raise RuntimeError(
            f"Expected scikit-learn's digits as (n, 8, 8) images and (n,) labels, got {images.shape} and "
            f"{labels.shape}"
        )
    x = to_mnist_images(images, max_value=16.0)
    y = labels.astype(np.uint8)
    train, test = _stratified_split(y, float(test_split), int(seed))
    return (x[train], y[train]), (x[test], y[test])
