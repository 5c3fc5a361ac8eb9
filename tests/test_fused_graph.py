"""The native graph trainer (fastckpt/training/graph_fused.py, kernels/graph_trainer.cpp): whole
epochs of Functional graphs in C++, bit for bit as the layer-by-layer path (FASTCKPT_FUSED=0)."""

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.training import graph_fused, trainer as trainer_mod

L = keras.layers


class _Half(L.Layer):
    """A Python layer: no native step."""

    def call(self, inputs):
        return np.asarray(inputs, np.float32) * np.float32(0.5)

    def grad(self, inputs, outputs, grad_outputs):
        return grad_outputs * np.float32(0.5), []


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tabular_data(rng, n=300):
    num = rng.standard_normal((n, 8)).astype(np.float32)
    a = rng.integers(0, 100, (n, 1)).astype(np.int32)
    b = rng.integers(0, 50, (n, 1)).astype(np.int64)  # converted to int32 ids once
    y = ((num[:, 0] + (a[:, 0] % 3 == 0)) > 0.5).astype(np.int32)
    return [num, a, b], y


def tabular_model(logits: bool):
    """Issue 13's bench model: numeric features + two Embeddings -> Concatenate -> BN -> Dense x2."""
    num = keras.Input(shape=(8,), name="num")
    a = keras.Input(shape=(1,), dtype="int32", name="a")
    b = keras.Input(shape=(1,), dtype="int32", name="b")
    ea = L.Flatten()(L.Embedding(100, 4)(a))
    eb = L.Flatten()(L.Embedding(50, 3)(b))
    h = L.Concatenate()([num, ea, eb])
    h = L.BatchNormalization()(h)
    h = L.Dense(64, activation="relu")(h)
    out = L.Dense(2) if logits else L.Dense(2, activation="softmax")
    return keras.Model([num, a, b], out(h))


def mlp_model(width=256, d=20, k=10):
    inp = keras.Input(shape=(d,))
    h = L.Dense(width)(inp)
    h = L.LayerNormalization()(h)
    h = L.Activation("gelu")(h)
    h = L.Dropout(0.2)(h)
    return keras.Model(inp, L.Dense(k, activation="softmax")(h))


