"""Every optimizer and schedule against tf_keras 2.21: the same gradients give the same weights,
the checkpoint holds the same keys and shapes, and each side continues the other's state.

Versions pinned by CI: tensorflow-cpu 2.21.0, tf-keras 2.21.0.
"""

import os

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.variables import Variable
from interop.conftest import require

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TOL = 1e-5

# (name, class, kwargs): every optimizer and the option combinations that change its step.
CASES = [
    ("sgd", "SGD", dict(learning_rate=0.1)),
    ("sgd_momentum", "SGD", dict(learning_rate=0.05, momentum=0.9)),
    ("sgd_nesterov", "SGD", dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    ("rmsprop", "RMSprop", dict(learning_rate=0.01)),
    ("rmsprop_momentum_centered", "RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
    ("adagrad", "Adagrad", dict(learning_rate=0.1)),
    ("adadelta", "Adadelta", dict(learning_rate=1.0, rho=0.9)),
    ("adamax", "Adamax", dict(learning_rate=0.01)),
    ("nadam", "Nadam", dict(learning_rate=0.01)),
    ("adamw", "AdamW", dict(learning_rate=0.01)),
    ("adamw_amsgrad", "AdamW", dict(learning_rate=0.01, weight_decay=0.1, amsgrad=True)),
    ("adam", "Adam", dict(learning_rate=0.01)),
    ("adam_amsgrad", "Adam", dict(learning_rate=0.01, amsgrad=True)),
    ("ftrl", "Ftrl", dict(learning_rate=0.1)),
    ("ftrl_regularized", "Ftrl", dict(learning_rate=0.1, learning_rate_power=-0.7,
                                      l1_regularization_strength=0.01,
                                      l2_regularization_strength=0.02,
                                      l2_shrinkage_regularization_strength=0.03, beta=0.5)),
    ("lion", "Lion", dict(learning_rate=0.01)),
    ("adam_clipnorm", "Adam", dict(learning_rate=0.01, clipnorm=0.5)),
    ("sgd_clipvalue", "SGD", dict(learning_rate=0.1, clipvalue=0.3)),
    ("rmsprop_global_clipnorm", "RMSprop", dict(learning_rate=0.01, global_clipnorm=1.0)),
    ("sgd_weight_decay", "SGD", dict(learning_rate=0.1, momentum=0.9, weight_decay=0.05)),
    ("adam_ema", "Adam", dict(learning_rate=0.01, use_ema=True, ema_momentum=0.9)),
    ("sgd_ema_overwrite", "SGD", dict(learning_rate=0.1, use_ema=True, ema_momentum=0.5,
                                      ema_overwrite_frequency=2)),
    ("nadam_schedule", "Nadam", dict(learning_rate=("ExponentialDecay", dict(
        initial_learning_rate=0.02, decay_steps=2, decay_rate=0.5)))),
]

SCHEDULES = [
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.8)),
    ("ExponentialDecay", dict(initial_learning_rate=0.1, decay_steps=7, decay_rate=0.8, staircase=True)),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5)),
    ("InverseTimeDecay", dict(initial_learning_rate=0.1, decay_steps=5, decay_rate=0.5, staircase=True)),
    ("PiecewiseConstantDecay", dict(boundaries=[3, 10, 20], values=[1.0, 0.5, 0.1, 0.01])),
    ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=12)),
    ("PolynomialDecay", dict(initial_learning_rate=0.1, decay_steps=12, end_learning_rate=0.01,
                             power=2.0, cycle=True)),
    ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=20)),
    ("CosineDecay", dict(initial_learning_rate=0.1, decay_steps=20, alpha=0.1)),
    ("CosineDecay", dict(initial_learning_rate=0.0, decay_steps=20, alpha=0.1, warmup_target=0.2,
                         warmup_steps=5)),
    ("CosineDecayRestarts", dict(initial_learning_rate=0.1, first_decay_steps=4)),
    ("CosineDecayRestarts", dict(initial_learning_rate=0.1, first_decay_steps=4, t_mul=1.0,
                                 m_mul=0.5, alpha=0.05)),
]


