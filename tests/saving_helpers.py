"""Helpers shared by the whole-model saving tests."""

import io
from contextlib import redirect_stdout

import numpy as np


def xy(rng, n=96):
    """Learnable 12-feature, 4-class data."""
    x = rng.random((n, 12), dtype=np.float32)
    return x, x[:, :4].argmax(1)


def summary_text(model) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        model.summary()
    return buf.getvalue()


def assert_same_optimizer_state(a, b) -> None:
    va, vb = a.optimizer.variables, b.optimizer.variables
    assert len(va) == len(vb)
    for x, y in zip(va, vb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.value, y.value)
