"""Predict through a chain of Dense layers in one native call (issue 16): the same bits as the
layer-by-layer kernels, for every activation, row count and thread count."""

import numpy as np
import pytest

from fastckpt import keras, ops

ACTS = sorted(ops.ACTIVATIONS)


@pytest.fixture(autouse=True)
def plain_weights():
    """Packed weights (MKL builds) round differently from the layer path; these tests pin the
    chain's fusion to the layer path bit for bit, so they run without them (tests/test_blas_provider.py
    covers the packed path)."""
    before = ops.build_info()["blas_packed_b"]
    ops._core.set_blas_packed_b(False)
    yield
    ops._core.set_blas_packed_b(before)


def _layers(rng, widths, bias=True):
    return [(rng.standard_normal((a, b), dtype=np.float32) * np.float32(1 / np.sqrt(a)),
             rng.standard_normal(b, dtype=np.float32) if bias else None)
            for a, b in zip(widths[:-1], widths[1:])]


def _layer_by_layer(x, layers, acts):
    h = x
    for (w, b), act in zip(layers, acts):
        out = np.empty((h.shape[0], w.shape[1]), np.float32)
        z = np.empty_like(out) if act in ops.ACTIVATIONS_NEEDING_Z else None
        ops.dense_forward_z(h, w, b, z, out, act)
        h = out
    return h


def _chain(x, layers, acts):
    outs = [np.empty((x.shape[0], w.shape[1]), np.float32) for w, _ in layers]
    ops.dense_chain_forward(x, [(w, b, o, a) for (w, b), o, a in zip(layers, outs, acts)])
    return outs[-1]


def _numpy(x, layers, acts):
    h = x.astype(np.float64)
    for (w, b), act in zip(layers, acts):
        h = h @ w + (0 if b is None else b)
        assert act in ("relu", "linear", "softmax")
        if act == "relu":
            h = np.maximum(h, 0)
        elif act == "softmax":
            e = np.exp(h - h.max(axis=1, keepdims=True))
            h = e / e.sum(axis=1, keepdims=True)
    return h


@pytest.mark.parametrize("nt", [1, 2, 3])
@pytest.mark.parametrize("rows", [1, 2, 17, 63, 64, 65, 257, 1000, 1025])
def test_chain_has_the_bits_of_layer_by_layer(rng, threads, nt, rows):
    threads(nt)
    layers = _layers(rng, [784, 512, 10])
    x = rng.standard_normal((rows, 784), dtype=np.float32)
    acts = ["relu", "linear"]
    got = _chain(x, layers, acts)
    assert np.array_equal(got, _layer_by_layer(x, layers, acts))
    np.testing.assert_allclose(got, _numpy(x, layers, acts), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ACTS)
def test_chain_has_the_bits_of_layer_by_layer_for_every_activation(rng, threads, act):
    threads(2)
    # Wide enough (rows > units, > 1 MFLOP) that every product is split by rows: the fused path.
    layers = _layers(rng, [96, 80, 40, 7], bias=act != "relu")
    x = rng.standard_normal((300, 96), dtype=np.float32) * np.float32(3)
    acts = [act, act, act]
    got, want = _chain(x, layers, acts), _layer_by_layer(x, layers, acts)
    assert np.isfinite(want).any()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # NaNs too (exponential)


@pytest.mark.parametrize("act", ["relu", "gelu", "softmax", "linear"])
@pytest.mark.parametrize("shape", [(1000, 784, 512), (256, 512, 10), (40, 784, 512), (3, 5, 4)])
def test_dense_forward_has_the_bits_of_gemm_then_bias_then_activation(rng, threads, act, shape):
    """dense_forward seeds the bias, multiplies and activates each thread's rows in one parallel
    region where gemm splits by rows: the same numbers as the three separate passes."""
    threads(2)
    m, k, n = shape
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((k, n), dtype=np.float32) * np.float32(0.1)
    b = rng.standard_normal(n, dtype=np.float32)
    want = np.tile(b, (m, 1))
    ops.gemm(x, w, out=want, beta=1.0)
    ops.activation_forward(act, want)
    got = ops.dense_forward(x, w, b, np.empty((m, n), np.float32), act)
    assert np.array_equal(got, want)
    z = np.empty((m, n), np.float32)
    got_z = np.empty((m, n), np.float32)
    ops.dense_forward_z(x, w, b, z, got_z, act)
    assert np.array_equal(got_z, want)