def make(lib, cls, kwargs):
    kwargs = dict(kwargs)
    lr = kwargs.get("learning_rate")
    if isinstance(lr, tuple):
        kwargs["learning_rate"] = getattr(lib.optimizers.schedules, lr[0])(**lr[1])
    return getattr(lib.optimizers, cls)(**kwargs)


def grads(step, shapes):
    rng = np.random.default_rng(100 + step)
    return [rng.standard_normal(s).astype(np.float32) * 0.7 for s in shapes]


SHAPES = [(3, 4), (4,), (1000,)]


def run_pair(tfk, cls, kwargs, steps=5):
    import tensorflow as tf
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    ours_vars = [Variable(v.copy(), name=f"w{i}") for i, v in enumerate(init)]
    theirs_vars = [tf.Variable(v.copy(), name=f"w{i}") for i, v in enumerate(init)]
    ours, theirs = make(keras, cls, kwargs), make(tfk, cls, kwargs)
    for step in range(steps):
        g = grads(step, SHAPES)
        ours.apply_gradients(zip(g, ours_vars))
        theirs.apply_gradients(zip([tf.constant(x) for x in g], theirs_vars))
    return ours, theirs, ours_vars, theirs_vars, init


@pytest.mark.parametrize("tag,cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_five_steps_match_tf_keras(tfk, tag, cls, kwargs):
    ours, theirs, ov, tv, init = run_pair(tfk, cls, kwargs)
    for a, b, w0 in zip(ov, tv, init):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=TOL, atol=TOL, err_msg=tag)
        assert np.abs(a.numpy() - w0).max() > 100 * TOL  # the step moved something
    assert int(ours.iterations.numpy()) == int(theirs.iterations.numpy()) == 5
    ours_state = [v.numpy() for v in ours.variables]
    their_state = [v.numpy() for v in theirs.variables]
    assert [np.shape(v) for v in ours_state] == [np.shape(v) for v in their_state]
    n_avg = len(SHAPES) if kwargs.get("use_ema") else 0
    for i, (a, b) in enumerate(zip(ours_state[1:], their_state[1:])):
        if cls == "SGD" and not kwargs.get("momentum") and i >= n_avg:
            # momentum 0: tf_keras stores the last -lr * g in m, which it never reads back
            assert not a.any()
            continue
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=f"{tag} variable {i + 1}")
    np.testing.assert_allclose(float(ours.learning_rate), float(theirs.learning_rate), rtol=1e-6)
    if cls == "Nadam":
        np.testing.assert_allclose(ours._u_product.numpy(), theirs._u_product.numpy(), rtol=1e-6)


@pytest.mark.parametrize("tag,cls,kwargs", [c for c in CASES if c[2].get("use_ema")],
                         ids=[c[0] for c in CASES if c[2].get("use_ema")])
def test_finalize_variable_values_matches(tfk, tag, cls, kwargs):
    ours, theirs, ov, tv, _ = run_pair(tfk, cls, kwargs)
    ours.finalize_variable_values(ov)
    theirs.finalize_variable_values(tv)
    for a, b in zip(ov, tv):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cls,kwargs", SCHEDULES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(SCHEDULES)])
def test_schedules_match_tf_keras(tfk, cls, kwargs):
    ours = getattr(keras.optimizers.schedules, cls)(**kwargs)
    theirs = getattr(tfk.optimizers.schedules, cls)(**kwargs)
    for step in (0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 19, 20, 25, 40, 100):
        np.testing.assert_allclose(float(ours(step)), float(theirs(step)), rtol=1e-6, atol=1e-8,
                                   err_msg=f"{cls} at step {step}")
    assert ours.get_config() == theirs.get_config()
    assert keras.optimizers.schedules.serialize(ours) == tfk.optimizers.schedules.serialize(theirs)
    back = tfk.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(ours))
    assert back.get_config() == theirs.get_config()


