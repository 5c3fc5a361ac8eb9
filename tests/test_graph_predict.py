"""predict of a graph of built-in layers in one native call per pass (graph_fused.GraphForward,
GraphTrainer::predict): the same bits as the layer-by-layer predict (FASTCKPT_FUSED=0), with or
without compile, for every input kind and pass split."""

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.training import graph_fused, trainer as trainer_mod
# A shared layer, every merge, a forced Dropout; a Python layer without a native step.
from test_fused_graph import _Half, shared_skip_model

L = keras.layers


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def runs(monkeypatch):
    """Counts GraphForward.run calls (one per pass when the native path is taken)."""
    calls = []
    real = graph_fused.GraphForward.run

    def spy(self, xs, outs):
        calls.append(int(xs[0].shape[0]))
        return real(self, xs, outs)

    monkeypatch.setattr(graph_fused.GraphForward, "run", spy)
    return calls


def tabular(n, rng):
    num = (rng.standard_normal((n, 8)) * np.logspace(-2, 2, 8)).astype(np.float32)
    a = rng.integers(0, 100, (n, 1)).astype(np.int32)
    b = rng.integers(0, 50, (n, 1)).astype(np.int64)  # converted to int32 ids per pass
    return [num, a, b]


def tabular_model():
    num = keras.Input(shape=(8,), name="num")
    a = keras.Input(shape=(1,), dtype="int32", name="a")
    b = keras.Input(shape=(1,), dtype="int32", name="b")
    ea = L.Flatten()(L.Embedding(100, 4)(a))
    eb = L.Flatten()(L.Embedding(50, 3)(b))
    h = L.BatchNormalization()(L.Concatenate()([num, ea, eb]))
    h = L.Dense(64, activation="relu")(h)
    h = L.Dense(32, activation="gelu")(h)
    return keras.Model([num, a, b], L.Dense(2)(h))


def mlp_model():
    inp = keras.Input(shape=(20,))
    h = L.LayerNormalization()(L.Dense(48)(inp))
    h = L.Dropout(0.2)(L.Activation("silu")(h))
    return keras.Model(inp, L.Dense(10, activation="softmax")(h))


def two_output_model():
    x = keras.Input(shape=(6,), name="x")
    ids = keras.Input(shape=(3,), dtype="int32", name="ids")
    e = L.GlobalAveragePooling1D()(L.Embedding(30, 5)(ids))
    h = L.Dense(16, activation="relu")(L.Concatenate()([x, e]))
    return keras.Model([x, ids], [L.Dense(3, activation="softmax", name="cls")(h),
                                  L.Reshape((2, 4))(L.Dense(8, name="reg")(h))])


def sequential_model():
    return keras.Sequential([L.Dense(16, activation="elu", input_shape=(10,)),
                             L.BatchNormalization(), L.Dropout(0.1),
                             L.Dense(3, activation="softmax")])


def more_layers_model(d=12):
    """GlobalMaxPooling1D, PReLU, Softmax over steps, ReLU/LeakyReLU/ELU and the noise layers
    (a GaussianNoise called with training=True draws in predict)."""
    x = keras.Input(shape=(d,))
    h = L.PReLU(alpha_initializer=keras.initializers.Constant(0.2))(L.Dense(24)(x))
    r = L.Softmax(axis=1)(L.PReLU(shared_axes=[1])(L.Reshape((4, 6))(L.GaussianNoise(0.2)(h))))
    h2 = L.ELU(0.5)(L.LeakyReLU(0.1)(L.ReLU(max_value=1.5, threshold=0.1)(L.Dense(8)(h))))
    h2 = L.AlphaDropout(0.2)(L.GaussianDropout(0.2)(h2))
    h3 = L.GaussianNoise(0.3)(L.Dense(5)(x), training=True)
    return keras.Model(x, L.Dense(3)(L.Concatenate()([L.GlobalMaxPooling1D()(r), h2, h3])))


def masked_model():
    ids = keras.Input(shape=(5,), dtype="int32", name="ids")
    e = L.ELU()(L.Embedding(20, 6, mask_zero=True)(ids))
    return keras.Model(ids, L.Dense(2)(L.GlobalAveragePooling1D()(e)))


