"""Regularizers, constraints, initializers and the learning-rate callbacks against tf_keras 2.21 (and
Keras 3 for configs): same inputs, same numbers; configs cross over in both directions."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from interop.conftest import require

from fastckpt import constraints, initializers, keras, regularizers
from fastckpt.callbacks import LearningRateScheduler, ReduceLROnPlateau

TOL = 1e-5


@pytest.fixture
def w():
    rng = np.random.default_rng(7)
    return (rng.normal(size=(6, 4)) * 2).astype(np.float32)


REGULARIZERS = [("L1", {"l1": 0.3}), ("L2", {"l2": 0.2}), ("L1L2", {"l1": 0.1, "l2": 0.05}),
                ("L1L2", {}), ("OrthogonalRegularizer", {"factor": 0.4, "mode": "rows"}),
                ("OrthogonalRegularizer", {"factor": 0.4, "mode": "columns"})]


@pytest.mark.parametrize("name,kwargs", REGULARIZERS)
def test_penalty_gradient_and_config_match_tf_keras(tf, tfk, w, name, kwargs):
    theirs = getattr(tfk.regularizers, name)(**kwargs)
    ours = getattr(regularizers, name)(**kwargs)
    var = tf.Variable(w)
    with tf.GradientTape() as tape:
        penalty = theirs(var)
    grad_theirs = tape.gradient(penalty, var)
    assert ours(w) == pytest.approx(float(penalty), rel=TOL, abs=1e-7)
    grad = np.zeros_like(w)
    ours.add_gradient(w, grad)
    if grad_theirs is None:  # a zero penalty (L1L2 with its zero defaults)
        assert not grad.any()
    else:
        np.testing.assert_allclose(grad, grad_theirs.numpy(), rtol=TOL, atol=1e-6)
    assert ours.get_config() == theirs.get_config()


@pytest.mark.parametrize("ident", ["l1", "l2", "l1_l2"])
def test_string_regularizers_match_tf_keras(tfk, ident):
    theirs = tfk.regularizers.get(ident)
    ours = regularizers.get(ident)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == theirs.get_config()


CONSTRAINTS = [("MaxNorm", {"max_value": 1.5}), ("MaxNorm", {"max_value": 2, "axis": 1}),
               ("MinMaxNorm", {"min_value": 1.0, "max_value": 2.0, "rate": 0.7}),
               ("MinMaxNorm", {"axis": [0, 1]}), ("NonNeg", {}), ("UnitNorm", {}),
               ("UnitNorm", {"axis": 1})]


@pytest.mark.parametrize("name,kwargs", CONSTRAINTS)
def test_constraints_match_tf_keras(tf, tfk, w, name, kwargs):
    theirs = getattr(tfk.constraints, name)(**kwargs)
    ours = getattr(constraints, name)(**kwargs)
    np.testing.assert_allclose(ours(w), theirs(tf.constant(w)).numpy(), rtol=TOL, atol=1e-7)
    assert ours.get_config() == theirs.get_config()


INITIALIZERS = [("GlorotUniform", {}), ("GlorotNormal", {}), ("HeUniform", {}), ("HeNormal", {}),
                ("LecunUniform", {}), ("LecunNormal", {}),
                ("RandomNormal", {"mean": 0.5, "stddev": 0.2}),
                ("RandomUniform", {"minval": -0.3, "maxval": 0.7}),
                ("TruncatedNormal", {"mean": -0.1, "stddev": 0.3}),
                ("VarianceScaling", {"scale": 2.5, "mode": "fan_out", "distribution": "uniform"}),
                ("VarianceScaling", {"scale": 0.5, "mode": "fan_avg",
                                     "distribution": "truncated_normal"}),
                ("VarianceScaling", {"scale": 1.5, "distribution": "untruncated_normal"})]


@pytest.mark.parametrize("name,kwargs", INITIALIZERS)
def test_initializer_statistics_match_tf_keras(tfk, name, kwargs):
    shape = (3, 3, 48, 64)  # a conv kernel: fans include the receptive field
    theirs = np.asarray(getattr(tfk.initializers, name)(seed=11, **kwargs)(shape), np.float64)
    ours = getattr(initializers, name)(seed=11, **kwargs)(shape).astype(np.float64)
    assert ours.shape == theirs.shape and ours.dtype == np.float64
    spread = theirs.std()
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.02 * spread + 1e-9)
    assert ours.std() == pytest.approx(spread, rel=0.02)
    if name == "RandomNormal" or kwargs.get("distribution") == "untruncated_normal":
        return  # unbounded: the extremes are noise
    # Same support: the truncation / uniform bounds agree to 1 %.
    assert ours.min() == pytest.approx(theirs.min(), rel=0.01, abs=0.01 * spread)
    assert ours.max() == pytest.approx(theirs.max(), rel=0.01, abs=0.01 * spread)


@pytest.mark.parametrize("name,kwargs", INITIALIZERS)
def test_initializer_configs_match_tf_keras(tfk, name, kwargs):
    ours = getattr(initializers, name)(seed=11, **kwargs).get_config()
    assert ours == getattr(tfk.initializers, name)(seed=11, **kwargs).get_config()


@pytest.mark.parametrize("shape", [(5, 5), (4, 7), (7, 4), (2, 3, 6)])
def test_identity_constant_and_orthogonal_match_tf_keras(tfk, shape):
    if len(shape) == 2:
        np.testing.assert_array_equal(initializers.Identity(gain=1.5)(shape),
                                      tfk.initializers.Identity(gain=1.5)(shape).numpy())
    np.testing.assert_array_equal(initializers.Constant(0.25)(shape),
                                  tfk.initializers.Constant(0.25)(shape).numpy())
    np.testing.assert_array_equal(initializers.Ones()(shape), tfk.initializers.Ones()(shape).numpy())
    ours = initializers.Orthogonal(gain=2.0, seed=3)(shape).astype(np.float64)
    theirs = tfk.initializers.Orthogonal(gain=2.0, seed=3)(shape).numpy().astype(np.float64)
    flat_o, flat_t = ours.reshape(-1, shape[-1]), theirs.reshape(-1, shape[-1])
    gram = (lambda a: a.T @ a) if flat_o.shape[0] >= flat_o.shape[1] else (lambda a: a @ a.T)
    np.testing.assert_allclose(gram(flat_o), gram(flat_t), atol=1e-5)  # both 4 * I
    assert initializers.Orthogonal(2.0, 3).get_config() == tfk.initializers.Orthogonal(2.0, 3).get_config()


@pytest.mark.parametrize("name", ["glorot_uniform", "he_normal", "lecun_uniform", "orthogonal",
                                  "identity", "truncated_normal", "variance_scaling", "zeros",
                                  "ones", "constant", "random_uniform", "normal", "uniform"])
def test_initializer_names_match_tf_keras(tfk, name):
    theirs, ours = tfk.initializers.get(name), initializers.get(name)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.get_config() == theirs.get_config()


# --- configs in saved models ----------------------------------------------------------------------
def _ours_model():
    return keras.Sequential([
        keras.layers.Dense(6, activation="relu", input_shape=(5,),
                           kernel_regularizer=keras.regularizers.L2(0.02), bias_regularizer="l1",
                           activity_regularizer=keras.regularizers.L1L2(0.01, 0.03),
                           kernel_constraint=keras.constraints.MaxNorm(2.5, axis=0),
                           bias_constraint=keras.constraints.NonNeg(),
                           kernel_initializer=keras.initializers.VarianceScaling(
                               1.5, "fan_avg", "uniform", seed=4),
                           bias_initializer=keras.initializers.Constant(0.1)),
        keras.layers.Dense(3, kernel_constraint=keras.constraints.UnitNorm(axis=0),
                           kernel_initializer=keras.initializers.Orthogonal(seed=2)),
    ])


def _summary(layer_config):
    """The objects of a Dense config, as (class, config) pairs, whatever the dialect."""
    out = {}
    for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
                "kernel_constraint", "bias_constraint", "kernel_initializer", "bias_initializer"):
        v = layer_config.get(key)
        if v is not None:
            # tf_keras stores penalties as float32, Keras 3 as given: equal to float32 precision.
            cfg = {k: pytest.approx(val, rel=1e-7) if isinstance(val, float) else val
                   for k, val in v["config"].items()
                   if not (k in ("input_axes", "output_axes") and val is None)}
            out[key] = (v["class_name"], cfg)
    return out


def test_tf_keras_loads_our_h5_with_regularizers_and_constraints(tfk, tmp_path):
    model = _ours_model()
    path = str(tmp_path / "m.h5")
    model.save(path)
    theirs = tfk.models.load_model(path, compile=False)
    for a, b in zip(model.layers, theirs.layers):
        assert _summary(a.get_config()) == _summary(b.get_config())
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    dense = theirs.layers[0]
    assert isinstance(dense.kernel_regularizer, tfk.regularizers.L2)
    assert isinstance(dense.kernel_constraint, tfk.constraints.MaxNorm)


def test_keras3_loads_our_keras_archive_with_regularizers_and_constraints(k3, tmp_path):
    model = _ours_model()
    path = str(tmp_path / "m.keras")
    model.save(path)
    theirs = k3.models.load_model(path, compile=False)
    for a, b in zip(model.layers, theirs.layers):
        assert _summary(a.get_config()) == _summary(b.get_config())
    assert isinstance(theirs.layers[0].activity_regularizer, k3.regularizers.L1L2)
    assert isinstance(theirs.layers[1].kernel_constraint, k3.constraints.UnitNorm)


def _their_model(lib):
    return lib.Sequential([
        lib.Input((5,)),
        lib.layers.Dense(6, activation="relu", kernel_regularizer=lib.regularizers.L1L2(0.1, 0.2),
                         bias_regularizer="l2", activity_regularizer="l1",
                         kernel_constraint=lib.constraints.MinMaxNorm(0.5, 1.5, 0.9),
                         bias_constraint="non_neg",
                         kernel_initializer=lib.initializers.HeUniform(seed=5),
                         bias_initializer=lib.initializers.RandomNormal(0.1, 0.01, seed=1)),
        lib.layers.Dense(2, kernel_regularizer=lib.regularizers.OrthogonalRegularizer(0.3),
                         kernel_initializer=lib.initializers.TruncatedNormal(stddev=0.1, seed=2)),
    ])


@pytest.mark.parametrize("peer,suffix", [("tfk", ".h5"), ("k3", ".keras"), ("k3", ".h5")])
def test_we_load_their_files_with_regularizers_and_constraints(peer, suffix, request, tmp_path):
    lib = request.getfixturevalue(peer)
    theirs = _their_model(lib)
    path = str(tmp_path / ("m" + suffix))
    if peer == "k3" and suffix == ".h5":
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.save(path)
    else:
        theirs.save(path)
    ours = keras.models.load_model(path)
    for a, b in zip(ours.layers, theirs.layers):
        assert _summary(a.get_config()) == _summary(b.get_config())
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    dense = ours.layers[0]
    assert isinstance(dense.kernel.regularizer, regularizers.L1L2)
    assert isinstance(dense.kernel.constraint, constraints.MinMaxNorm)
    assert isinstance(dense.activity_regularizer, regularizers.L1)
    assert isinstance(ours.layers[1].kernel.regularizer, regularizers.OrthogonalRegularizer)


# --- learning-rate callbacks ----------------------------------------------------------------------
class _Holder:
    """A model stand-in: the callbacks only touch ``optimizer`` (and ``stop_training``)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.stop_training = False