def shared_skip_model(d=12, k=4):
    """A layer called twice (shared weights), an Add skip, a Dense feeding two consumers, merges,
    Reshape + GlobalAveragePooling1D, and a Dropout whose call forces training=True."""
    x = keras.Input(shape=(d,))
    shared = L.Dense(d, activation="tanh", name="shared")
    h1 = shared(x)
    h2 = shared(L.Dense(d, activation="silu")(h1))
    s = L.Add()([h1, h2])
    m = L.Multiply()([s, L.Activation("sigmoid")(h1)])
    m = L.Maximum()([m, L.Subtract()([s, h2])])
    m = L.Average()([m, L.Minimum()([h1, s])])
    p = L.GlobalAveragePooling1D()(L.Reshape((3, d // 3))(m))
    c = L.Concatenate()([p, L.Dropout(0.3)(m, training=True), h2])
    c = L.LayerNormalization()(c)
    return keras.Model(x, L.Dense(k, activation="softmax")(c))


def _fit_both(monkeypatch, make, x, y, epochs=2, batch_size=64, optimizer=None, val=True,
              logits_loss=False, shuffle=True, loss=None, metrics=("accuracy",)):
    results = []
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        keras.utils.set_random_seed(3)
        model = make()
        opt = optimizer() if optimizer else keras.optimizers.Adam(0.01)
        lo = loss() if loss else keras.losses.SparseCategoricalCrossentropy(from_logits=logits_loss)
        model.compile(optimizer=opt, loss=lo, metrics=list(metrics))
        hist = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=shuffle,
                         validation_split=0.2 if val else 0.0)
        ev = model.evaluate(x, y, batch_size=batch_size, verbose=0)
        rng_state = [(lay.rng_seed, lay.rng_offset) for lay in model.layers
                     if hasattr(lay, "rng_offset")]
        results.append((model.get_weights(), [v.numpy() for v in model.optimizer.variables],
                        hist.history, ev, rng_state, model._trainer._fused))
    return results


def _assert_same(results):
    (w1, o1, h1, e1, r1, f1), (w2, o2, h2, e2, r2, f2) = results
    assert isinstance(f1, graph_fused.GraphFusedTrainer) and f2 is None
    assert len(w1) == len(w2)
    for a, b in zip(w1, w2):
        assert np.array_equal(a, b)
    for a, b in zip(o1, o2):
        assert np.array_equal(a, b)
    assert h1 == h2 and e1 == e2 and r1 == r2


@pytest.mark.parametrize("logits", [False, True])
def test_tabular_model_equals_layer_by_layer(rng, monkeypatch, logits):
    x, y = tabular_data(rng)
    res = _fit_both(monkeypatch, lambda: tabular_model(logits), x, y, logits_loss=logits)
    _assert_same(res)
    # BatchNorm's moving statistics moved (and are among the weights compared above).
    assert not np.array_equal(res[0][0][2 + 2], np.zeros(15, np.float32))


@pytest.mark.parametrize("opt", ["adam", "sgd_nesterov", "amsgrad"])
def test_layernorm_gelu_mlp_equals_layer_by_layer(rng, monkeypatch, opt):
    x = rng.standard_normal((250, 20)).astype(np.float32)
    y = rng.integers(0, 10, 250).astype(np.int32)
    make_opt = {"adam": lambda: keras.optimizers.Adam(0.01),
                "sgd_nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                "amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True)}[opt]
    res = _fit_both(monkeypatch, mlp_model, x, y, batch_size=48, optimizer=make_opt)
    _assert_same(res)
    assert res[0][4][0][1] > 0  # the dropout drew


def test_shared_layer_and_skip_equal_layer_by_layer(rng, monkeypatch):
    x = rng.standard_normal((200, 12)).astype(np.float32)
    y = rng.integers(0, 4, 200).astype(np.int32)
    res = _fit_both(monkeypatch, shared_skip_model, x, y, batch_size=32, epochs=3, shuffle=False)
    _assert_same(res)


def test_sequential_with_graph_layers_takes_the_graph_trainer(rng, monkeypatch):
    x = rng.standard_normal((130, 10)).astype(np.float32)
    y = rng.integers(0, 3, 130).astype(np.int32)

    def make():
        return keras.Sequential([L.Dense(16, activation="elu", input_shape=(10,)),
                                 L.BatchNormalization(), L.Dropout(0.1),
                                 L.Dense(3, activation="softmax")])

    _assert_same(_fit_both(monkeypatch, make, x, y, batch_size=32))


def test_frozen_layers_equal_layer_by_layer(rng, monkeypatch):
    x, y = tabular_data(rng, n=150)

    def make():
        model = tabular_model(False)
        for layer in model.layers:
            if isinstance(layer, (L.BatchNormalization, L.Embedding)) or layer.name.startswith("dense") \
                    and layer.units == 64:
                layer.trainable = False
        return model

    _assert_same(_fit_both(monkeypatch, make, x, y, batch_size=40))


def test_fused_graph_path_is_taken_and_unsupported_layers_fall_back(rng, monkeypatch):
    built = []
    real = trainer_mod.build_graph_fused
    monkeypatch.setattr(trainer_mod, "build_graph_fused",
                        lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    calls = []
    monkeypatch.setattr(graph_fused.GraphFusedTrainer, "train_steps",
                        lambda self, *a, _real=graph_fused.GraphFusedTrainer.train_steps:
                        calls.append(1) or _real(self, *a))
    x, y = tabular_data(rng, n=64)
    model = tabular_model(True)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert built and all(isinstance(b, graph_fused.GraphFusedTrainer) for b in built)
    assert len(calls) == 2  # one native call per epoch
    # A layer without a native step (a Python layer) falls back to the layer-by-layer path.
    built.clear()
    calls.clear()
    inp = keras.Input(shape=(8,))
    out = L.Dense(2, activation="softmax")(_Half()(L.Dense(4)(inp)))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[0], y, epochs=1, verbose=0)
    assert built == [None] and not calls


def test_out_of_range_ids_raise_the_layer_error_before_any_step(rng, monkeypatch):
    x, y = tabular_data(rng, n=64)
    x[1] = x[1].copy()
    x[1][5, 0] = 100
    model = tabular_model(False)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"id 100 at index \(5, 0\) is out of range \[0, 100\)"):
        model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    x[1][5, 0] = -1
    with pytest.raises(ValueError, match=r"out of range \[0, 100\)"):
        model.evaluate(x, y, verbose=0)