def masked_ids(n, r):
    ids = r.integers(1, 20, (n, 5)).astype(np.int32)
    ids[np.arange(5)[None, :] >= r.integers(1, 6, n)[:, None]] = 0
    return ids


def _dropouts(model):
    return [lay for lay in model.layers if hasattr(lay, "rng_offset")]


def _both(monkeypatch, model, x, **kw):
    """predict natively then layer by layer from the same Dropout counters: both outputs and
    both final counters."""
    start = [lay.rng_offset for lay in _dropouts(model)]
    monkeypatch.setenv("FASTCKPT_FUSED", "1")
    native = model.predict(x, verbose=0, **kw)
    after_native = [lay.rng_offset for lay in _dropouts(model)]
    for lay, off in zip(_dropouts(model), start):
        lay.rng_offset = off
    monkeypatch.setenv("FASTCKPT_FUSED", "0")
    ref = model.predict(x, verbose=0, **kw)
    after_ref = [lay.rng_offset for lay in _dropouts(model)]
    monkeypatch.setenv("FASTCKPT_FUSED", "1")
    return native, ref, after_native, after_ref


def _same(a, b):
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
        return
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert np.array_equal(a, b)


MODELS = {"tabular": (tabular_model, tabular),
          "mlp": (mlp_model, lambda n, r: r.standard_normal((n, 20)).astype(np.float32)),
          "shared_skip": (shared_skip_model, lambda n, r: r.standard_normal((n, 12)).astype(np.float32)),
          "two_outputs": (two_output_model,
                          lambda n, r: [r.standard_normal((n, 6)).astype(np.float32),
                                        r.integers(0, 30, (n, 3)).astype(np.int32)]),
          "masked": (masked_model, masked_ids),
          "more_layers": (more_layers_model,
                          lambda n, r: r.standard_normal((n, 12)).astype(np.float32)),
          "sequential": (sequential_model, lambda n, r: r.standard_normal((n, 10)).astype(np.float32))}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("n,batch_size", [(2500, 128), (700, 32), (50, 7), (1, 128), (3000, 1500)])

