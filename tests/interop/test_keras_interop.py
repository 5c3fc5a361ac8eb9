"""Real tf_keras 2.21 and Keras 3.15 read fastckpt's Keras files, and fastckpt reads theirs.

Each direction checks predictions (max |diff| <= 1e-5), ``evaluate`` numbers, and optimizer
iterations/slots where the format carries them. Skipped locally without the peers; CI sets
FASTCKPT_REQUIRE_INTEROP=1 so a missing peer fails instead.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest


from fastckpt import keras
from fastckpt.errors import UnsafeFileError
from fastckpt.saving.keras_v3 import (load_model_keras, load_weights_keras3, save_model_keras,
                                      save_weights_keras3)
from fastckpt.saving.legacy_h5 import (load_model_h5, load_weights_h5, save_model_h5,
                                       save_weights_h5)

TOL = 1e-5


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    x = rng.random((256, 784), dtype=np.float32)
    return x, x[:, :10].argmax(1).astype(np.int64)


def tutorial(lib, compile=True):
    """The tutorial's create_model() in fastckpt, tf_keras or Keras 3."""
    if lib is keras:
        layers = [lib.layers.Dense(512, activation="relu", input_shape=(784,))]
    else:
        layers = [lib.Input((784,)), lib.layers.Dense(512, activation="relu")]
    model = lib.Sequential(layers + [lib.layers.Dropout(0.2),
                                     lib.layers.Dense(10, activation="softmax")])
    if compile:
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    return model


@pytest.fixture
def ours(data):
    model = tutorial(keras)
    model.fit(*data, epochs=2, batch_size=32, verbose=0)
    return model


def close_evaluate(a, b):
    la, lb = dict(a), dict(b)
    assert set(la) == set(lb) == {"loss", "accuracy"}
    assert la["loss"] == pytest.approx(lb["loss"], rel=TOL, abs=TOL)
    assert la["accuracy"] == pytest.approx(lb["accuracy"], abs=1e-6)


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def assert_same_outputs(a, b, x, y=None):
    """a and b predict the same on x (within TOL); given labels y, they also evaluate the same."""
    assert max_diff(a.predict(x, verbose=0), b.predict(x, verbose=0)) <= TOL
    if y is not None:
        close_evaluate(a.evaluate(x, y, verbose=0, return_dict=True),
                       b.evaluate(x, y, verbose=0, return_dict=True))


def their_slots(model, skip):
    return [np.asarray(v) for v in model.optimizer.variables[skip:]]


def assert_slots(ours_model, theirs, skip):
    mine = [v.value for v in ours_model.optimizer.variables[1:]]
    other = their_slots(theirs, skip)
    assert len(mine) == len(other) == 8
    for a, b in zip(mine, other):
        np.testing.assert_array_equal(a, b)


# --- they read ours -----------------------------------------------------------------------------
def test_tf_keras_loads_our_h5_with_optimizer_state(tfk, ours, data, tmp_path):
    path = str(tmp_path / "my_model.h5")
    save_model_h5(ours, path)
    theirs = tfk.models.load_model(path)
    x, y = data
    assert_same_outputs(theirs, ours, x, y)
    assert int(theirs.optimizer.iterations.numpy()) == 16
    assert_slots(ours, theirs, skip=1)
    assert [l.name for l in theirs.layers] == ["dense", "dropout", "dense_1"]


def test_keras3_loads_our_h5(k3, ours, data, tmp_path):
    path = str(tmp_path / "my_model.h5")
    save_model_h5(ours, path)
    theirs = k3.models.load_model(path)
    x, y = data
    assert_same_outputs(theirs, ours, x, y)
    # Keras 3 restores only the iteration count from any legacy .h5.
    assert int(theirs.optimizer.iterations.numpy()) == 16


def test_keras3_loads_our_keras_archive_with_optimizer_state(k3, ours, data, tmp_path):
    path = str(tmp_path / "my_model.keras")
    save_model_keras(ours, path)
    theirs = k3.models.load_model(path)
    x, y = data
    assert_same_outputs(theirs, ours, x, y)
    assert type(theirs.optimizer).__name__ == "Adam"
    assert int(theirs.optimizer.iterations.numpy()) == 16
    assert_slots(ours, theirs, skip=2)


def test_keras3_loads_our_weights_h5(k3, ours, data, tmp_path):
    path = str(tmp_path / "my.weights.h5")
    save_weights_keras3(ours, path)
    theirs = tutorial(k3)
    theirs.optimizer.build(theirs.trainable_variables)
    theirs.load_weights(path)
    assert_same_outputs(theirs, ours, data[0])
    assert int(theirs.optimizer.iterations.numpy()) == 16
    assert_slots(ours, theirs, skip=2)


def test_tf_keras_loads_our_weights_h5(tfk, ours, data, tmp_path):
    path = str(tmp_path / "my.weights.h5")
    save_weights_keras3(ours, path)
    theirs = tutorial(tfk, compile=False)
    theirs.load_weights(path)
    assert_same_outputs(theirs, ours, data[0])