@pytest.mark.parametrize("tag,cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_config_keys_match_and_tf_keras_builds_ours(tfk, tag, cls, kwargs):
    ours, theirs = make(keras, cls, kwargs), make(tfk, cls, kwargs)
    oc, tc = ours.get_config(), theirs.get_config()
    assert list(oc) == list(tc)
    for k in oc:
        if k == "learning_rate" and not isinstance(oc[k], dict):
            assert oc[k] == pytest.approx(float(tc[k]))
        else:
            assert oc[k] == tc[k], k
    entry = keras.optimizers.serialize(ours)
    if cls == "Lion":  # tf_keras 2.21's deserialize table has no Lion: build it by class
        rebuilt = tfk.optimizers.Lion.from_config(entry["config"])
    else:
        rebuilt = tfk.optimizers.deserialize(entry)
    assert rebuilt.get_config() == tc
    mine = keras.optimizers.deserialize(tfk.optimizers.serialize(theirs))
    assert mine.get_config() == oc


def _models(tfk):
    ours = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                             keras.layers.Dense(2)])
    theirs = tfk.Sequential([tfk.layers.Dense(3, activation="relu", input_shape=(4,)),
                             tfk.layers.Dense(2)])
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def _train_tf(theirs, steps):
    """Eager steps on fixed gradients (tf_keras' fit traces Nadam's u_product cache wrongly)."""
    import tensorflow as tf
    for s in range(steps):
        g = grads(s, [tuple(w.shape) for w in theirs.trainable_weights])
        theirs.optimizer.apply_gradients(zip([tf.constant(x) for x in g], theirs.trainable_weights))


def _train_ours(ours, steps, start=0):
    for s in range(start, start + steps):
        g = grads(s, [w.shape for w in ours.trainable_weights])
        ours.optimizer.apply_gradients(zip(g, ours.trainable_weights))