def _their_lr(opt):
    return float(np.asarray(opt.learning_rate))


LOSSES = [1.0, 0.8, 0.79995, 0.8, 0.81, 0.7, 0.7, 0.7, 0.69, 0.71, 0.72, 0.73, 0.74, 0.75, 0.76]


@pytest.mark.parametrize("kwargs", [
    dict(factor=0.5, patience=2),
    dict(factor=0.2, patience=1, cooldown=2, min_lr=0.005),
    dict(factor=0.5, patience=1, min_delta=0.05),
    dict(factor=0.3, patience=0, cooldown=1),
    dict(monitor="val_acc", factor=0.5, patience=1),
    dict(factor=0.5, patience=1, mode="max"),
])
def test_reduce_lr_on_plateau_matches_tf_keras(tfk, kwargs):
    monitor = kwargs.setdefault("monitor", "val_loss")
    theirs_cb = tfk.callbacks.ReduceLROnPlateau(**kwargs)
    theirs_opt = tfk.optimizers.SGD(learning_rate=0.1)
    theirs_cb.set_model(_Holder(theirs_opt))
    ours_cb = ReduceLROnPlateau(**kwargs)
    ours_opt = keras.optimizers.SGD(learning_rate=0.1)
    ours_cb.set_model(_Holder(ours_opt))
    theirs_cb.on_train_begin()
    ours_cb.on_train_begin()
    for epoch, value in enumerate(LOSSES):
        logs_t, logs_o = {monitor: value}, {monitor: value}
        theirs_cb.on_epoch_end(epoch, logs_t)
        ours_cb.on_epoch_end(epoch, logs_o)
        assert logs_o["lr"] == pytest.approx(float(logs_t["lr"]), rel=1e-6)
        assert float(ours_opt.learning_rate) == pytest.approx(_their_lr(theirs_opt), rel=1e-6), epoch