def test_native_graph_trainer_checks_its_arguments(rng, monkeypatch):
    x, y = tabular_data(rng, n=32)
    model = tabular_model(False)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    fused = model._trainer._fused
    impl = fused.impl
    ids = [x[0], x[1], x[2].astype(np.int32)]
    it = model.optimizer.iterations.value.reshape(1)
    with pytest.raises(ValueError, match="expected 3 input arrays"):
        impl.train_steps(ids[:2], [y], [None], None, 8, 0, 1, it, [None])
    with pytest.raises(TypeError, match="int32"):
        impl.train_steps([x[0], x[1].astype(np.int64), ids[2]], [y], [None], None, 8, 0, 1, it,
                          [None])
    with pytest.raises(ValueError, match="elements"):
        impl.train_steps([x[0][:10], ids[1], ids[2]], [y], [None], None, 8, 0, 1, it, [None])
    with pytest.raises(ValueError, match="order index out of range"):
        impl.train_steps(ids, [y], [None], np.full(32, 99, np.int64), 8, 0, 1, it, [None])
    with pytest.raises(ValueError, match="step range"):
        impl.train_steps(ids, [y], [None], None, 8, 0, 9, it, [None])
    bad = [x[0], x[1].copy(), ids[2]]
    bad[1][3, 0] = 1000  # past the Python check: the kernel still never reads out of bounds
    with pytest.raises(IndexError, match="out of range"):
        impl.evaluate(bad, [y], [None], 8, [None])


def test_step_by_step_native_calls_equal_layer_by_layer(rng, monkeypatch):
    """Batch hooks and a steps_per_epoch that cuts across passes: one native call per step."""
    x, y = tabular_data(rng, n=150)
    results = []
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        keras.utils.set_random_seed(4)
        model = tabular_model(False)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        seen = []
        cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs))
        hist = model.fit(x, y, batch_size=32, epochs=3, steps_per_epoch=7, verbose=0, callbacks=[cb])
        results.append((model.get_weights(), hist.history, seen, model._trainer._fused))
    (w1, h1, s1, f1), (w2, h2, s2, f2) = results
    assert isinstance(f1, graph_fused.GraphFusedTrainer) and f2 is None
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h1 == h2 and s1 == s2 and len(s1) == 21


# --- losses other than the sparse cross-entropy (dense_loss kernels) -------------------------------

def _head_model(units, activation, d=10, via_layer=False):
    """Dense -> BN -> Dense(units, activation); ``via_layer`` puts the activation in its own
    Activation layer (so the loss does not take it over: it reads probabilities)."""
    x = keras.Input(shape=(d,))
    h = L.BatchNormalization()(L.Dense(24, activation="relu")(x))
    h = L.Dropout(0.1)(h)
    if via_layer:
        return keras.Model(x, L.Activation(activation)(L.Dense(units)(h)))
    return keras.Model(x, L.Dense(units, activation=activation)(h))


BCE = keras.losses.BinaryCrossentropy
CCE = keras.losses.CategoricalCrossentropy

LOSS_CASES = {
    # name: (units, activation, via_layer, loss, metrics, targets)
    "bce_folded_sigmoid": (1, "sigmoid", False, lambda: BCE(), ["accuracy"], "binary"),
    "bce_from_logits_smoothing": (1, "linear", False, lambda: BCE(from_logits=True, label_smoothing=0.1),
                                  [keras.metrics.BinaryAccuracy(threshold=0.0)], "binary"),
    "bce_probabilities": (1, "sigmoid", True, lambda: BCE(), ["binary_accuracy"], "binary"),
    "bce_multilabel_no_metric": (3, "sigmoid", False, lambda: BCE(), [], "multilabel"),
    "cce_folded_softmax": (4, "softmax", False, lambda: CCE(), ["accuracy"], "onehot"),
    "cce_from_logits_smoothing": (4, "linear", False, lambda: CCE(from_logits=True, label_smoothing=0.2),
                                  ["categorical_accuracy"], "onehot"),
    "cce_probabilities": (4, "softmax", True, lambda: CCE(), ["accuracy"], "onehot"),
    "mse": (3, "linear", False, lambda: keras.losses.MeanSquaredError(), [], "regression"),
    "mae": (2, "tanh", False, lambda: keras.losses.MeanAbsoluteError(), [], "regression"),
}


