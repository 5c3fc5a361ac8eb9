"""The Keras-shaped model API: build, summary, fit/evaluate/predict, determinism, bad input."""

import io
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

import fastckpt as tf
from fastckpt import keras


def tutorial_model(compile=True, from_logits=True, metrics=None):
    model = keras.Sequential([
        keras.layers.Dense(512, activation="relu", input_shape=(784,)),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(10),
    ])
    if compile:
        model.compile(optimizer="adam",
                      loss=tf.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                      metrics=metrics if metrics is not None else [tf.metrics.SparseCategoricalAccuracy()])
    return model


def data(rng, n=256, d=784, k=10):
    return rng.random((n, d), dtype=np.float32), rng.integers(0, k, n)


def test_summary_matches_keras_layout_and_counts():
    model = tutorial_model(compile=False)
    buf = io.StringIO()
    with redirect_stdout(buf):
        model.summary()
    text = buf.getvalue().splitlines()
    assert text[0] == 'Model: "sequential"'
    assert text[2] == "Layer (type)                 Output Shape              Param #   "
    assert text[4] == "dense (Dense)                (None, 512)               401920    "
    assert text[6] == "dropout (Dropout)            (None, 512)               0         "
    assert text[8] == "dense_1 (Dense)              (None, 10)                5130      "
    assert "Total params: 407,050" in text
    assert "Trainable params: 407,050" in text
    assert "Non-trainable params: 0" in text
    assert model.count_params() == 407050


def test_input_placeholder_and_add():
    model = keras.Sequential()
    model.add(keras.Input(shape=(784,)))
    model.add(keras.layers.Dense(8))
    assert model.input_shape == (None, 784) and model.output_shape == (None, 8)
    assert [w.shape for w in model.weights] == [(784, 8), (8,)]
    assert model.weights[0].name == "dense/kernel:0"


def test_unbuilt_summary_is_an_error():
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not yet been built"):
        model.summary()
    model.predict(np.zeros((2, 4)), verbose=0)  # builds lazily from data
    assert model.output_shape == (None, 3)


def test_fit_learns_and_reports_keras_logs(rng):
    x, y = data(rng)
    y = (x[:, :10].argmax(1))  # learnable labels
    model = tutorial_model(metrics=["accuracy"])
    hist = model.fit(x, y, epochs=8, batch_size=32, verbose=0, validation_split=0.25)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert hist.history["loss"][-1] < hist.history["loss"][0] * 0.7
    assert model.optimizer.iterations.numpy() == 8 * 6  # 192 training rows / 32
    assert model.history is hist


def test_evaluate_and_predict_agree_with_numpy_forward(rng):
    x, y = data(rng, n=100)
    model = tutorial_model()
    model.fit(x, y, epochs=1, verbose=0)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    logits = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    pred = model.predict(x, verbose=0)
    np.testing.assert_allclose(pred, logits, rtol=1e-4, atol=1e-4)
    loss, acc = model.evaluate(x, y, verbose=0)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    assert loss == pytest.approx(float(np.mean(lse - logits[np.arange(100), y])), rel=1e-5)
    assert acc == pytest.approx(float(np.mean(logits.argmax(1) == y)))
    assert model.evaluate(x, y, verbose=0, return_dict=True) == {
        "loss": loss, "sparse_categorical_accuracy": acc}