@pytest.mark.parametrize("schedule", [
    lambda epoch, lr: lr * 0.9 if epoch > 1 else lr,
    lambda epoch: 0.05 * (0.5 ** epoch),
    lambda epoch, lr: float(np.float32(lr) * np.float32(0.7)),
])
def test_learning_rate_scheduler_matches_tf_keras(tfk, schedule):
    theirs_cb = tfk.callbacks.LearningRateScheduler(schedule)
    theirs_opt = tfk.optimizers.SGD(learning_rate=0.1)
    theirs_cb.set_model(_Holder(theirs_opt))
    ours_cb = LearningRateScheduler(schedule)
    ours_opt = keras.optimizers.SGD(learning_rate=0.1)
    ours_cb.set_model(_Holder(ours_opt))
    for epoch in range(6):
        theirs_cb.on_epoch_begin(epoch)
        ours_cb.on_epoch_begin(epoch)
        logs_t, logs_o = {"loss": 1.0}, {"loss": 1.0}  # tf_keras replaces an empty dict
        theirs_cb.on_epoch_end(epoch, logs_t)
        ours_cb.on_epoch_end(epoch, logs_o)
        assert logs_o["lr"] == pytest.approx(float(logs_t["lr"]), rel=1e-6)


# --- TensorBoard: the same runs, tags and steps as tf_keras writes ------------------------------
def _tb_runs(path):
    pea = require("tensorboard.backend.event_processing.plugin_event_accumulator")
    tensor_util = require("tensorboard.util.tensor_util")
    out = {}
    for run in sorted(os.listdir(path)):
        acc = pea.EventAccumulator(os.path.join(path, run))
        acc.Reload()
        plugins = {p: sorted(acc.PluginTagToContent(p)) for p in acc.ActivePlugins()}
        scalars = {t: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                       for e in acc.Tensors(t)] for t in plugins.get("scalars", [])}
        out[run] = (plugins, scalars)
    return out