def test_chain_checks_its_arguments(rng):
    (w1, b1), (w2, b2) = _layers(rng, [6, 5, 3])
    x = rng.standard_normal((4, 6), dtype=np.float32)
    h, o = np.empty((4, 5), np.float32), np.empty((4, 3), np.float32)
    with pytest.raises(ValueError, match="layer 1"):
        ops.dense_chain_forward(x, [(w1, b1, h, "relu"), (w1, b2, o, "linear")])
    with pytest.raises(ValueError, match="layer 0"):
        ops.dense_chain_forward(x, [(w1, b1, o, "relu")])
    with pytest.raises(ValueError, match="activation"):
        ops.dense_chain_forward(x, [(w1, b1, h, "nope")])
    with pytest.raises(TypeError, match="float32"):
        ops.dense_chain_forward(x.astype(np.float64), [(w1, b1, h, "relu")])
    # The native binding checks too (a caller bypassing ops must not reach C++ with bad sizes).
    with pytest.raises(ValueError, match="kernel"):
        ops._core.dense_chain_forward(x, [(w2, b2, o, 0)])
    with pytest.raises(ValueError, match="out"):
        ops._core.dense_chain_forward(x, [(w1, b1, o, 0)])


def test_predict_pass_rows_is_whole_batches_of_at_least_1024_rows():
    assert [ops.predict_pass_rows(b) for b in (1, 7, 32, 1000, 1024, 1500)] == \
        [1024, 1029, 1024, 2000, 1024, 1500]
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ops.predict_pass_rows(0)


def _tutorial(seed=5, extra=()):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(784,)), *extra,
                              keras.layers.Dense(512, activation="relu"), keras.layers.Dropout(0.2),
                              keras.layers.Dense(10)])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("rows", [5, 1000, 2100])
@pytest.mark.parametrize("nt", [1, 2])
def test_predict_through_the_chain_equals_the_layer_path(rng, threads, monkeypatch, rows, nt):
    threads(nt)
    model = _tutorial()
    x = rng.standard_normal((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    calls = []
    real = model._trainer._run_dense_chain
    monkeypatch.setattr(model._trainer, "_run_dense_chain",
                        lambda *a: (calls.append(1), real(*a)))
    fast = model.predict(x, verbose=0)
    assert len(calls) == -(-rows // 1024)  # one native call per 1024-row pass
    monkeypatch.setattr(model._trainer, "_dense_chain", lambda xs: None)
    slow = model.predict(x, verbose=0)
    assert np.array_equal(fast, slow)
    assert fast.dtype == np.float32 and fast.shape == (rows, 10)
    # Keras' predict semantics are per-batch; the grouping changes no bit here either.
    np.testing.assert_allclose(fast, model(x, training=False), rtol=1e-5, atol=1e-6)


def test_predict_falls_back_for_other_layers(rng, monkeypatch):
    model = _tutorial(extra=[keras.layers.Rescaling(0.5)])
    x = rng.standard_normal((40, 784), dtype=np.float32)
    monkeypatch.setattr(model._trainer, "_run_dense_chain", lambda *a: pytest.fail("chain used"))
    got = model.predict(x, verbose=0)
    h = np.maximum(0.5 * x @ model.layers[1].kernel.value + model.layers[1].bias.value, 0)
    want = h @ model.layers[3].kernel.value + model.layers[3].bias.value
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_predict_chain_without_bias_softmax_and_hooks(rng, threads):
    threads(2)
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input(shape=(30,)), keras.layers.Dropout(0.5),
                              keras.layers.Dense(64, activation="tanh", use_bias=False),
                              keras.layers.Dense(3, activation="softmax")])
    x = rng.standard_normal((700, 30), dtype=np.float32)
    seen = []

    class Hooks(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            seen.append(np.array(logs["outputs"]))

    grouped = model.predict(x, verbose=0)
    by_batch = model.predict(x, batch_size=100, verbose=0, callbacks=[Hooks()])
    assert len(seen) == 7 and np.array_equal(np.concatenate(seen), by_batch)
    np.testing.assert_allclose(grouped, by_batch, rtol=1e-5, atol=1e-6)
    layers = [(model.layers[1].kernel.value, None), (model.layers[2].kernel.value,
                                                     model.layers[2].bias.value)]
    assert np.array_equal(grouped, _layer_by_layer(x, layers, ["tanh", "softmax"]))
    np.testing.assert_allclose(grouped.sum(axis=1), 1, rtol=1e-5)


def test_predict_on_batch_and_generators_use_the_chain_with_the_same_bits(rng, threads, monkeypatch):
    threads(2)
    model = _tutorial(seed=9)
    x = rng.standard_normal((300, 784), dtype=np.float32)
    calls = []
    real = model._trainer._run_dense_chain
    monkeypatch.setattr(model._trainer, "_run_dense_chain", lambda *a: (calls.append(1), real(*a)))
    on_batch = model.predict_on_batch(x)
    from_gen = model.predict((x[i:i + 100] for i in range(0, 300, 100)), verbose=0)
    assert len(calls) == 4
    # The arrays returned are the caller's: a second call does not overwrite the first.
    first = model.predict_on_batch(x[:10])
    keep = first.copy()
    model.predict_on_batch(x[10:20])
    assert np.array_equal(first, keep)
    monkeypatch.setattr(model._trainer, "_dense_chain", lambda xs: None)
    assert np.array_equal(on_batch, model.predict_on_batch(x))
    assert np.array_equal(from_gen, model.predict((x[i:i + 100] for i in range(0, 300, 100)),
                                                  verbose=0))