@pytest.mark.parametrize("batch_size", [32, 7, 300])
def test_grouped_passes_agree_with_batch_by_batch(rng, batch_size):
    """Without per-batch hooks, predict and evaluate run several batches per forward pass. BLAS may
    round another row count differently in the last bits, so outputs agree to float32 rounding,
    the accuracy exactly, and the loss (still summed batch by batch) to rounding; a callback with
    batch hooks forces the one-batch-at-a-time path."""
    x, y = data(rng, n=1000)
    model = tutorial_model(metrics=["accuracy"])
    model.fit(x[:64], y[:64], epochs=1, verbose=0)

    class Hooks(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            pass

        def on_test_batch_end(self, batch, logs=None):
            pass

    grouped = model.predict(x, batch_size=batch_size, verbose=0)
    one_by_one = model.predict(x, batch_size=batch_size, verbose=0, callbacks=[Hooks()])
    np.testing.assert_allclose(grouped, one_by_one, rtol=1e-5, atol=1e-6)
    loss_g, acc_g = model.evaluate(x, y, batch_size=batch_size, verbose=0)
    loss_b, acc_b = model.evaluate(x, y, batch_size=batch_size, verbose=0, callbacks=[Hooks()])
    assert acc_g == acc_b and loss_g == pytest.approx(loss_b, rel=1e-6)
    # The same call twice gives the same bits (what a restored model's report relies on).
    assert np.array_equal(grouped, model.predict(x, batch_size=batch_size, verbose=0))
    assert model.evaluate(x, y, batch_size=batch_size, verbose=0) == [loss_g, acc_g]


def test_one_step_matches_numpy_reference(rng):
    """A full training step (no dropout) against a float64 NumPy implementation of the math."""
    x, y = data(rng, n=32, d=20, k=5)
    model = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(20,)),
                              keras.layers.Dense(5, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    h_pre = x @ w1 + b1
    h = np.maximum(h_pre, 0)
    z = h @ w2 + b2
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dz = p.copy()
    dz[np.arange(32), y] -= 1
    dz /= 32
    grads = [x.T @ (dz @ w2.T * (h_pre > 0)), (dz @ w2.T * (h_pre > 0)).sum(0), h.T @ dz, dz.sum(0)]
    alpha = 0.01 * np.sqrt(1 - 0.999) / (1 - 0.9)
    for got, w, g in zip(model.get_weights(), (w1, b1, w2, b2), grads):
        m, v = 0.1 * g, 0.001 * g * g
        np.testing.assert_allclose(got, w - alpha * m / (np.sqrt(v) + 1e-7), atol=1e-5)


def test_same_seed_gives_bit_identical_weights(rng):
    x, y = data(rng)
    results = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        model = tutorial_model()
        model.fit(x, y, epochs=2, verbose=0, validation_split=0.1)
        results.append(model.get_weights())
    keras.utils.set_random_seed(8)
    other = tutorial_model()
    other.fit(x, y, epochs=2, verbose=0, validation_split=0.1)
    for a, b in zip(*results):
        assert np.array_equal(a, b)
    assert not np.array_equal(results[0][0], other.get_weights()[0])


def test_sgd_and_softmax_probability_loss_train(rng):
    x, y = data(rng, n=200, d=12, k=3)
    y = x[:, :3].argmax(1)
    model = keras.Sequential([keras.layers.Dense(32, activation="tanh", input_shape=(12,)),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9, nesterov=True),
                  loss="sparse_categorical_crossentropy", metrics=["acc"])
    hist = model.fit(x, y, epochs=30, verbose=0)
    assert hist.history["acc"][-1] > 0.8
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_custom_python_layer_trains_with_grad():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight("w", (input_shape[-1],), initializer="ones")

        def call(self, inputs, training=None):
            return inputs * self.w.value

        def grad(self, inputs, outputs, grad_outputs):
            return grad_outputs * self.w.value, [(grad_outputs * inputs).sum(0)]

    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = x.argmax(1)
    model = keras.Sequential([Scale(input_shape=(4,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.layers[0].w.numpy()
    model.fit(x, y, epochs=3, verbose=0)
    assert not np.array_equal(before, model.layers[0].w.numpy())


def test_python_layer_without_grad_explains():
    class Square(keras.layers.Layer):
        def call(self, inputs, training=None):
            return inputs * inputs

    model = keras.Sequential([Square(input_shape=(4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.predict(np.ones((3, 4)), verbose=0).shape == (3, 2)
    with pytest.raises(NotImplementedError, match="grad"):
        model.fit(np.ones((3, 4)), [0, 1, 0], verbose=0)


# --- bad input -------------------------------------------------------------------------------

def test_wrong_feature_count_names_both(rng):
    model = tutorial_model()
    with pytest.raises(ValueError, match=r"780.*784|784.*780"):
        model.fit(np.zeros((4, 780), np.float32), [0, 1, 2, 3], verbose=0)


def test_length_mismatch(rng):
    model = tutorial_model()
    with pytest.raises(ValueError, match="10 samples.*9 samples"):
        model.fit(np.zeros((10, 784)), np.zeros(9, int), verbose=0)


def test_label_out_of_range_is_named_and_nothing_changes(rng):
    x, y = data(rng, n=64)
    y[37] = 10
    model = tutorial_model()
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"label value of 10 \(index 37 of y\).*\[0, 10\)"):
        model.fit(x, y, verbose=0)
    after = model.get_weights()
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert np.array_equal(a, b)
    assert int(model.optimizer.iterations.numpy()) == 0
    y[37] = -1
    with pytest.raises(ValueError, match="label value of -1"):
        model.evaluate(x, y, verbose=0)


# Labels that a cast to int32 would wrap onto a valid class (2**32+1 -> 1, 2**63 -> 0).
WRAPPING_LABELS = [(np.int64, 2**32 + 1), (np.int64, -(2**32) + 3), (np.uint64, 2**63),
                   (np.uint32, 2**32 - 1), (np.float64, 2.0**32 + 1), (np.float32, 1e10)]


@pytest.mark.parametrize("dtype, value", WRAPPING_LABELS)
@pytest.mark.parametrize("fused", ["1", "0"])
def test_labels_are_range_checked_before_the_int32_cast(rng, monkeypatch, dtype, value, fused):
    monkeypatch.setenv("FASTCKPT_FUSED", fused)
    x, _ = data(rng, n=16)
    y = np.zeros(16, dtype)
    y[5] = value
    model = tutorial_model()
    before = model.get_weights()
    shown = repr(y[5].item())
    fragment = rf"label value of {re.escape(shown)} \(index 5 of y\) .*valid range of \[0, 10\)"
    with pytest.raises(ValueError, match=fragment):
        model.fit(x, y, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    with pytest.raises(ValueError, match=fragment):
        model.evaluate(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"index 5 of validation_data\[1\]"):
        model.fit(x, np.zeros(16, int), validation_data=(x, y), verbose=0)
    # Standalone loss and metric check the same way.
    logits = np.zeros((16, 10), np.float32)
    with pytest.raises(ValueError, match=r"valid range of \[0, 10\)"):
        tf.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    with pytest.raises(ValueError, match=r"valid range of \[0, 10\)"):
        tf.metrics.SparseCategoricalAccuracy().update_state(y, logits)


@pytest.mark.parametrize("value", [np.nan, np.inf, 2.5])
def test_non_integral_float_labels_are_refused(rng, value):
    x, _ = data(rng, n=8)
    y = np.zeros(8, np.float32)
    y[3] = value
    with pytest.raises(ValueError, match=r"integer class labels in y, got the non-integral value .* index 3"):
        tutorial_model().fit(x, y, verbose=0)


def test_large_valid_integer_labels_in_wide_dtypes_are_accepted(rng):
    x, y = data(rng, n=32)
    model = tutorial_model()
    ref = model.evaluate(x, y.astype(np.int32), verbose=0)
    for dtype in (np.int64, np.uint64, np.uint8, np.float64):
        assert model.evaluate(x, y.astype(dtype), verbose=0) == ref


def test_evaluate_on_no_data_raises_instead_of_reporting_zero_loss():
    # tf_keras 2.21 raises ValueError('Expected input data to be non-empty.') here.
    model = tutorial_model()
    with pytest.raises(ValueError, match=r"evaluate: expected input data to be non-empty, got x of shape \(0, 784\)"):
        model.evaluate(np.zeros((0, 784), np.float32), np.zeros(0, int), verbose=0)


def test_huge_batch_size_is_clamped_to_the_data(rng):
    x, y = data(rng, n=40)
    a, b = tutorial_model(), tutorial_model()
    b.set_weights(a.get_weights())
    b._set_rng_state(a._get_rng_state())  # the same dropout masks
    hist_a = a.fit(x, y, batch_size=40, epochs=2, shuffle=False, verbose=0)
    hist_b = b.fit(x, y, batch_size=2**31, epochs=2, shuffle=False, verbose=0)
    assert hist_a.history == hist_b.history
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb) and all(np.array_equal(p, q) for p, q in zip(wa, wb))
    assert b.evaluate(x, y, batch_size=2**31, verbose=0) == a.evaluate(x, y, batch_size=40, verbose=0)
    assert np.array_equal(b.predict(x, batch_size=2**31, verbose=0), a.predict(x, batch_size=40, verbose=0))


def test_wrong_rank_and_non_numeric():
    model = tutorial_model()
    with pytest.raises(ValueError, match="rank"):
        model.fit(np.zeros((4, 28, 28)), np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match="rank"):
        model.predict(np.zeros(784), verbose=0)
    with pytest.raises(TypeError, match="numeric"):
        model.fit(np.array([["a"] * 784] * 2), [0, 1], verbose=0)
    with pytest.raises(TypeError, match="numeric"):
        model.fit(np.zeros((2, 784)), ["a", "b"], verbose=0)


@pytest.mark.parametrize("bs", [0, -3])
def test_bad_batch_size(bs):
    model = tutorial_model()
    with pytest.raises(ValueError, match=f"batch_size > 0, got {bs}"):
        model.fit(np.zeros((4, 784)), np.zeros(4, int), batch_size=bs, verbose=0)


def test_bad_layer_arguments():
    with pytest.raises(ValueError, match="positive integer for units, got -5"):
        keras.layers.Dense(-5)
    with pytest.raises(TypeError, match="units"):
        keras.layers.Dense("ten")
    with pytest.raises(ValueError, match=r"rate in \[0, 1\), got 1.5"):
        keras.layers.Dropout(1.5)
    with pytest.raises(ValueError, match="Unknown activation"):
        keras.layers.Dense(3, activation="swishy")


def test_fit_before_compile_says_compile():
    model = tutorial_model(compile=False)
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((4, 784)), np.zeros(4, int), verbose=0)
    with pytest.raises(RuntimeError, match="compile"):
        model.evaluate(np.zeros((4, 784)), np.zeros(4, int), verbose=0)


def test_set_weights_checks_shapes():
    model = tutorial_model(compile=False)
    w = model.get_weights()
    w[1] = np.zeros(511)
    with pytest.raises(ValueError, match=r"dense/bias:0: expected shape \(512,\), got \(511,\)"):
        model.set_weights(w)


def test_version_and_config():
    assert tf.version.VERSION == tf.__version__
    cfg = tf.config.get_config()
    assert cfg["threads"] >= 1 and cfg["blas"]  # which provider: tests/test_kernels.py
    assert isinstance(cfg["openmp"], bool)


def test_thread_count_setting_round_trips():
    before = tf.get_num_threads()
    try:
        tf.set_num_threads(1)
        assert tf.get_num_threads() == 1
        with pytest.raises(ValueError):
            tf.set_num_threads(0)
    finally:
        tf.set_num_threads(before)


@pytest.mark.parametrize("opt", ["adam", "sgd_nesterov", "amsgrad"])
def test_fused_epochs_equal_layer_by_layer_bit_for_bit(rng, monkeypatch, opt):
    """The native whole-epoch loop runs the same kernels in the same order as the Python path."""
    x, y = data(rng, n=200)
    results = []
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(784,)),
                                  keras.layers.Dropout(0.3), keras.layers.Dense(32, activation="tanh"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.layers[2].trainable = False
        optimizer = {"adam": keras.optimizers.Adam(0.01),
                     "sgd_nesterov": keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                     "amsgrad": keras.optimizers.Adam(0.01, amsgrad=True)}[opt]
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hist = model.fit(x, y, batch_size=48, epochs=3, verbose=0, validation_split=0.2)
        results.append((model.get_weights(), [v.numpy() for v in model.optimizer.variables],
                        hist.history, model.layers[1].rng_offset))
    (w1, o1, h1, r1), (w2, o2, h2, r2) = results
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert all(np.array_equal(a, b) for a, b in zip(o1, o2))
    assert h1 == h2 and r1 == r2 > 0


@pytest.mark.parametrize("act", sorted(set(tf.ops.ACTIVATIONS) - {"linear"}))
def test_fused_epochs_equal_layer_by_layer_for_every_activation(rng, monkeypatch, act):
    """Every activation (those whose derivative needs the pre-activation too) trains bit for bit
    alike in the native whole-epoch loop and layer by layer."""
    x, y = data(rng, n=120, d=20, k=5)
    x -= 0.5
    results = []
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        keras.utils.set_random_seed(5)
        model = keras.Sequential([keras.layers.Dense(16, activation=act, input_shape=(20,)),
                                  keras.layers.Dropout(0.2), keras.layers.Dense(12, activation=act),
                                  keras.layers.Dense(5, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        hist = model.fit(x, y, batch_size=32, epochs=2, verbose=0, validation_split=0.25)
        results.append((model.get_weights(), hist.history))
    (w1, h1), (w2, h2) = results
    assert all(np.array_equal(a, b) for a, b in zip(w1, w2))
    assert h1 == h2 and np.isfinite(h1["loss"]).all()


def test_fused_loop_is_taken_for_new_activations(rng, monkeypatch):
    from fastckpt.training import trainer as trainer_mod
    calls = []
    real = trainer_mod.build_fused
    monkeypatch.setattr(trainer_mod, "build_fused",
                        lambda *a, **k: calls.append(real(*a, **k)) or calls[-1])
    x, y = data(rng, n=64, d=8, k=3)
    model = keras.Sequential([keras.layers.Dense(8, activation="gelu", input_shape=(8,)),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert calls and calls[-1] is not None


def test_checked_in_core_stub_matches_the_extension():
    import ast
    import os

    from fastckpt import _core
    stub = os.path.join(os.path.dirname(tf.__file__), "_core.pyi")
    if not os.path.exists(stub):  # installed wheels carry it; a bare build tree may not
        stub = os.path.join(os.path.dirname(__file__), "..", "fastckpt", "_core.pyi")
    tree = ast.parse(open(stub).read())
    declared = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)} - {"__all__"}
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert declared == public