def test_tensorboard_layout_matches_tf_keras(tfk, tmp_path):
    require("tensorboardX")
    rng = np.random.default_rng(5)
    x = rng.random((40, 5), dtype=np.float32)
    y = rng.integers(0, 3, 40)

    def build(lib):
        # Named, so each library's name counters (moved by other tests) do not matter.
        layers = ([lib.layers.Dense(6, activation="relu", input_shape=(5,), name="hidden")]
                  if lib is keras else
                  [lib.Input((5,)), lib.layers.Dense(6, activation="relu", name="hidden")])
        model = lib.Sequential(layers + [lib.layers.Dense(3, activation="softmax", name="out")])
        model.compile(optimizer=lib.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    ours, theirs = build(keras), build(tfk)
    ours.set_weights(theirs.get_weights())
    for lib, model, d in ((keras, ours, tmp_path / "ours"), (tfk, theirs, tmp_path / "theirs")):
        model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, shuffle=False, verbose=0,
                  callbacks=[lib.callbacks.TensorBoard(str(d), histogram_freq=1)])
    got, want = _tb_runs(tmp_path / "ours"), _tb_runs(tmp_path / "theirs")
    assert sorted(got) == sorted(want) == ["train", "validation"]
    for run in want:
        (plugins_o, scalars_o), (plugins_t, scalars_t) = got[run], want[run]
        assert {"epoch_loss", "epoch_accuracy"} <= set(scalars_t)
        assert set(plugins_t) <= set(plugins_o)
        for plugin in plugins_t:
            assert plugins_o[plugin] == sorted(set(plugins_o[plugin]))
            assert set(plugins_t[plugin]) <= set(plugins_o[plugin]), (run, plugin)
        for tag, points in scalars_t.items():
            assert [s for s, _ in scalars_o[tag]] == [s for s, _ in points], (run, tag)
            np.testing.assert_allclose([v for _, v in scalars_o[tag]], [v for _, v in points],
                                       rtol=1e-4, atol=1e-5, err_msg=f"{run}/{tag}")
    # Beyond tf_keras 2.21 (as Keras 3): the learning rate at every epoch.
    assert "hidden/kernel_0/histogram" in got["train"][0]["histograms"]
    assert [v for _, v in got["train"][1]["epoch_learning_rate"]] == pytest.approx([0.05, 0.05])
