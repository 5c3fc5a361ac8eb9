"""Normalization, embedding and pooling layers: kernels against NumPy references and finite
differences, the layers' Keras behaviour (masks, id checks, moving statistics, configs), training
in Sequential models and every save format.

Tolerances: forwards 1e-5 against float64 references; gradients by central differences (step
1e-2 on float32 kernels, loss accumulated in float64) to 2e-3 relative.
"""

import os

import numpy as np
import pytest

from fastckpt import keras, ops
from fastckpt.layers import (BatchNormalization, Embedding, GlobalAveragePooling1D,
                             GlobalMaxPooling1D, LayerNormalization, Normalization)
from fastckpt.saving.serialization import deserialize_layer, serialize_layer


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _fd_check(f, x, analytic, rng, n=25, eps=1e-2, rtol=2e-3, atol=2e-3):
    """Central differences of the scalar ``f(x)`` at ``n`` random positions of ``x``."""
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(n, flat.size), replace=False)
    for i in idx:
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        num = (up - down) / (2 * eps)
        got = analytic.reshape(-1)[i]
        assert abs(num - got) <= atol + rtol * abs(num), (i, num, got)


# --- batch normalization kernels -------------------------------------------------------------
def _bn_ref(x, gamma, beta, eps, w=None):
    x64 = x.astype(np.float64).reshape(-1, x.shape[-1])
    w = np.ones(x64.shape[0]) if w is None else w.reshape(-1).astype(np.float64)
    cnt = w.sum()
    mean = (x64 * w[:, None]).sum(0) / cnt
    var = (((x64 - mean) ** 2) * w[:, None]).sum(0) / cnt
    y = (x64 - mean) / np.sqrt(var + eps) * gamma + beta
    return y.reshape(x.shape), mean, var