@pytest.mark.parametrize("tag,cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_checkpoint_keys_and_state_cross_load(tfk, tmp_path, tag, cls, kwargs):
    import tensorflow as tf
    ours, theirs = _models(tfk)
    ours.compile(make(keras, cls, kwargs), "sparse_categorical_crossentropy")
    theirs.compile(make(tfk, cls, kwargs), "mse")
    theirs.optimizer.build(theirs.trainable_weights)
    _train_tf(theirs, 3)
    _train_ours(ours, 3)
    ours.save_weights(str(tmp_path / "ours" / "ckpt"))
    theirs.save_weights(str(tmp_path / "theirs" / "ckpt"))

    def opt_keys(prefix):
        r = tf.train.load_checkpoint(prefix)
        return {k: tuple(s) for k, s in r.get_variable_to_shape_map().items() if k.startswith("optimizer/")}

    assert opt_keys(str(tmp_path / "ours" / "ckpt")) == opt_keys(str(tmp_path / "theirs" / "ckpt"))

    # We load tf_keras' state (weights, iterations, slots) and continue exactly as it does.
    mine, _ = _models(tfk)
    mine.compile(make(keras, cls, kwargs), "sparse_categorical_crossentropy")
    mine.load_weights(str(tmp_path / "theirs" / "ckpt"))
    assert int(mine.optimizer.iterations.numpy()) == 3
    _train_ours(mine, 2, start=3)
    _train_tf(theirs, 0)
    import tensorflow as tf  # noqa: F811
    for s in range(3, 5):
        g = grads(s, [tuple(w.shape) for w in theirs.trainable_weights])
        theirs.optimizer.apply_gradients(zip([tf.constant(x) for x in g], theirs.trainable_weights))
    for a, b in zip(mine.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=tag)

    # tf_keras loads ours.
    back = tfk.Sequential([tfk.layers.Dense(3, activation="relu", input_shape=(4,)),
                           tfk.layers.Dense(2)])
    back.compile(make(tfk, cls, kwargs), "mse")
    back.optimizer.build(back.trainable_weights)
    back.load_weights(str(tmp_path / "ours" / "ckpt")).assert_existing_objects_matched()
    assert int(back.optimizer.iterations.numpy()) == 3
    for a, b in zip(ours.optimizer.variables[1:], back.optimizer.variables[1:]):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


K3_NAMES = ["SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "AdamW", "Adamax", "Nadam", "Ftrl", "Lion"]


@pytest.mark.parametrize("cls", K3_NAMES)
def test_keras3_archives_carry_optimizer_state_both_ways(tmp_path, cls):
    """Keras 3 orders some optimizers' variables differently (no SGD momentum slots at momentum 0,
    Nadam's u_product in the list): .keras archives use its layout both ways."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    require("tensorflow")
    k3 = require("keras")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), np.arange(16) % 3

    theirs = k3.Sequential([k3.Input((4,)), k3.layers.Dense(3)])
    theirs.compile(getattr(k3.optimizers, cls)(), "sparse_categorical_crossentropy")
    theirs.fit(x, y, epochs=1, batch_size=8, verbose=0)
    theirs.save(str(tmp_path / "k3.keras"))
    mine = keras.models.load_model(str(tmp_path / "k3.keras"))
    assert type(mine.optimizer).__name__ == cls
    assert int(mine.optimizer.iterations.numpy()) == 2
    want = [np.asarray(v.numpy()) for v in theirs.optimizer.variables]
    got = [v.numpy() for v in mine.optimizer._keras3_variables()]
    assert len(got) + 1 == len(want)
    for a, b in zip(got[1:], want[2:]):
        np.testing.assert_array_equal(a, b)

    ours = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    ours.compile(getattr(keras.optimizers, cls)(
        learning_rate=keras.optimizers.schedules.ExponentialDecay(0.01, 3, 0.5)),
        "sparse_categorical_crossentropy")
    ours.fit(x, y, epochs=1, batch_size=8, verbose=0)
    ours.save(str(tmp_path / "ours.keras"))
    back = k3.models.load_model(str(tmp_path / "ours.keras"))
    assert int(back.optimizer.iterations.numpy()) == 2
    assert type(back.optimizer.learning_rate).__name__ != "float"
    got = [np.asarray(v.numpy()) for v in back.optimizer.variables]
    mine = [v.numpy() for v in ours.optimizer._keras3_variables()]
    assert len(got) == len(mine)  # with a schedule Keras 3 keeps no learning-rate variable
    for a, b in zip(got[1:], mine[1:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cls", K3_NAMES)
def test_h5_optimizer_with_ema_and_schedule_crosses_tf_keras(tmp_path, cls):
    """model.save('.h5'): tf_keras rebuilds our optimizer (class, EMA, schedule) with its state,
    and we rebuild tf_keras'."""
    tfk = require("tf_keras")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), np.arange(16) % 3
    ours = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    ours.compile(getattr(keras.optimizers, cls)(
        use_ema=True, learning_rate=keras.optimizers.schedules.CosineDecay(0.01, 10)),
        "sparse_categorical_crossentropy")
    ours.fit(x, y, epochs=1, batch_size=8, verbose=0)
    ours.save(str(tmp_path / "ours.h5"))
    back = tfk.models.load_model(str(tmp_path / "ours.h5"))
    assert type(back.optimizer).__name__ == cls and back.optimizer.use_ema
    assert type(back.optimizer._learning_rate).__name__ == "CosineDecay"
    assert len(back.optimizer.variables) == len(ours.optimizer.variables)
    for a, b in zip(ours.optimizer.variables, back.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    theirs = tfk.Sequential([tfk.layers.Dense(3, input_shape=(4,))])
    theirs.compile(getattr(tfk.optimizers, cls)(use_ema=True), "sparse_categorical_crossentropy")
    theirs.fit(x, y, epochs=1, batch_size=8, verbose=0)
    theirs.save(str(tmp_path / "theirs.h5"))
    mine = keras.models.load_model(str(tmp_path / "theirs.h5"))
    assert type(mine.optimizer).__name__ == cls and mine.optimizer.use_ema
    assert int(mine.optimizer.iterations.numpy()) == 2
    for a, b in zip(mine.optimizer.variables, theirs.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