def test_predict_equals_layer_by_layer(rng, monkeypatch, runs, name, n, batch_size):
    make, data = MODELS[name]
    keras.utils.set_random_seed(1)
    model = make()  # never compiled: predict needs no optimizer or loss
    x = data(n, rng)
    native, ref, off_native, off_ref = _both(monkeypatch, model, x, batch_size=batch_size)
    _same(native, ref)
    assert off_native == off_ref
    # One native call per pass of whole batches, at least 1024 rows (the last one partial).
    rows = max(batch_size, -(-1024 // batch_size) * batch_size)
    assert runs == [min(rows, n - lo) for lo in range(0, n, rows)]
    if name in ("shared_skip", "more_layers"):
        assert max(off_native) > 0  # the training=True random layer drew, identically


def test_predict_after_fit_and_set_weights_sees_the_new_weights(rng, monkeypatch, runs):
    x = tabular(300, rng)
    y = rng.integers(0, 2, 300).astype(np.int32)
    model = tabular_model()
    first = model.predict(x, verbose=0)
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    native, ref, _, _ = _both(monkeypatch, model, x)
    _same(native, ref)
    assert not np.array_equal(first, native)
    other = tabular_model()
    model.set_weights(other.get_weights())
    native, ref, _, _ = _both(monkeypatch, model, x)
    _same(native, ref)
    _same(native, other.predict(x, verbose=0))
    assert runs


def test_predict_on_batch_and_generators_take_the_native_pass(rng, monkeypatch, runs):
    model = two_output_model()
    x = MODELS["two_outputs"][1](90, rng)
    monkeypatch.setenv("FASTCKPT_FUSED", "0")
    ref = model.predict_on_batch(x)
    ref_gen = model.predict((([x[0][i:i + 40], x[1][i:i + 40]],) for i in range(0, 90, 40)),
                            verbose=0)
    assert not runs
    monkeypatch.setenv("FASTCKPT_FUSED", "1")
    _same(model.predict_on_batch(x), ref)
    assert runs == [90]
    _same(model.predict((([x[0][i:i + 40], x[1][i:i + 40]],) for i in range(0, 90, 40)), verbose=0),
          ref_gen)
    assert runs == [90, 40, 40, 10]


def test_predict_with_batch_hooks_runs_one_native_call_per_batch(rng, monkeypatch, runs):
    model = mlp_model()
    x = MODELS["mlp"][1](100, rng)
    seen = []
    cb = keras.callbacks.LambdaCallback(on_predict_batch_end=lambda b, logs: seen.append(b))
    native, ref, _, _ = _both(monkeypatch, model, x, batch_size=30, callbacks=[cb])
    _same(native, ref)
    assert runs == [30, 30, 30, 10] and seen == [0, 1, 2, 3] * 2


def test_out_of_range_ids_raise_before_any_native_work(rng, monkeypatch):
    model = tabular_model()
    x = tabular(64, rng)
    x[1][5, 0] = 100
    called = []

    class Spy:  # the native object, counting predict calls
        def __init__(self, impl):
            self.impl = impl

        def __getattr__(self, name):
            if name == "predict":
                called.append(1)
            return getattr(self.impl, name)

    real_build = graph_fused.build_graph_forward

    def build(*a, **k):
        fwd = real_build(*a, **k)
        if fwd is not None and not isinstance(fwd.impl, Spy):
            fwd.impl = Spy(fwd.impl)
        return fwd

    monkeypatch.setattr(trainer_mod, "build_graph_forward", build)
    with pytest.raises(ValueError, match=r"id 100 at index \(5, 0\) is out of range \[0, 100\)"):
        model.predict(x, verbose=0)
    assert not called
    x[1][5, 0] = -1
    with pytest.raises(ValueError, match=r"out of range \[0, 100\)"):
        model.predict_on_batch(x)
    assert not called
    x[1][5, 0] = 3
    model.predict(x, verbose=0)
    assert called


def test_unsupported_layers_and_inputs_fall_back(rng, monkeypatch, runs):
    inp = keras.Input(shape=(8,))
    model = keras.Model(inp, L.Dense(2)(_Half()(L.Dense(4)(inp))))
    x = rng.standard_normal((40, 8)).astype(np.float32)
    assert graph_fused.build_graph_forward(model, [x]) is None
    model.predict(x, verbose=0)
    # Float ids into an Embedding: the layer's own conversion (layer by layer).
    ids = keras.Input(shape=(2,))
    model = keras.Model(ids, L.Flatten()(L.Embedding(10, 3)(ids)))
    out = model.predict(np.array([[1.0, 2.0]], np.float32), verbose=0)
    assert out.shape == (1, 6) and not runs


def test_native_predict_checks_its_arguments(rng):
    model = tabular_model()
    x = tabular(16, rng)
    fwd = graph_fused.build_graph_forward(model, x)
    assert fwd is not None
    impl = fwd.impl
    ids = [x[0], x[1], x[2].astype(np.int32)]
    out = np.empty((16, 2), np.float32)
    with pytest.raises(ValueError, match="expected 3 input arrays"):
        impl.predict(ids[:2], 16, 16, [out])
    with pytest.raises(TypeError, match="int32"):
        impl.predict([x[0], x[1], x[2]], 16, 16, [out])
    with pytest.raises(ValueError, match="elements"):
        impl.predict(ids, 17, 16, [out])
    with pytest.raises(ValueError, match="expected 1 output arrays"):
        impl.predict(ids, 16, 16, [out, out])
    with pytest.raises(ValueError, match="output 0 has 30 elements"):
        impl.predict(ids, 16, 16, [out[:15]])
    with pytest.raises(ValueError, match="pass rows"):
        impl.predict(ids, 16, 0, [out])
    with pytest.raises(RuntimeError, match="inference only"):
        impl.evaluate(ids, [np.zeros(16, np.int32)], [None], 8, [None])
    bad = [x[0], x[1].copy(), ids[2]]
    bad[1][3, 0] = 1000  # past the Python check: the kernel still never reads out of bounds
    with pytest.raises(IndexError, match="out of range"):
        impl.predict(bad, 16, 16, [out])
    # Several passes in one call have the bits of one call per pass.
    whole = np.empty((16, 2), np.float32)
    impl.predict(ids, 16, 5, [whole])
    parts = np.empty((16, 2), np.float32)
    for lo in range(0, 16, 5):
        impl.predict([a[lo:lo + 5] for a in ids], min(5, 16 - lo), 5, [parts[lo:lo + 5]])
    assert np.array_equal(whole, parts)
