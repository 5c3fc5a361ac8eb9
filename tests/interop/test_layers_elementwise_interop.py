"""Activations and the elementwise / shape / merge / noise layers against tf_keras 2.21 (and
Keras 3 for files): outputs and input gradients on the same inputs and weights (<= 1e-5), configs
read by tf_keras, and whole models saved by one side and loaded by the other."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from interop.conftest import require

from fastckpt import activations, keras

TOL = 1e-5
L = keras.layers

NAMES = ["relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid",
         "hard_sigmoid", "tanh", "softplus", "softsign", "softmax", "log_softmax", "exponential",
         "linear", "mish"]


def _x(seed=0, shape=(6, 10), scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _close(ours, theirs, tol=TOL):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


def _tf_grad(tf, fn, x, g, extra=()):
    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = fn(xt)
        loss = tf.reduce_sum(y * g)
    grads = tape.gradient(loss, [xt, *extra])
    return [None if v is None else v.numpy() for v in grads]


@pytest.mark.parametrize("name", NAMES)
def test_activation_values_and_gradients_match_tf_keras(tfk, tf, name):
    x = _x(1)
    theirs = tfk.activations.get(name)(tf.constant(x)).numpy()
    ours = activations.get(name)(x)
    _close(ours, theirs, tol=TOL * (10 if name == "exponential" else 1))
    assert tfk.activations.serialize(tfk.activations.get(name)) in (name, "silu", "swish")
    # input gradient through an Activation layer (tf_keras: the same function)
    g = _x(2, scale=1.0)
    (want,) = _tf_grad(tf, tfk.activations.get(name), x, g)
    layer = L.Activation(name)
    layer.forward_train(x, training=True)
    _close(layer.backward(g), want, tol=1e-4 if name == "exponential" else TOL)


@pytest.mark.parametrize("name", ["hard_silu", "hard_swish", "log_sigmoid", "gelu", "silu", "mish",
                                  "relu6", "leaky_relu", "log_softmax"])
def test_keras3_activations_match(name):
    k3 = require("keras")
    x = _x(11)
    _close(activations.get(name)(x), np.asarray(k3.activations.get(name)(x)))


def test_gelu_approximate_and_parameterized_functions_match_tf_keras(tfk, tf):
    x = _x(3)
    xt = tf.constant(x)
    _close(activations.gelu(x, approximate=True), tfk.activations.gelu(xt, approximate=True))
    _close(activations.relu(x, alpha=0.1, max_value=2.0, threshold=0.5),
           tfk.activations.relu(xt, alpha=0.1, max_value=2.0, threshold=0.5))
    _close(activations.relu(x, max_value=6.0), tfk.activations.relu(xt, max_value=6.0))
    _close(activations.elu(x, alpha=0.5), tfk.activations.elu(xt, alpha=0.5))
    _close(activations.softmax(x, axis=0), tfk.activations.softmax(xt, axis=0))


@pytest.mark.parametrize("name", NAMES + ["gelu_approximate"])
def test_dense_with_each_activation_matches_tf_keras(tfk, tf, name):
    x = _x(4, (5, 7), scale=1.0)
    ours = L.Dense(6, activation=name)
    ours(x)
    rng = np.random.default_rng(5)
    weights = [rng.standard_normal((7, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)]
    ours.set_weights(weights)
    fn = ((lambda v: tfk.activations.gelu(v, approximate=True)) if name == "gelu_approximate"
          else name)
    theirs = tfk.layers.Dense(6, activation=fn)
    theirs(x)
    theirs.set_weights(weights)
    _close(ours(x), theirs(x).numpy())
    g = _x(6, (5, 6), scale=1.0)
    want_dx, want_dk, want_db = _tf_grad(tf, theirs, x, g, extra=theirs.trainable_weights)
    ours.forward_train(x, training=True)
    _close(ours.backward(g), want_dx, tol=1e-4)
    _close(ours._grad_buffers()[0], want_dk, tol=1e-4)
    _close(ours._grad_buffers()[1], want_db, tol=1e-4)


LAYERS = [
    ("ReLU", {}), ("ReLU", {"max_value": 1.5, "negative_slope": 0.2, "threshold": 0.5}),
    ("ReLU", {"max_value": 6.0}), ("LeakyReLU", {}), ("LeakyReLU", {"alpha": 0.05}),
    ("ELU", {}), ("ELU", {"alpha": 0.4}), ("Softmax", {}), ("Softmax", {"axis": 1}),
    ("Activation", {"activation": "gelu"}), ("Activation", {"activation": "hard_sigmoid"}),
    ("Flatten", {}), ("Flatten", {"data_format": "channels_first"}),
    ("Reshape", {"target_shape": (2, -1)}), ("Rescaling", {"scale": 0.25, "offset": -1.0}),
    ("PReLU", {}), ("PReLU", {"shared_axes": [1]}),
    ("GaussianNoise", {"stddev": 0.5}), ("GaussianDropout", {"rate": 0.3}),
    ("AlphaDropout", {"rate": 0.2}),
]


@pytest.mark.parametrize("cls_name, kwargs", LAYERS, ids=[f"{c}{i}" for i, (c, _) in enumerate(LAYERS)])
def test_layer_output_gradient_and_config_match_tf_keras(tfk, tf, cls_name, kwargs):
    x = _x(7, (4, 3, 4), scale=2.0)
    ours = getattr(L, cls_name)(**kwargs)
    ours(x)
    config = ours.get_config()
    theirs = tfk.layers.deserialize({"class_name": cls_name, "config": config})  # our config, read
    theirs(x)
    if cls_name == "PReLU":
        alpha = np.random.default_rng(8).uniform(0.1, 0.4, ours.alpha.shape).astype(np.float32)
        ours.set_weights([alpha])
        theirs.set_weights([alpha])
        assert [w.name for w in ours.weights] == [w.name.replace(theirs.name, ours.name)
                                                  for w in theirs.weights]
    _close(ours(x), theirs(x, training=False).numpy())
    back = getattr(L, cls_name).from_config(
        {k: v for k, v in theirs.get_config().items() if k != "name"})
    # tf_keras stores some numbers as float32 (0.2 -> 0.20000000298...): equal as float32
    assert {k: (np.float32(v) if isinstance(v, float) else v)
            for k, v in back.get_config().items() if k != "name"} == \
        {k: (np.float32(v) if isinstance(v, float) else v) for k, v in config.items() if k != "name"}
    if cls_name in ("GaussianNoise", "GaussianDropout", "AlphaDropout"):
        return  # random in training: the statistics are tested in test_layers_elementwise
    y = ours.forward_train(x, training=True)
    g = np.random.default_rng(9).standard_normal(y.shape).astype(np.float32)
    want = _tf_grad(tf, lambda v: theirs(v, training=True), x, g, extra=theirs.trainable_weights)
    _close(ours.backward(g), want[0])
    if cls_name == "PReLU":
        _close(ours._grad_buffers()[0], want[1], tol=1e-4)


MERGES = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"]


@pytest.mark.parametrize("cls_name", MERGES)
def test_merge_outputs_and_gradients_match_tf_keras(tfk, tf, cls_name):
    k = 2 if cls_name == "Subtract" else 3
    xs = [_x(10 + i, (4, 5)) for i in range(k)]
    if cls_name in ("Maximum", "Minimum"):
        xs[1][0, :2] = xs[0][0, :2]  # ties: the gradient goes where tf's goes
    ours = getattr(L, cls_name)()
    theirs = getattr(tfk.layers, cls_name)()
    _close(ours(xs), theirs([tf.constant(v) for v in xs]).numpy())
    y = ours.forward_train(xs, training=True)
    g = _x(20, y.shape, scale=1.0)
    vs = [tf.constant(v) for v in xs]
    with tf.GradientTape() as tape:
        for v in vs:
            tape.watch(v)
        loss = tf.reduce_sum(theirs(vs) * g)
    for d, want in zip(ours.backward(g), tape.gradient(loss, vs)):
        _close(d, want.numpy())


def _zoo(lib, tfk_side: bool, hard_sigmoid: bool = True):
    """A Sequential model with every layer of this slice (no Input in Keras 3 style lists)."""
    layers = lib.layers
    stack = [
        layers.Dense(16, input_shape=(8,)), layers.PReLU(),
        layers.Activation("gelu"), layers.Dense(16, activation="selu"),
        layers.ReLU(max_value=3.0), layers.Dense(16, activation="swish"), layers.LeakyReLU(alpha=0.1),
        layers.ELU(alpha=0.5), layers.Reshape((4, 4)), layers.Softmax(axis=1), layers.Flatten(),
        layers.Rescaling(2.0, offset=-0.5), layers.GaussianNoise(0.1), layers.GaussianDropout(0.1),
        layers.AlphaDropout(0.1), layers.Dense(8, activation="softplus"),
        layers.Dense(8, activation="hard_sigmoid" if hard_sigmoid else "softsign"),
        layers.Dense(3, activation="softmax"),
    ]
    return lib.Sequential(stack)


def test_tf_keras_loads_our_h5_and_we_load_theirs(tmp_path, tfk):
    x = _x(30, (32, 8), scale=1.0)
    y = (x[:, 0] > 0).astype(np.int64)
    ours = _zoo(keras, False)
    ours.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    ours.fit(x, y, epochs=2, batch_size=8, verbose=0)
    want = ours.predict(x, verbose=0)
    path = str(tmp_path / "ours.h5")
    ours.save(path)
    theirs = tfk.models.load_model(path)
    _close(theirs.predict(x, verbose=0), want)

    mirror = _zoo(tfk, True)
    mirror.build((None, 8))
    rng = np.random.default_rng(31)
    mirror.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3
                        for w in mirror.get_weights()])
    path2 = str(tmp_path / "theirs.h5")
    mirror.save(path2)
    back = keras.models.load_model(path2)
    _close(back.predict(x, verbose=0), mirror.predict(x, verbose=0))


def test_keras3_loads_our_keras_file(tmp_path):
    k3 = require("keras")
    x = _x(40, (16, 8), scale=1.0)
    ours = _zoo(keras, False, hard_sigmoid=False)  # Keras 3 redefined hard_sigmoid
    ours.build((None, 8)) if not ours.built else None
    want = ours.predict(x, verbose=0)
    path = str(tmp_path / "ours.keras")
    ours.save(path)
    theirs = k3.models.load_model(path)
    _close(theirs.predict(x, verbose=0), want)
    # .weights.h5 both ways
    theirs.set_weights([w * 0.5 for w in theirs.get_weights()])
    ours.save_weights(str(tmp_path / "ours.weights.h5"))
    theirs.load_weights(str(tmp_path / "ours.weights.h5"))
    _close(theirs.predict(x, verbose=0), want)
    theirs.set_weights([w * 0.5 for w in theirs.get_weights()])
    theirs.save_weights(str(tmp_path / "theirs.weights.h5"))
    ours.load_weights(str(tmp_path / "theirs.weights.h5"))
    _close(ours.predict(x, verbose=0), theirs.predict(x, verbose=0))


def test_tf_checkpoints_both_ways(tmp_path, tfk):
    """save_weights (TF checkpoint) of a model with PReLU and the weightless layers: tf_keras
    restores ours and we restore its, predictions equal."""
    x = _x(50, (16, 8), scale=1.0)
    ours = _zoo(keras, False)
    ours.build((None, 8)) if not ours.built else None
    rng = np.random.default_rng(51)
    ours.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in ours.get_weights()])
    ours.save_weights(str(tmp_path / "ours" / "ckpt"))
    theirs = _zoo(tfk, True)
    theirs.build((None, 8))
    theirs.load_weights(str(tmp_path / "ours" / "ckpt")).assert_existing_objects_matched()
    _close(theirs.predict(x, verbose=0), ours.predict(x, verbose=0))

    theirs.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3
                        for w in theirs.get_weights()])
    theirs.save_weights(str(tmp_path / "theirs" / "ckpt"))
    back = _zoo(keras, False)
    back.load_weights(str(tmp_path / "theirs" / "ckpt"))
    _close(back.predict(x, verbose=0), theirs.predict(x, verbose=0))