@pytest.mark.parametrize("shape", [(1, 3), (5, 7), (300, 9), (4000, 3), (6, 5, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_batchnorm_forward_train_matches_numpy(rng, shape, masked):
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    c = shape[-1]
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    mask = None
    if masked:
        mask = (rng.random(shape[:-1]) > 0.3).astype(np.uint8)
        mask.reshape(-1)[0] = 1
    y = np.empty_like(x)
    mean, inv = np.empty(c, np.float32), np.empty(c, np.float32)
    mm, mv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)
    ops.batchnorm_forward_train(x, gamma, beta, 1e-3, y, mean, inv, mm, mv, 0.9, row_mask=mask)
    ref, rmean, rvar = _bn_ref(x, gamma, beta, 1e-3, mask)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(mean, rmean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv, 1 / np.sqrt(rvar + 1e-3), rtol=1e-5)
    np.testing.assert_allclose(mm, 0.5 * 0.9 + rmean * 0.1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mv, 2.0 * 0.9 + rvar * 0.1, rtol=1e-5, atol=1e-6)


def test_batchnorm_statistics_do_not_depend_on_thread_count(rng):
    x = rng.standard_normal((20000, 5)).astype(np.float32)
    outs = []
    before = ops.num_threads()
    try:
        for n in (1, 2, 3):
            ops.set_num_threads(n)
            y = np.empty_like(x)
            mean, inv = np.empty(5, np.float32), np.empty(5, np.float32)
            ops.batchnorm_forward_train(x, None, None, 1e-3, y, mean, inv)
            dx, dg, db = np.empty_like(x), np.empty(5, np.float32), np.empty(5, np.float32)
            ops.batchnorm_backward(x, y, mean, inv, None, True, dx, dg, db)
            outs.append((y, mean, inv, dx, dg, db))
    finally:
        ops.set_num_threads(before)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("shape,masked,affine", [((7, 4), False, True), ((7, 4), False, False),
                                                 ((300, 3), False, True), ((3, 5, 4), True, True)])
def test_batchnorm_backward_finite_differences(rng, shape, masked, affine):
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[-1]
    gamma = (rng.standard_normal(c) + 1.5).astype(np.float32) if affine else None
    beta = rng.standard_normal(c).astype(np.float32) if affine else None
    mask = (rng.random(shape[:-1]) > 0.4).astype(np.uint8) if masked else None
    if mask is not None:
        mask.reshape(-1)[:2] = 1
    r = rng.standard_normal(shape)

    def loss(xx, g=gamma, b=beta):
        y = np.empty_like(xx)
        ops.batchnorm_forward_train(xx, g, b, 1e-3, y, np.empty(c, np.float32),
                                    np.empty(c, np.float32), row_mask=mask)
        return float((y.astype(np.float64) * r).sum())

    y = np.empty_like(x)
    mean, inv = np.empty(c, np.float32), np.empty(c, np.float32)
    ops.batchnorm_forward_train(x, gamma, beta, 1e-3, y, mean, inv, row_mask=mask)
    dy = r.astype(np.float32)
    dx, dg, db = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
    ops.batchnorm_backward(x, dy, mean, inv, gamma, True, dx, dg if affine else None,
                           db if affine else None, row_mask=mask)
    _fd_check(loss, x, dx, rng)
    if affine:
        _fd_check(lambda g: loss(x, g, beta), gamma.copy(), dg, rng)
        _fd_check(lambda b: loss(x, gamma, b), beta.copy(), db, rng)


def test_batchnorm_inference_forward_and_backward(rng):
    x = rng.standard_normal((9, 4)).astype(np.float32)
    mean = rng.standard_normal(4).astype(np.float32)
    var = (rng.random(4) + 0.5).astype(np.float32)
    gamma = rng.standard_normal(4).astype(np.float32)
    beta = rng.standard_normal(4).astype(np.float32)
    y = np.empty_like(x)
    inv = np.empty(4, np.float32)
    ops.batchnorm_forward_infer(x, mean, var, gamma, beta, 1e-3, y, inv)
    ref = (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-3) * gamma + beta
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    r = rng.standard_normal(x.shape)
    dx, dg, db = np.empty_like(x), np.empty(4, np.float32), np.empty(4, np.float32)
    ops.batchnorm_backward(x, r.astype(np.float32), mean, inv, gamma, False, dx, dg, db)

    def loss(xx, g=gamma):
        yy = np.empty_like(xx)
        ops.batchnorm_forward_infer(xx, mean, var, g, beta, 1e-3, yy)
        return float((yy.astype(np.float64) * r).sum())
    _fd_check(loss, x, dx, rng)
    _fd_check(lambda g: loss(x, g), gamma.copy(), dg, rng)
    np.testing.assert_allclose(db, r.sum(0), rtol=1e-5)


# --- layer normalization and Normalization kernels -----------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (4, 6), (130, 33), (3, 2, 8)])
def test_layernorm_forward_matches_numpy(rng, shape):
    x = (rng.standard_normal(shape) * 2 - 1).astype(np.float32)
    c = shape[-1]
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    x2 = x.reshape(-1, c)
    y = np.empty_like(x2)
    mean, inv = np.empty(x2.shape[0], np.float32), np.empty(x2.shape[0], np.float32)
    ops.layernorm_forward(x2, gamma, beta, 1e-3, y, mean, inv)
    x64 = x2.astype(np.float64)
    m = x64.mean(1, keepdims=True)
    v = x64.var(1, keepdims=True)
    np.testing.assert_allclose(y, (x64 - m) / np.sqrt(v + 1e-3) * gamma + beta, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape,affine", [((5, 6), True), ((5, 6), False), ((300, 4), True)])
def test_layernorm_backward_finite_differences(rng, shape, affine):
    x = rng.standard_normal(shape).astype(np.float32)
    rows, c = shape
    gamma = (rng.standard_normal(c) + 1).astype(np.float32) if affine else None
    beta = rng.standard_normal(c).astype(np.float32) if affine else None
    r = rng.standard_normal(shape)

    def loss(xx, g=gamma, b=beta):
        y = np.empty_like(xx)
        ops.layernorm_forward(xx, g, b, 1e-3, y, np.empty(rows, np.float32), np.empty(rows, np.float32))
        return float((y.astype(np.float64) * r).sum())

    y = np.empty_like(x)
    mean, inv = np.empty(rows, np.float32), np.empty(rows, np.float32)
    ops.layernorm_forward(x, gamma, beta, 1e-3, y, mean, inv)
    dx, dg, db = np.empty_like(x), np.empty(c, np.float32), np.empty(c, np.float32)
    ops.layernorm_backward(x, r.astype(np.float32), mean, inv, gamma, dx, dg, db)
    _fd_check(loss, x, dx, rng)
    if affine:
        _fd_check(lambda g: loss(x, g, beta), gamma.copy(), dg, rng)
        _fd_check(lambda b: loss(x, gamma, b), beta.copy(), db, rng)


def test_normalize_forward_and_invert(rng):
    x = rng.standard_normal((6, 3)).astype(np.float32)
    mean = np.array([1, -2, 0.5], np.float32)
    var = np.array([4, 0, 0.25], np.float32)
    y = np.empty_like(x)
    ops.normalize_forward(x, mean, var, 1e-7, False, y)
    sd = np.maximum(np.sqrt(var), 1e-7)
    np.testing.assert_allclose(y, (x - mean) / sd, rtol=1e-6)
    back = np.empty_like(x)
    ops.normalize_forward(y, mean, var, 1e-7, True, back)
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)


def test_column_moments(rng):
    x = rng.standard_normal((1000, 4)).astype(np.float32) * 5 + 3
    m, v = np.empty(4, np.float32), np.empty(4, np.float32)
    assert ops.column_moments(x, m, v) == 1000
    np.testing.assert_allclose(m, x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(v, x.astype(np.float64).var(0), rtol=1e-6)


# --- embedding and pooling kernels ------------------------------------------------------------
def test_embedding_gather_and_scatter_add(rng):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    ids = np.array([[1, 3, 1], [0, 9, 3]], np.int32)
    out = np.empty((2, 3, 4), np.float32)
    ops.embedding_gather(ids, table, out)
    np.testing.assert_array_equal(out, table[ids])
    dy = rng.standard_normal((2, 3, 4)).astype(np.float32)
    d = np.full((10, 4), 7.0, np.float32)
    ops.embedding_scatter_add(ids, dy, d)
    ref = np.zeros((10, 4))
    np.add.at(ref, ids, dy)
    np.testing.assert_allclose(d, ref, rtol=1e-6)
    assert not d[[2, 4, 5, 6, 7, 8]].any()  # rows no id names stay zero


@pytest.mark.parametrize("bad", [-1, 10, 2**31 - 1])
def test_embedding_kernels_bounds_check(bad):
    table = np.zeros((10, 2), np.float32)
    ids = np.array([1, bad, 2], np.int32)
    out = np.full((3, 2), 5.0, np.float32)
    with pytest.raises(ValueError, match=f"id {bad} at flat position 1 is out of range"):
        ops.embedding_gather(ids, table, out)
    assert (out == 5.0).all()
    with pytest.raises(ValueError, match="out of range"):
        ops.embedding_scatter_add(ids, np.zeros((3, 2), np.float32), np.zeros((10, 2), np.float32))


@pytest.mark.parametrize("masked", [False, True])
def test_gap1d_forward_backward(rng, masked):
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    mask = (rng.random((4, 6)) > 0.5).astype(np.uint8) if masked else None
    if mask is not None:
        mask[:, 0] = 1
    w = np.ones((4, 6)) if mask is None else mask.astype(np.float64)
    y = np.empty((4, 3), np.float32)
    ops.gap1d_forward(x, y, mask)
    ref = (x * w[..., None]).sum(1) / w.sum(1, keepdims=True)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    r = rng.standard_normal((4, 3))
    dx = np.empty_like(x)
    ops.gap1d_backward(r.astype(np.float32), dx, mask)

    def loss(xx):
        yy = np.empty((4, 3), np.float32)
        ops.gap1d_forward(xx, yy, mask)
        return float((yy.astype(np.float64) * r).sum())
    _fd_check(loss, x, dx, rng)


def test_gap1d_all_masked_is_nan_as_keras():
    y = np.empty((1, 2), np.float32)
    ops.gap1d_forward(np.ones((1, 3, 2), np.float32), y, np.zeros((1, 3), np.uint8))
    assert np.isnan(y).all()


def test_gmp1d_forward_backward(rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    y = np.empty((3, 4), np.float32)
    ops.gmp1d_forward(x, y)
    np.testing.assert_array_equal(y, x.max(1))
    r = rng.standard_normal((3, 4))
    dx = np.empty_like(x)
    ops.gmp1d_backward(x, y, r.astype(np.float32), dx)

    def loss(xx):
        yy = np.empty((3, 4), np.float32)
        ops.gmp1d_forward(xx, yy)
        return float((yy.astype(np.float64) * r).sum())
    _fd_check(loss, x, dx, rng, eps=1e-3)
    # ties split the gradient evenly (TensorFlow's reduce_max gradient)
    t = np.ones((1, 2, 1), np.float32)
    yy = np.empty((1, 1), np.float32)
    ops.gmp1d_forward(t, yy)
    d = np.empty_like(t)
    ops.gmp1d_backward(t, yy, np.ones((1, 1), np.float32), d)
    assert d.ravel().tolist() == [0.5, 0.5]


# --- layers ------------------------------------------------------------------------------------
def test_embedding_rejects_bad_ids_with_value_and_index():
    emb = Embedding(5, 2)
    with pytest.raises(ValueError, match=r"id 5 at index \(1, 0\) is out of range \[0, 5\)"):
        emb(np.array([[0, 1], [5, 2]]))
    with pytest.raises(ValueError, match=r"id -1 at index \(0, 1\)"):
        emb(np.array([[0, -1]], np.float32))
    with pytest.raises(ValueError, match=r"expected integer ids, got 1.5 at index \(0, 0\)"):
        emb(np.array([[1.5, 1]], np.float32))
    with pytest.raises(ValueError, match="expected integer ids, got nan"):
        emb(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="out of range"):
        emb(np.array([[2**40]], np.int64))
    with pytest.raises(TypeError):
        emb(np.array([["a"]]))
    with pytest.raises(ValueError, match="should be positive"):
        Embedding(0, 3)


def test_embedding_any_shape_and_mask(rng):
    emb = Embedding(7, 3, mask_zero=True)
    ids = rng.integers(0, 7, size=(2, 3, 4))
    out = emb(ids)
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(out, emb.embeddings.numpy()[ids])
    np.testing.assert_array_equal(emb.compute_mask(ids), ids != 0)
    assert Embedding(7, 3).compute_mask(ids) is None
    assert emb.compute_output_shape((None, 3, 4)) == (None, 3, 4, 3)
    assert Embedding(7, 3, input_length=5).compute_output_shape((None, None)) == (None, 5, 3)


def test_global_pooling_layers_with_mask_and_formats(rng):
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    gap = GlobalAveragePooling1D()
    np.testing.assert_allclose(gap(x, mask=mask), [x[0, :2].mean(0), x[1, 0]], rtol=1e-6)
    assert gap.compute_mask(x, mask) is None
    np.testing.assert_allclose(GlobalAveragePooling1D(keepdims=True)(x), x.mean(1, keepdims=True),
                               rtol=1e-6)
    cf = GlobalAveragePooling1D(data_format="channels_first")
    np.testing.assert_allclose(cf(x), x.mean(2), rtol=1e-6)
    assert cf.compute_output_shape((None, 4, 3)) == (None, 4)
    np.testing.assert_array_equal(GlobalMaxPooling1D()(x), x.max(1))
    np.testing.assert_array_equal(GlobalMaxPooling1D(data_format="channels_first", keepdims=True)(x),
                                  x.max(2, keepdims=True))
    with pytest.raises(ValueError, match="data_format"):
        GlobalMaxPooling1D(data_format="nhwc")
    with pytest.raises(ValueError, match="expected ndim=3"):
        GlobalMaxPooling1D()(np.ones((2, 3), np.float32))


def test_pooling_backward_channels_first(rng):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    for layer in (GlobalAveragePooling1D(data_format="channels_first"),
                  GlobalMaxPooling1D(data_format="channels_first")):
        layer(x)
        y = layer.forward_train(x, True)
        g = rng.standard_normal(y.shape).astype(np.float32)
        dx = layer.backward(g)
        assert dx.shape == x.shape
        if isinstance(layer, GlobalAveragePooling1D):
            np.testing.assert_allclose(dx, np.repeat(g[:, :, None] / 5, 5, axis=2), rtol=1e-6)


def test_batchnorm_layer_training_and_inference(rng):
    x = (rng.standard_normal((16, 3)) * 2 + 1).astype(np.float32)
    bn = BatchNormalization(momentum=0.9)
    y_inf = bn(x)  # inference: moving statistics (0, 1)
    np.testing.assert_allclose(y_inf, x / np.sqrt(1 + 1e-3), rtol=1e-6)
    assert (bn.moving_mean.numpy() == 0).all()
    y = bn(x, training=True)
    ref, mean, var = _bn_ref(x, 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    assert [w.name for w in bn.weights] == [f"{bn.name}/{n}:0" for n in
                                            ("gamma", "beta", "moving_mean", "moving_variance")]
    assert [w.name.split("/")[-1] for w in bn.trainable_weights] == ["gamma:0", "beta:0"]
    # frozen: inference mode even with training=True, as tf.keras
    frozen = BatchNormalization()
    frozen(x)
    frozen.trainable = False
    np.testing.assert_allclose(frozen(x, training=True), x / np.sqrt(1 + 1e-3), rtol=1e-6)
    assert (frozen.moving_mean.numpy() == 0).all()
    with pytest.raises(NotImplementedError, match="batch axis"):
        BatchNormalization(axis=0)(x)
    with pytest.raises(ValueError, match="incompatible"):
        bn(np.ones((2, 4), np.float32))


def test_batchnorm_layer_rank3_with_mask(rng):
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    mask = rng.random((3, 4)) > 0.3
    mask[0, 0] = True
    bn = BatchNormalization(momentum=0.5)
    y = bn(x, training=True, mask=mask)
    ref, mean, _ = _bn_ref(x, 1.0, 0.0, 1e-3, mask)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * mean, rtol=1e-5)


def test_layernorm_layer_trailing_axes(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ln = LayerNormalization(axis=[1, 2])
    y = ln(x)
    assert ln.gamma.shape == (3, 4)
    x64 = x.reshape(2, -1).astype(np.float64)
    ref = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(y.reshape(2, -1), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(NotImplementedError, match="batch axis"):
        LayerNormalization(axis=0)(x)


@pytest.mark.parametrize("shape,axis", [((2, 3, 4), 1), ((2, 3, 4, 5), [1, 3]),
                                        ((2, 3, 4, 5), [3, 1]), ((2, 3, 4), [2, 1])])
def test_layernorm_layer_any_axes(rng, shape, axis):
    """Axes that are not the trailing ones in order: statistics over them, gamma/beta laid over
    them in dimension order (as tf.keras reshapes its parameters), input gradient by finite
    differences."""
    x = rng.standard_normal(shape).astype(np.float32)
    ln = LayerNormalization(axis=axis)
    ln.build((None,) + shape[1:])
    axes = sorted([axis] if isinstance(axis, int) else axis)
    bshape = [shape[a] if a in axes else 1 for a in range(len(shape))]
    gamma = (rng.standard_normal(ln.gamma.shape) + 1).astype(np.float32)
    beta = rng.standard_normal(ln.beta.shape).astype(np.float32)
    ln.set_weights([gamma, beta])
    x64 = x.astype(np.float64)
    m, v = x64.mean(tuple(axes), keepdims=True), x64.var(tuple(axes), keepdims=True)
    ref = (x64 - m) / np.sqrt(v + 1e-3) * gamma.reshape(bshape) + beta.reshape(bshape)
    np.testing.assert_allclose(ln(x), ref, rtol=1e-5, atol=1e-5)
    r = rng.standard_normal(shape)
    y = ln.forward_train(x, True)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    dx = ln.backward(r.astype(np.float32), True)
    dgamma, dbeta = [g.copy() for g in ln._grad_buffers()]
    np.testing.assert_allclose(dbeta.reshape(-1), (r.sum(0) if len(axes) == len(shape) - 1 else
                               r.sum(tuple(a for a in range(len(shape)) if a not in axes))
                               ).reshape(-1), rtol=1e-4, atol=1e-4)
    _fd_check(lambda xx: float((ln(xx).astype(np.float64) * r).sum()), x.copy(), dx, rng)
    with pytest.raises(ValueError, match="incompatible"):
        ln(np.zeros((2,) + tuple(d + 1 for d in shape[1:]), np.float32))


def test_normalization_adapt_axes_and_invert(rng):
    data = (rng.standard_normal((100, 3, 2)) * [1, 2] + [5, -1]).astype(np.float32)
    for axis, keep in ((-1, (2,)), (None, ()), ((1, 2), (1, 2)), (1, (1,))):
        norm = Normalization(axis=axis)
        norm.adapt(data, batch_size=7)
        red = tuple(d for d in range(3) if d not in keep)
        m = data.astype(np.float64).mean(red, keepdims=True)
        v = data.astype(np.float64).var(red, keepdims=True)
        np.testing.assert_allclose(norm.adapt_mean.numpy(), m.squeeze(red) if red else m,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(norm.adapt_variance.numpy(), v.squeeze(red) if red else v,
                                   rtol=1e-4)
        assert int(norm.count.numpy()) == data.size // (np.prod([data.shape[d] for d in keep])
                                                        if keep else 1)
        np.testing.assert_allclose(norm(data), (data - m) / np.sqrt(v), rtol=1e-3, atol=1e-4)
        inv = Normalization(axis=axis, invert=True)
        inv.adapt(data)
        np.testing.assert_allclose(inv(norm(data)), data, rtol=1e-4, atol=1e-4)
    # steps limits the batches
    norm = Normalization()
    norm.adapt(data[:, 0], batch_size=10, steps=2)
    assert int(norm.count.numpy()) == 20
    # an iterable of batches
    norm.adapt(iter([data[:50, 0], data[50:, 0]]))
    np.testing.assert_allclose(norm.adapt_mean.numpy(), data[:, 0].mean(0), rtol=1e-5)


def test_normalization_given_statistics():
    norm = Normalization(mean=3.0, variance=2.0)
    np.testing.assert_allclose(norm(np.array([[1.0], [2.0], [3.0]], np.float32)).ravel(),
                               [-1.4142135, -0.70710677, 0.0], rtol=1e-6)
    assert norm.weights == []
    with pytest.raises(ValueError, match="Cannot `adapt`"):
        norm.adapt(np.ones((2, 1)))
    with pytest.raises(ValueError, match="both `mean` and `variance`"):
        Normalization(mean=1.0)
    with pytest.raises(ValueError, match="known shape"):
        Normalization().build((None, None))


@pytest.mark.parametrize("make", [
    lambda: BatchNormalization(momentum=0.9, epsilon=1e-4, center=False),
    lambda: LayerNormalization(epsilon=1e-5, scale=False),
    lambda: Normalization(axis=None, mean=1.0, variance=4.0, invert=True),
    lambda: Normalization(axis=(1, 2)),
    lambda: Embedding(9, 4, mask_zero=True, input_length=3),
    lambda: GlobalAveragePooling1D(data_format="channels_first", keepdims=True),
    lambda: GlobalMaxPooling1D(),
])
def test_config_round_trip(make):
    layer = make()
    config = serialize_layer(layer)
    config["config"]["name"] = config["config"]["name"] + "_copy"
    clone = deserialize_layer(config)
    assert type(clone) is type(layer)
    a, b = layer.get_config(), clone.get_config()
    a.pop("name"), b.pop("name")
    assert a == b


def test_embedding_default_initializer_is_keras_uniform():
    emb = Embedding(50, 20)
    emb.build(None)
    w = emb.embeddings.numpy()
    assert -0.05 <= w.min() and w.max() <= 0.05 and w.std() > 0.02
    init = emb.get_config()["embeddings_initializer"]
    assert init["class_name"] == "RandomUniform"
    assert init["config"]["minval"] == -0.05 and init["config"]["maxval"] == 0.05


# --- training and saving in Sequential models -------------------------------------------------
def _bn_model(seed=0):
    keras.utils.set_random_seed(seed) if hasattr(keras.utils, "set_random_seed") else None
    return keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(6,)),
                             keras.layers.BatchNormalization(),
                             keras.layers.LayerNormalization(),
                             keras.layers.Dense(3, activation="softmax")])


def _emb_model():
    return keras.Sequential([keras.layers.Embedding(30, 8, mask_zero=True, input_length=7),
                             keras.layers.GlobalAveragePooling1D(),
                             keras.layers.Dense(2, activation="softmax")])


def _tab_data(rng, n=200):
    x = rng.standard_normal((n, 6)).astype(np.float32) * 3 + 2
    y = (x[:, 0] > 2).astype(np.int32) + (x[:, 1] > 4).astype(np.int32)
    return x, y


def _seq_data(rng, n=200):
    x = rng.integers(1, 30, size=(n, 7))
    lengths = rng.integers(1, 8, size=n)
    x[np.arange(7)[None, :] >= lengths[:, None]] = 0
    y = (x[:, 0] >= 15).astype(np.int32)
    return x, y


def test_dense_batchnorm_dense_trains(rng):
    x, y = _tab_data(rng)
    model = _bn_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    bn = model.layers[1]
    before = bn.moving_mean.numpy()
    hist = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert not np.allclose(bn.moving_mean.numpy(), before)
    # evaluate/predict use the moving statistics and leave them alone
    after = bn.moving_mean.numpy()
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), after)


def test_embedding_pooling_trains_with_mask(rng):
    x, y = _seq_data(rng)
    model = _emb_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # the padding steps do not count: the prediction equals the mean over the real steps
    emb, gap, dense = model.layers
    table = emb.embeddings.numpy()
    h = np.stack([table[row[row != 0]].mean(0) for row in x[:5]])
    ref = dense(h)
    np.testing.assert_allclose(model.predict(x[:5], verbose=0), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        model.predict(np.full((2, 7), 30))


def test_sgd_leaves_unused_embedding_rows_unchanged(rng):
    x = rng.integers(0, 5, size=(64, 4))  # ids 0..4 only
    y = (x[:, 0] > 2).astype(np.int32)
    model = keras.Sequential([keras.layers.Embedding(10, 3), keras.layers.GlobalMaxPooling1D(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    before = model.layers[0].embeddings.numpy()
    model.fit(x, y, epochs=2, verbose=0)
    after = model.layers[0].embeddings.numpy()
    np.testing.assert_array_equal(after[5:], before[5:])
    assert not np.allclose(after[:5], before[:5])


def _train_resume(tmp_path, make, data, fmt):
    x, y = data
    model = make()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = os.path.join(tmp_path, "m" + fmt)
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", [".h5", ".keras", ""])
def test_model_save_round_trip_and_bit_identical_resume(tmp_path, rng, fmt):
    _train_resume(tmp_path, _bn_model, _tab_data(rng), fmt)
    _train_resume(tmp_path, _emb_model, _seq_data(rng), fmt)


@pytest.mark.parametrize("suffix", ["ckpt", "w.h5", "w.weights.h5"])
def test_save_load_weights(tmp_path, rng, suffix):
    x, y = _tab_data(rng)
    model = _bn_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = os.path.join(tmp_path, suffix)
    model.save_weights(path)
    other = _bn_model()
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def test_normalization_in_model_saves_adapted_statistics(tmp_path, rng):
    x, y = _tab_data(rng)
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([norm, keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    for fmt in (".h5", ".keras", ""):
        path = os.path.join(tmp_path, "n" + fmt)
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        assert int(loaded.layers[0].count.numpy()) == 200


def test_keras3_configs_are_accepted():
    init = {"module": "keras.initializers", "class_name": "Ones", "config": {},
            "registered_name": None}
    bn = BatchNormalization.from_config({
        "name": "bn_k3", "trainable": True, "axis": -1, "momentum": 0.9, "epsilon": 0.001,
        "center": True, "scale": True, "gamma_initializer": init, "synchronized": False,
        "renorm": False, "renorm_clipping": None, "renorm_momentum": 0.99})
    assert bn.momentum == 0.9
    ln = LayerNormalization.from_config({"name": "ln_k3", "axis": -1, "rms_scaling": False})
    assert ln.epsilon == 1e-3
    emb = Embedding.from_config({
        "name": "emb_k3", "input_dim": 5, "output_dim": 2, "mask_zero": True,
        "embeddings_initializer": {"module": "keras.initializers", "class_name": "RandomUniform",
                                   "config": {"seed": None, "minval": -0.1, "maxval": 0.1},
                                   "registered_name": None},
        "quantization_config": None})
    emb.build(None)
    assert np.abs(emb.embeddings.numpy()).max() <= 0.1
    norm = Normalization.from_config({"name": "n_k3", "axis": [-1], "invert": False,
                                      "mean": None, "variance": None})
    assert norm.axis == (-1,)
    with pytest.raises(NotImplementedError, match="rms_scaling"):
        LayerNormalization(rms_scaling=True)


def test_normalization_axis_none_tutorial_flow(rng):
    """The 'Basic regression' tutorial: adapt on a 1-D column, then a model on (batch, 1)."""
    hp = (rng.random(120) * 100 + 50).astype(np.float32)
    norm = keras.layers.Normalization(input_shape=[1], axis=None)
    norm.adapt(hp)
    model = keras.Sequential([norm, keras.layers.Dense(1)])
    out = model.layers[0](hp[:5, None])
    np.testing.assert_allclose(out, (hp[:5, None] - hp.mean()) / hp.std(), rtol=1e-4, atol=1e-5)
    assert model.output_shape == (None, 1)
    np.testing.assert_allclose(norm(hp[:3]), (hp[:3] - hp.mean()) / hp.std(), rtol=1e-4, atol=1e-5)


def test_sequential_passes_masks_only_to_layers_that_take_them(rng):
    class Plain(keras.layers.Layer):  # supports masking, but its call takes no mask
        supports_masking = True

        def call(self, inputs, training=None):
            return inputs * 2.0

    class Takes(keras.layers.Layer):
        supports_masking = True

        def call(self, inputs, training=None, mask=None):
            self.seen = mask
            return inputs

    ids = np.array([[1, 2, 0], [3, 0, 0]])
    takes = Takes()
    model = keras.Sequential([keras.layers.Embedding(5, 2, mask_zero=True), Plain(), takes,
                              keras.layers.GlobalAveragePooling1D()])
    out = model(ids)
    np.testing.assert_array_equal(takes.seen, ids != 0)
    table = model.layers[0].embeddings.numpy() * 2.0
    np.testing.assert_allclose(out, [table[[1, 2]].mean(0), table[3]], rtol=1e-6)


def test_batchnorm_channels_first_axis(rng):
    x = (rng.standard_normal((4, 3, 5)) + 2).astype(np.float32)
    bn = BatchNormalization(axis=1, momentum=0.5)
    y = bn(x, training=True)
    moved = np.moveaxis(x, 1, -1)
    ref, mean, _ = _bn_ref(moved, 1.0, 0.0, 1e-3)
    np.testing.assert_allclose(y, np.moveaxis(ref, -1, 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * mean, rtol=1e-5)
    assert bn.moving_mean.shape == (3,)
    r = rng.standard_normal(x.shape).astype(np.float32)
    bn.forward_train(x, True)
    dx = bn.backward(r)

    def loss(xx):
        b2 = BatchNormalization(axis=1)
        return float((b2(xx, training=True).astype(np.float64) * r).sum())
    _fd_check(loss, x, dx, rng)
    with pytest.raises(ValueError, match="incompatible"):
        bn(np.ones((4, 4, 5), np.float32))