def _targets(rng, kind, n, units, x):
    if kind == "binary":
        return (x[:, :1] + 0.3 * x[:, 1:2] > 0).astype(np.float32)
    if kind == "multilabel":
        return (x[:, :units] > 0).astype(np.float32)
    if kind == "onehot":
        return np.eye(units, dtype=np.float32)[rng.integers(0, units, n)]
    return (x[:, :units] * 0.5 + 0.1 * rng.standard_normal((n, units))).astype(np.float32)


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_dense_losses_and_their_metrics_equal_layer_by_layer(rng, monkeypatch, case):
    units, act, via_layer, loss, metrics, kind = LOSS_CASES[case]
    n = 230
    x = rng.standard_normal((n, 10)).astype(np.float32)
    y = _targets(rng, kind, n, units, x)
    res = _fit_both(monkeypatch, lambda: _head_model(units, act, via_layer=via_layer), x, y,
                    batch_size=32, loss=loss, metrics=metrics)
    _assert_same(res)
    hist = res[0][2]
    assert len(hist) == 2 * (1 + len(metrics))  # loss, metrics, and their val_ twins
    if metrics:
        name = [k for k in hist if k not in ("loss",) and not k.startswith("val_")][0]
        assert 0.0 < hist[name][-1] <= 1.0


def test_losses_and_metrics_without_a_native_kernel_fall_back(rng, monkeypatch):
    x = rng.standard_normal((64, 10)).astype(np.float32)
    y = (x[:, :3] * 0.5).astype(np.float32)
    # (Metrics without a native count run natively too: tests/test_graph_outputs.py.)
    for loss, metrics, units in ((keras.losses.Huber(), [], 3),
                                 (keras.losses.Huber(), ["mae"], 3)):
        model = _head_model(units, "sigmoid" if isinstance(loss, BCE) else "linear")
        model.compile(optimizer="adam", loss=loss, metrics=metrics)
        yy = (y > 0).astype(np.float32) if isinstance(loss, (BCE, CCE)) else y
        model.fit(x, yy, epochs=1, batch_size=16, verbose=0)
        assert model._trainer._fused is None, (loss, metrics)


# --- more layers: pooling, parametric activations, noise ---------------------------------------------

