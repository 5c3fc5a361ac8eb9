"""Public API that the training loop does not exercise: calling layers and models directly,
standalone losses and metrics, Sequential editing and configs, ``train.Checkpoint.save``, the
checkpoint reader, ``Variable`` updates, ``LoadStatus``, ``show_config`` and ``--version``.

Results are checked against NumPy references written from TensorFlow's documented semantics (the
numbers in comments were printed by tf_keras 2.21 for the same inputs).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

import fastckpt
import fastckpt as tf
from fastckpt import keras
from fastckpt.variables import Variable


def np_relu(x):
    return np.maximum(x, 0)


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_scce(labels, pred, from_logits):
    """tf.keras' sparse categorical cross-entropy per sample. Probabilities are clipped to
    [eps, 1 - eps] and renormalised (TF takes their log as logits of a softmax)."""
    pred = pred.astype(np.float64)
    if from_logits:
        logp = pred - pred.max(-1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    else:
        p = np.clip(pred, 1e-7, 1 - 1e-7)
        logp = np.log(p / p.sum(-1, keepdims=True))
    return -logp[np.arange(len(labels)), labels]


def same_arrays(xs, ys) -> bool:
    xs, ys = list(xs), list(ys)
    return len(xs) == len(ys) and all(np.array_equal(a, b) for a, b in zip(xs, ys))


def small_model(dropout=0.0):
    layers = [keras.layers.Dense(8, activation="relu", input_shape=(5,))]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(3))
    return keras.Sequential(layers)


# -- calling layers and models directly -----------------------------------------------------------------

@pytest.mark.parametrize("activation, ref", [("relu", np_relu), ("linear", lambda z: z),
                                             ("softmax", np_softmax), ("tanh", np.tanh),
                                             ("sigmoid", lambda z: 1 / (1 + np.exp(-z)))])
def test_dense_layer_call_matches_numpy(rng, activation, ref):
    layer = keras.layers.Dense(4, activation=activation)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = layer(x)
    assert layer.built and layer.kernel.shape == (3, 4) and layer.bias.shape == (4,)
    want = ref(x.astype(np.float64) @ layer.kernel.numpy() + layer.bias.numpy())
    assert y.shape == (6, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    # Extra leading axes are kept, as in tf.keras (Dense acts on the last axis).
    x3 = rng.standard_normal((2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x3), ref(x3.astype(np.float64) @ layer.kernel.numpy()
                                              + layer.bias.numpy()), rtol=1e-5, atol=1e-6)


def test_dense_layer_call_refuses_the_wrong_feature_count(rng):
    layer = keras.layers.Dense(4)
    layer(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        layer(np.zeros((2, 5), np.float32))


def test_dropout_layer_call(rng):
    layer = keras.layers.Dropout(0.25)
    x = rng.random((400, 50)).astype(np.float32) + 0.5
    assert np.array_equal(layer(x), x) and np.array_equal(layer(x, training=False), x)
    y = layer(x, training=True)
    kept = y != 0
    # Kept units are scaled by 1 / (1 - rate); about 75 % of 20 000 are kept.
    np.testing.assert_allclose(y[kept], x[kept] / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.02
    assert not np.array_equal(layer(x, training=True), y)  # a fresh mask per call


def test_model_call_equals_the_numpy_forward_pass_and_predict(rng):
    model = small_model(dropout=0.5)
    x = rng.standard_normal((7, 5)).astype(np.float32)
    out = model(x)
    (k1, b1), (k2, b2) = (model.layers[0].get_weights(), model.layers[2].get_weights())
    want = np_relu(x.astype(np.float64) @ k1 + b1) @ k2 + b2
    assert out.shape == (7, 3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), out, rtol=1e-6, atol=1e-6)
    assert np.array_equal(model(x, training=False), out)
    assert not np.allclose(model(x, training=True), out)  # dropout is on in training mode


def test_model_call_builds_an_unbuilt_model_and_checks_shapes(rng):
    model = keras.Sequential([keras.layers.Dense(2)])
    assert not model.built
    out = model(np.ones((3, 4), np.float32))
    assert model.built and model.input_shape == (None, 4) and out.shape == (3, 2)
    with pytest.raises(ValueError, match="feature count 5 != 4"):
        model(np.ones((3, 5), np.float32))


# -- losses ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("from_logits", [True, False])
def test_sparse_categorical_crossentropy_matches_the_reference(rng, from_logits):
    labels = rng.integers(0, 4, 9)
    pred = rng.standard_normal((9, 4)).astype(np.float32)
    if not from_logits:
        pred = np_softmax(pred).astype(np.float32)
    per = np_scce(labels, pred, from_logits)
    np.testing.assert_allclose(tf.losses.sparse_categorical_crossentropy(labels, pred, from_logits=from_logits),
                               per, rtol=1e-5, atol=1e-6)
    loss = tf.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    np.testing.assert_allclose(loss(labels, pred), per.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss(labels[:, None], pred), per.mean(), rtol=1e-5)  # (N, 1) labels
    w = rng.random(9)
    # sum_over_batch_size divides the weighted sum by the batch size, not by the weights' sum.
    np.testing.assert_allclose(loss(labels, pred, sample_weight=w), (per * w).sum() / 9, rtol=1e-5)
    for reduction, want in (("sum", per.sum()), ("none", per), ("sum_over_batch_size", per.mean())):
        got = tf.losses.SparseCategoricalCrossentropy(from_logits=from_logits, reduction=reduction)(labels, pred)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_crossentropy_on_unnormalised_and_zero_probabilities_as_tf_keras():
    p = np.array([[0.2, 0.2, 0.2], [0.5, 0.3, 0.9]], np.float32)
    per = tf.losses.sparse_categorical_crossentropy([0, 2], p)
    np.testing.assert_allclose(per, [1.0986123, 0.6359887], rtol=1e-5)  # tf_keras 2.21
    np.testing.assert_allclose(tf.losses.SparseCategoricalCrossentropy()([0], np.array([[0.0, 1.0]], np.float32)),
                               16.118095, rtol=1e-5)  # clipped at 1e-7, as tf_keras


def test_loss_get_serialize_deserialize_round_trip():
    for ident in ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy",
                  tf.losses.sparse_categorical_crossentropy):
        assert type(keras.losses.get(ident)) is tf.losses.SparseCategoricalCrossentropy
    loss = tf.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum", name="xent")
    assert keras.losses.get(loss) is loss
    config = keras.losses.serialize(loss)
    assert config == {"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy",
                      "config": {"reduction": "sum", "name": "xent", "from_logits": True, "ignore_class": None},
                      "registered_name": None}
    for back in (keras.losses.deserialize(config), keras.losses.get(config)):
        assert type(back) is tf.losses.SparseCategoricalCrossentropy
        assert (back.from_logits, back.reduction, back.name) == (True, "sum", "xent")
    # tf_keras' own serialization (with module/registered_name and a 'fn' entry) is read too.
    theirs = {"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy",
              "config": {"reduction": "auto", "name": "sparse_categorical_crossentropy", "from_logits": True,
                         "ignore_class": None, "fn": "sparse_categorical_crossentropy"},
              "registered_name": None}
    assert keras.losses.deserialize(theirs).from_logits is True


def test_loss_lookup_errors_are_typed():
    with pytest.raises(ValueError, match="Unknown loss 'hinge_loss'.*'hinge'"):
        keras.losses.get("hinge_loss")
    with pytest.raises(ValueError, match="Unknown loss class 'Hubber'"):
        keras.losses.deserialize({"class_name": "Hubber", "config": {}})
    with pytest.raises(TypeError, match="Expected a loss name"):
        keras.losses.get(3)
    with pytest.raises(ValueError, match="reduction"):
        tf.losses.SparseCategoricalCrossentropy(reduction="average")


# -- metrics --------------------------------------------------------------------------------------------

def test_sparse_categorical_accuracy_update_result_reset(rng):
    m = keras.metrics.SparseCategoricalAccuracy()
    assert m.name == "sparse_categorical_accuracy" and float(m.result()) == 0.0
    seen, right = 0, 0
    for n in (5, 11, 1):
        labels = rng.integers(0, 3, n)
        pred = rng.random((n, 3)).astype(np.float32)
        m.update_state(labels, pred)
        seen, right = seen + n, right + int((pred.argmax(1) == labels).sum())
        assert float(m.result()) == pytest.approx(right / seen)
    m.reset_state()
    assert float(m.result()) == 0.0
    # __call__ updates then returns the running result (tf_keras: 1.0 then 0.6666667).
    assert float(m([[1], [0]], np.array([[0.1, 0.9], [0.8, 0.2]]))) == 1.0
    assert float(m([0], [[0.0, 1.0]])) == pytest.approx(2 / 3)
    np.testing.assert_array_equal(tf.metrics.sparse_categorical_accuracy([1, 0], [[0.1, 0.9], [0.1, 0.9]]), [1, 0])


def test_mean_and_accuracy_metrics():
    mean = keras.metrics.Mean()
    mean.update_state([1, 2, 3], sample_weight=[1, 0, 1])
    assert float(mean.result()) == 2.0  # tf_keras: 2.0
    mean.update_state(8.0)
    assert float(mean.result()) == pytest.approx((1 + 3 + 8) / 3)
    mean.reset_state()
    assert float(mean.result()) == 0.0
    acc = keras.metrics.Accuracy()
    acc.update_state([[1], [2]], [[1], [3]])
    assert float(acc.result()) == 0.5  # tf_keras: 0.5


def test_metric_get_serialize_deserialize_round_trip():
    for name in ("accuracy", "acc"):
        m = keras.metrics.get(name, loss=keras.losses.SparseCategoricalCrossentropy())
        assert type(m) is keras.metrics.SparseCategoricalAccuracy and m.name == name
    assert type(keras.metrics.get("Mean")) is keras.metrics.Mean
    m = keras.metrics.SparseCategoricalAccuracy(name="top1")
    config = keras.metrics.serialize(m)
    assert config == {"module": "keras.metrics", "class_name": "SparseCategoricalAccuracy",
                      "config": {"name": "top1", "dtype": "float32"}, "registered_name": None}
    back = keras.metrics.deserialize(config)
    assert type(back) is keras.metrics.SparseCategoricalAccuracy and back.name == "top1"
    assert keras.metrics.get(config).name == "top1"
    with pytest.raises(ValueError, match="Unknown metric 'auc'"):
        keras.metrics.get("auc")
    with pytest.raises(ValueError, match="Unknown metric class 'AUCX'"):
        keras.metrics.deserialize({"class_name": "AUCX"})


# -- Sequential: pop, get_config, from_config -----------------------------------------------------------

def test_sequential_pop_updates_outputs_and_weights(rng):
    model = small_model(dropout=0.5)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    last = model.pop()
    assert isinstance(last, keras.layers.Dense) and last.units == 3
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Dropout"]
    assert model.output_shape == (None, 8)  # tf_keras: (None, 8), not the popped layer's
    assert len(model.weights) == 2 and model.count_params() == 5 * 8 + 8
    np.testing.assert_allclose(model.predict(x, verbose=0),
                               np_relu(x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy()),
                               rtol=1e-5, atol=1e-6)
    assert model(x).shape == (4, 8)
    model.add(keras.layers.Dense(2))
    assert model.output_shape == (None, 2) and model.predict(x, verbose=0).shape == (4, 2)
    model.pop()
    model.pop()
    model.pop()
    assert model.layers == []
    with pytest.raises(TypeError, match="There are no layers in the model"):
        model.pop()


def test_pop_then_fit_trains_the_remaining_stack(rng):
    model = small_model()
    model.add(keras.layers.Dense(7))
    model.compile("sgd", tf.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(rng.standard_normal((16, 5)), rng.integers(0, 7, 16), verbose=0)
    model.pop()
    model.compile("sgd", tf.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(rng.standard_normal((16, 5)), rng.integers(0, 3, 16), verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    with pytest.raises(ValueError, match=r"valid range of \[0, 3\)"):
        model.fit(rng.standard_normal((16, 5)), np.full(16, 6), verbose=0)


def test_sequential_config_round_trip(rng):
    model = small_model(dropout=0.3)
    config = model.get_config()
    assert config["name"] == model.name
    classes = [layer["class_name"] for layer in config["layers"]]
    assert classes == ["InputLayer", "Dense", "Dropout", "Dense"]
    dense = config["layers"][1]["config"]
    assert dense["units"] == 8 and dense["activation"] == "relu"
    assert config["layers"][2]["config"]["rate"] == 0.3
    keras.clear_session()  # fresh names: the clone reuses the saved ones
    clone = keras.Sequential.from_config(config)
    assert clone.get_config() == config
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    clone.set_weights(model.get_weights())
    x = rng.standard_normal((5, 5)).astype(np.float32)
    assert np.array_equal(clone.predict(x, verbose=0), model.predict(x, verbose=0))


# -- train.Checkpoint.save, CheckpointReader, LoadStatus ------------------------------------------------

def test_checkpoint_save_numbers_records_and_restores(tmp_path, rng):
    model = small_model()
    ckpt = tf.train.Checkpoint(model=model)
    prefix = str(tmp_path / "ckpt")
    first = ckpt.save(prefix)
    assert first == prefix + "-1" and tf.train.latest_checkpoint(str(tmp_path)) == first
    saved = model.get_weights()
    model.layers[0].kernel.assign_add(np.ones((5, 8), np.float32))
    second = ckpt.save(prefix)
    assert second == prefix + "-2" and tf.train.latest_checkpoint(str(tmp_path)) == second
    assert int(ckpt.save_counter.numpy()) == 2
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
                                            "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    # A fresh Checkpoint restores weights and the counter: its next save is -2 + 1.
    other = small_model()
    ck2 = tf.train.Checkpoint(model=other)
    ck2.restore(first).assert_consumed()
    assert same_arrays(other.get_weights(), saved) and int(ck2.save_counter.numpy()) == 1
    ck2.restore(tf.train.latest_checkpoint(str(tmp_path))).assert_consumed()
    assert same_arrays(other.get_weights(), model.get_weights())
    assert ck2.save(prefix) == prefix + "-3"


def test_checkpoint_reader_has_tensor_and_maps(tmp_path):
    model = small_model()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "c"))
    reader = tf.train.load_checkpoint(str(tmp_path))
    kernel = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    counter = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    assert reader.has_tensor(kernel) and reader.has_tensor(counter)
    assert not reader.has_tensor("model/layer_with_weights-0/kernel") and not reader.has_tensor("")
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    assert set(dtypes) == set(shapes) == {k for k, _ in tf.train.list_variables(path)}
    assert dtypes[kernel] == np.float32 and dtypes[counter] == np.int64
    assert dtypes["_CHECKPOINTABLE_OBJECT_GRAPH"] == np.dtype(object)  # a string tensor
    assert shapes[kernel] == [5, 8] and shapes[counter] == []
    assert all(reader.get_tensor(k).dtype == dtypes[k] for k in dtypes if dtypes[k] != object)
    np.testing.assert_array_equal(reader.get_tensor(kernel), model.layers[0].kernel.numpy())
    reader.close()


def test_load_status_methods(tmp_path, rng):
    model = small_model()
    model.compile("adam", tf.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(rng.random((4, 5)), [0, 1, 2, 0], verbose=0)  # the Adam slots exist and are saved
    prefix = str(tmp_path / "w")
    model.save_weights(prefix)
    # Everything matches: every assertion passes and returns the status (chainable).
    same = small_model()
    same.compile("adam", tf.losses.SparseCategoricalCrossentropy(from_logits=True))
    status = same.load_weights(prefix)
    assert status.assert_consumed() is status
    assert status.assert_existing_objects_matched() is status
    assert status.assert_nontrivial_match() is status and status.expect_partial() is status
    # A Checkpoint that holds only the model restores one that also holds the optimizer: the
    # optimizer's values are unused -> not consumed, but every live object matched.
    both = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "both"))
    part = tf.train.Checkpoint(model=small_model())
    st = part.restore(both)
    with pytest.raises(AssertionError, match="not fully consumed"):
        st.assert_consumed()
    assert st.assert_existing_objects_matched() is st and st.assert_nontrivial_match() is st
    assert st.expect_partial() is st
    # A live object with nothing in the file: existing objects did not match.
    extra = tf.train.Checkpoint(model=small_model(), step=Variable(np.int64(0), name="step"))
    st = extra.restore(tf.train.Checkpoint(model=model).save(str(tmp_path / "c")))
    with pytest.raises(AssertionError, match="step"):
        st.assert_existing_objects_matched()
    with pytest.raises(AssertionError):
        st.assert_consumed()


def test_restore_none_asserts_fail_as_in_tensorflow():
    status = tf.train.Checkpoint(model=small_model()).restore(None)
    for name in ("assert_consumed", "assert_existing_objects_matched", "assert_nontrivial_match"):
        with pytest.raises(AssertionError, match=r"No checkpoint specified \(save_path=None\)"):
            getattr(status, name)()
    assert status.expect_partial() is status


# -- Variable updates -----------------------------------------------------------------------------------

def test_variable_assign_add_and_sub():
    v = Variable(np.arange(6, dtype=np.float32).reshape(2, 3), name="v")
    assert v.assign_add(np.ones((2, 3))) is v
    np.testing.assert_array_equal(v.numpy(), np.arange(6).reshape(2, 3) + 1)
    v.assign_sub(np.full((2, 3), 0.5))
    np.testing.assert_array_equal(v.numpy(), np.arange(6).reshape(2, 3) + 0.5)
    assert v.dtype == np.float32
    n = Variable(np.int64(5), name="n")
    n.assign_add(1)
    n.assign_sub(np.int64(3))
    assert int(n) == 3 and n.dtype == np.int64
    i = Variable(np.zeros(2, np.int32), name="i")
    i.assign_add(np.array([1.5, 2.5]))  # cast to the variable's dtype, as tf.Variable does
    np.testing.assert_array_equal(i.numpy(), [1, 2])


@pytest.mark.parametrize("delta", [np.ones(3), 1.0, np.ones((3, 2)), np.ones((1, 2, 3))])
def test_variable_updates_refuse_other_shapes_like_tf(delta):
    """tf.Variable.assign_add rejects a (3,) or scalar update of a (2, 3) variable; broadcasting
    would silently add it to every row."""
    v = Variable(np.zeros((2, 3), np.float32), name="layer/kernel")
    for method in ("assign_add", "assign_sub"):
        with pytest.raises(ValueError, match=r"layer/kernel:0: expected a value of shape \(2, 3\), got"):
            getattr(v, method)(delta)
    assert not v.numpy().any()


# -- show_config and the CLI ----------------------------------------------------------------------------

def test_show_config_prints_every_field():
    buf = io.StringIO()
    with redirect_stdout(buf):
        tf.show_config()
    fields = dict(line.strip().split(": ", 1) for line in buf.getvalue().splitlines())
    cfg = fastckpt.config.get_config()
    assert set(fields) == set(cfg)
    assert fields["version"] == fastckpt.__version__ == fastckpt.version.VERSION
    assert fields["python"] == sys.version.split()[0]
    assert int(fields["threads"]) == tf.get_num_threads() >= 1


def test_cli_version_and_show_config(capsys):
    from fastckpt import cli
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == fastckpt.__version__ + "\n"
    assert cli.main(["--show-config"]) == 0
    assert f"version: {fastckpt.__version__}" in capsys.readouterr().out
    proc = subprocess.run([sys.executable, "-m", "fastckpt", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout == fastckpt.__version__ + "\n", proc.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", fastckpt.__version__)