@pytest.mark.parametrize("peer", ["tfk", "k3"])
def test_they_load_our_weights_only_h5(peer, request, ours, data, tmp_path):
    lib = request.getfixturevalue(peer)
    path = str(tmp_path / "w.h5")
    save_weights_h5(ours, path, fsync=False)
    theirs = tutorial(lib, compile=False)
    theirs.load_weights(path)
    assert_same_outputs(theirs, ours, data[0])


# --- we read theirs -----------------------------------------------------------------------------
def trained(lib, data):
    model = tutorial(lib)
    model.fit(*data, epochs=2, batch_size=32, verbose=0)
    return model


def check_loaded(mine, theirs, data, slots_skip=None):
    x, y = data
    assert_same_outputs(mine, theirs, x, y)
    assert mine.metrics_names == ["loss", "accuracy"]
    assert int(mine.optimizer.iterations) == int(theirs.optimizer.iterations.numpy()) == 16
    if slots_skip is not None:
        assert_slots(mine, theirs, skip=slots_skip)


def test_we_load_tf_keras_h5(tfk, data, tmp_path):
    theirs = trained(tfk, data)
    path = str(tmp_path / "tfk.h5")
    theirs.save(path)
    check_loaded(load_model_h5(path), theirs, data, slots_skip=1)


def test_we_load_keras3_h5_and_keras_archive(k3, data, tmp_path):
    theirs = trained(k3, data)
    theirs.save(str(tmp_path / "k3.h5"))
    theirs.save(str(tmp_path / "k3.keras"))
    check_loaded(load_model_h5(str(tmp_path / "k3.h5")), theirs, data, slots_skip=2)
    # Keras 3 drops a by-name optimizer ('adam') from compile_config; we still restore Adam.
    mine = load_model_keras(str(tmp_path / "k3.keras"))
    assert type(mine.optimizer).__name__ == "Adam"
    check_loaded(mine, theirs, data, slots_skip=2)


def test_we_load_keras3_weights_h5(k3, data, tmp_path):
    theirs = trained(k3, data)
    path = str(tmp_path / "k3.weights.h5")
    theirs.save_weights(path)
    mine = tutorial(keras)
    load_weights_keras3(mine, path)
    check_loaded(mine, theirs, data, slots_skip=2)


@pytest.mark.parametrize("peer", ["tfk", "k3"])
def test_we_load_their_weights_only_h5(peer, request, data, tmp_path):
    lib = request.getfixturevalue(peer)
    theirs = trained(lib, data)
    path = str(tmp_path / "w.h5")
    if peer == "tfk":
        theirs.save_weights(path)
    else:  # Keras 3 writes legacy .h5 only as a whole model; load_weights reads model_weights
        theirs.save(path)
    mine = tutorial(keras, compile=False)
    load_weights_h5(mine, path)
    assert_same_outputs(mine, theirs, data[0])


def test_tf_keras_lambda_h5_is_refused(tfk, tmp_path):
    model = tfk.Sequential([tfk.layers.Dense(3, input_shape=(4,)),
                            tfk.layers.Lambda(lambda t: t * 2.0)])
    path = str(tmp_path / "lambda.h5")
    model.save(path)
    with pytest.raises(UnsafeFileError, match="Lambda"):
        load_model_h5(path)


# --- custom layers across libraries ------------------------------------------------------------
class OurScale(keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="random_normal")

    def call(self, inputs, training=None):
        return inputs * self.w.value * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def their_scale(lib):
    # Same class name as ours: Keras 3 keys a layer's weights by its class name (our_scale).
    class OurScale(lib.layers.Layer):
        def __init__(self, factor=1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1],), initializer="random_normal")

        def call(self, inputs):
            return inputs * self.w * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    return OurScale


@pytest.mark.parametrize("peer,fmt", [("tfk", "h5"), ("k3", "h5"), ("k3", "keras")])
def test_custom_layer_crosses_over(peer, fmt, request, tmp_path):
    lib = request.getfixturevalue(peer)
    model = keras.Sequential([keras.layers.Dense(5, input_shape=(3,)), OurScale(1.5, name="scale"),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((6, 3), dtype=np.float32)
    path = str(tmp_path / f"custom.{fmt}")
    (save_model_h5 if fmt == "h5" else save_model_keras)(model, path)
    theirs = lib.models.load_model(path, custom_objects={"OurScale": their_scale(lib)})
    assert_same_outputs(theirs, model, x)
    # and back: their file, our class
    back = str(tmp_path / f"back.{fmt}")
    theirs.save(back)
    loader = load_model_h5 if fmt == "h5" else load_model_keras
    mine = loader(back, custom_objects={"OurScale": OurScale})
    assert mine.layers[1].factor == 1.5
    assert_same_outputs(mine, model, x)
