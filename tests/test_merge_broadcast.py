"""Broadcasting merges (Add, Subtract, Multiply, Average, Maximum, Minimum) as tf.keras' _Merge:
shapes aligned on the right without the batch axis, dims of 1 stretched, lower ranks given axes of
1 after the batch axis. NumPy references for the C++ expand/reduce kernels and the layers, finite-
difference gradients (the reduction of broadcast gradients), shapes and errors. Interop against
tf_keras: tests/interop/test_merge_broadcast_interop.py."""

from __future__ import annotations

import numpy as np
import pytest

from fastckpt import keras, ops

L = keras.layers

REFS = {
    "Add": lambda xs: sum(xs[1:], xs[0]),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: np.prod(np.broadcast_arrays(*xs), axis=0),
    "Average": lambda xs: sum(xs[1:], xs[0]) / len(xs),
    "Maximum": lambda xs: np.max(np.broadcast_arrays(*xs), axis=0),
    "Minimum": lambda xs: np.min(np.broadcast_arrays(*xs), axis=0),
}
# Sample shapes (no batch axis): dims of 1, lower ranks, both.
SHAPES = [((3, 4), (1, 4)), ((3, 1), (3, 4)), ((4,), (3, 4)), ((1, 4), (3, 1)), ((2, 3, 4), (3, 1)),
          ((3, 4), (4,), (1, 1)), ((), (3,))]


def _np_view(x, rank):
    """``x`` with axes of 1 inserted after the batch axis, as tf.keras expands lower ranks."""
    return x.reshape((x.shape[0],) + (1,) * (rank - x.ndim) + x.shape[1:])


def _sample(rng, shape):
    # Distinct values (no ties for Maximum/Minimum) away from 0.
    n = int(np.prod(shape))
    return (rng.permutation(n).reshape(shape) * 0.37 - n * 0.1 + 0.05).astype(np.float32)


def _ids(shapes):
    return "-".join("x".join(map(str, s)) or "scalar" for s in shapes)


@pytest.mark.parametrize("shape_in, shape_out", [((2, 1, 4), (2, 3, 4)), ((2, 3, 1), (2, 3, 5)),
                                                 ((3, 1, 1), (3, 2, 4)), ((2, 4), (2, 4)), ((4,), (4,))])
def test_expand_and_reduce_kernels(shape_in, shape_out):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape_in).astype(np.float32)
    y = ops.broadcast_expand(x, shape_out, np.empty(shape_out, np.float32))
    np.testing.assert_array_equal(y, np.broadcast_to(x, shape_out))
    g = rng.normal(size=shape_out).astype(np.float32)
    dx = ops.broadcast_reduce(g, np.empty(shape_in, np.float32))
    axes = tuple(i for i, (a, b) in enumerate(zip(shape_in, shape_out)) if a != b)
    np.testing.assert_allclose(dx, g.astype(np.float64).sum(axis=axes, keepdims=True), rtol=1e-5, atol=1e-5)
    # reduce is the adjoint of expand: <expand(x), g> == <x, reduce(g)>.
    assert abs(float((y.astype(np.float64) * g).sum()) - float((x.astype(np.float64) * dx).sum())) < 1e-4


def test_expand_and_reduce_check_their_arguments():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.broadcast_expand(x, (2, 4), np.empty((2, 4), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        ops.broadcast_expand(x, (3, 3), np.empty((3, 3), np.float32))
    with pytest.raises(TypeError, match="float32"):
        ops.broadcast_expand(x.astype(np.float64), (2, 3), np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.broadcast_reduce(np.zeros((2, 4), np.float32), np.empty((2, 3), np.float32))


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("shapes", SHAPES, ids=_ids)
def test_broadcasting_merge_forward_and_gradients(name, shapes):
    if name == "Subtract" and len(shapes) != 2:
        return
    rng = np.random.default_rng(1)
    xs = [_sample(rng, (3,) + s) for s in shapes]
    rank = max(x.ndim for x in xs)
    ref = lambda vs: REFS[name]([_np_view(v, rank) for v in vs])  # noqa: E731
    want = ref([x.astype(np.float64) for x in xs])
    layer = getattr(L, name)()
    y = layer(xs)
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)
    assert layer.compute_output_shape([(None,) + s for s in shapes]) == (None,) + want.shape[1:]
    out = layer.forward_train(xs, training=True)
    np.testing.assert_array_equal(out, y)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dxs = layer.backward(g, need_input_grad=True)
    assert [d.shape for d in dxs] == [x.shape for x in xs]
    # Finite differences in float64 of sum(ref(xs) * g) for each input.
    eps = 1e-3
    for i, x in enumerate(xs):
        num = np.zeros(x.shape)
        for j in np.ndindex(x.shape):
            vals = [v.astype(np.float64) for v in xs]
            vals[i][j] += eps
            up = float((ref(vals) * g).sum())
            vals[i][j] -= 2 * eps
            num[j] = (up - float((ref(vals) * g).sum())) / (2 * eps)
        np.testing.assert_allclose(dxs[i], num, rtol=1e-4, atol=1e-3, err_msg=f"input {i}")
    assert layer.backward(g, need_input_grad=False) == [None] * len(xs)


def test_broadcasting_merge_in_a_functional_model_trains():
    a, b = keras.Input(shape=(3, 4)), keras.Input(shape=(4,))
    h = L.Add()([L.Dense(4)(a), L.Dense(4)(b)])
    model = keras.Model([a, b], L.Dense(1)(L.Flatten()(h)))
    assert model.output_shape == (None, 1)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(2)
    x = [rng.normal(size=(32, 3, 4)).astype(np.float32), rng.normal(size=(32, 4)).astype(np.float32)]
    y = rng.normal(size=(32, 1)).astype(np.float32)
    loss = model.fit(x, y, epochs=3, batch_size=8, verbose=0).history["loss"]
    assert loss[-1] < loss[0]


@pytest.mark.parametrize("shapes, message", [
    ([(None, 3, 4), (None, 2, 4)], "Inputs have incompatible shapes. Received shapes (3, 4) and (2, 4)"),
    ([(None, 3), (None, 4, 2)], "Inputs have incompatible shapes. Received shapes (4, 2) and (3,)"),
    ([(2, 3), (4, 3)], "Cannot merge tensors with different batch sizes. Got tensors with shapes "
                       "[(2, 3), (4, 3)]"),
])
def test_broadcasting_merge_errors(shapes, message):
    with pytest.raises(ValueError) as err:
        L.Add().build(shapes)
    assert str(err.value) == message
    a, b = keras.Input(shape=shapes[0][1:]), keras.Input(shape=shapes[1][1:])
    if shapes[0][0] is None:
        with pytest.raises(ValueError, match="incompatible shapes"):
            L.Multiply()([a, b])