def more_layers_model(d=12, k=4):
    """GlobalMaxPooling1D, PReLU (per unit and with a shared axis), Softmax over the steps axis,
    ReLU with every parameter, LeakyReLU, ELU, and the three noise layers (one called with
    training=True, so it draws in evaluate too)."""
    x = keras.Input(shape=(d,))
    h = L.PReLU(alpha_initializer=keras.initializers.Constant(0.1))(L.Dense(24)(x))
    h = L.GaussianNoise(0.2)(h)
    r = L.Reshape((4, 6))(h)
    r = L.PReLU(shared_axes=[1], alpha_initializer=keras.initializers.Constant(0.3))(r)
    r = L.Softmax(axis=1)(r)
    p1 = L.GlobalMaxPooling1D()(r)
    p2 = L.GlobalAveragePooling1D()(L.Reshape((4, 6))(h))
    h2 = L.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.05)(L.Dense(16)(h))
    h2 = L.ELU(0.7)(L.LeakyReLU(0.2)(h2))
    h2 = L.AlphaDropout(0.2)(L.GaussianDropout(0.3)(h2))
    h3 = L.GaussianNoise(0.1)(L.Dense(8, activation="relu")(x), training=True)
    c = L.Concatenate()([p1, p2, h2, h3])
    return keras.Model(x, L.Dense(k, activation="softmax")(L.Softmax()(L.Dense(10)(c))))


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_more_layers_equal_layer_by_layer(rng, monkeypatch, opt):
    x = rng.standard_normal((210, 12)).astype(np.float32)
    y = rng.integers(0, 4, 210).astype(np.int32)
    make_opt = {"adam": lambda: keras.optimizers.Adam(0.01),
                "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9)}[opt]
    res = _fit_both(monkeypatch, more_layers_model, x, y, batch_size=32, optimizer=make_opt)
    _assert_same(res)
    offsets = [off for _, off in res[0][4]]
    assert len(offsets) == 4 and all(off > 0 for off in offsets)  # every noise layer drew


def test_resumed_noise_layers_continue_the_same_draws(rng, monkeypatch, tmp_path):
    """Two epochs in one fit equal one epoch, save, load, one more epoch: the random layers'
    counters travel with the weights."""
    x = rng.standard_normal((96, 12)).astype(np.float32)
    y = rng.integers(0, 4, 96).astype(np.int32)

    def make():
        keras.utils.set_random_seed(5)
        model = more_layers_model()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    whole = make()
    whole.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    assert isinstance(whole._trainer._fused, graph_fused.GraphFusedTrainer)
    first = make()
    first.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    first.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    resumed.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    assert all(np.array_equal(a, b) for a, b in zip(whole.get_weights(), resumed.get_weights()))


# --- Embedding(mask_zero=True) -------------------------------------------------------------------

def masked_model(vocab=30, steps=6):
    """Padded id sequences: Embedding(mask_zero) -> GaussianNoise -> ReLU -> GlobalAveragePooling1D
    (the mean over the non-zero ids), beside numeric features."""
    ids = keras.Input(shape=(steps,), dtype="int32", name="ids")
    num = keras.Input(shape=(3,), name="num")
    e = L.Embedding(vocab, 8, mask_zero=True)(ids)
    e = L.ReLU(negative_slope=0.1)(L.GaussianNoise(0.2)(e))
    h = L.Concatenate()([L.GlobalAveragePooling1D()(e), num])
    return keras.Model([ids, num], L.Dense(3, activation="softmax")(L.Dense(16, activation="relu")(h)))


def masked_data(rng, n=180, vocab=30, steps=6):
    ids = rng.integers(1, vocab, (n, steps)).astype(np.int32)
    lengths = rng.integers(1, steps + 1, n)
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0  # right padding, >= 1 real id per row
    num = rng.standard_normal((n, 3)).astype(np.float32)
    y = ((ids[:, 0] % 3 + (num[:, 0] > 0)) % 3).astype(np.int32)
    return [ids, num], y


def test_mask_zero_into_average_pooling_equals_layer_by_layer(rng, monkeypatch):
    x, y = masked_data(rng)
    res = _fit_both(monkeypatch, masked_model, x, y, batch_size=32)
    _assert_same(res)
    # The mask reached the pooling: the output depends on padded positions only through it.
    model = masked_model()
    padded = [x[0].copy(), x[1]]
    model_out = model.predict(padded, verbose=0)
    emb = model.layers[1] if isinstance(model.layers[1], L.Embedding) else \
        next(lay for lay in model.layers if isinstance(lay, L.Embedding))
    emb.embeddings.value[0] += 1.0  # the padding id's row: masked out everywhere
    assert np.array_equal(model.predict(padded, verbose=0), model_out)


def test_masks_the_native_loop_cannot_apply_fall_back(rng):
    x, y = masked_data(rng, n=40)
    ids = keras.Input(shape=(6,), dtype="int32")
    e = L.Embedding(30, 4, mask_zero=True)(ids)
    # (BatchNormalization, LayerNormalization and the merges under masks: tests/test_graph_layers.py)
    for head in (lambda t: L.GlobalAveragePooling1D()(L.Concatenate(axis=1)([t, t])),):
        model = keras.Model(ids, L.Dense(3, activation="softmax")(head(e)))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        model.fit(x[0], y, epochs=1, batch_size=16, verbose=0)
        assert model._trainer._fused is None
