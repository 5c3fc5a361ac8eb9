"""Keras 3 formats: ``.keras`` archives and ``.weights.h5``, round trips and Keras-written files."""

import json
import os
import warnings
import zipfile

import h5py
import numpy as np
import pytest

import fastckpt as tf
from fastckpt import keras
from fastckpt.errors import CheckpointMismatchError, UnknownObjectError
from fastckpt.saving import keras_v3
from fastckpt.saving.keras_v3 import (load_model_keras, load_weights_keras3, save_model_keras,
                                      save_weights_keras3)
from saving_helpers import (DATA, assert_failed_save_keeps_old_file, assert_same_optimizer_state,
                            small_model, summary_text, xy)

def test_keras_round_trip(tmp_path, rng):
    x, y = xy(rng)
    model = small_model(optimizer=tf.optimizers.Adam(learning_rate=0.003, amsgrad=True))
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = str(tmp_path / "m.keras")
    save_model_keras(model, path)
    new = load_model_keras(path)
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    assert new.metrics_names == ["loss", "accuracy"]
    assert new.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert int(new.optimizer.iterations) == 6
    assert new.optimizer.get_config() == model.optimizer.get_config()
    assert_same_optimizer_state(model, new)
    assert summary_text(new) == summary_text(model)


def test_keras_archive_layout(tmp_path, rng):
    model = small_model()
    model.fit(*xy(rng), epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    save_model_keras(model, path)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        config = json.loads(zf.read("config.json"))
    assert config["class_name"] == "Sequential" and config["module"] == "keras"
    layers = config["config"]["layers"]
    assert layers[0]["class_name"] == "InputLayer"
    assert layers[0]["config"]["batch_shape"] == [None, 12]
    assert layers[1]["build_config"] == {"input_shape": [None, 12]}
    assert layers[1]["config"]["dtype"]["class_name"] == "DTypePolicy"
    assert "batch_input_shape" not in layers[1]["config"]
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert config["compile_config"]["metrics"][0]["config"]["name"] == "accuracy"


def test_weights_h5_layout_and_round_trip(tmp_path, rng):
    x, y = xy(rng)
    model = small_model()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = str(tmp_path / "m.weights.h5")
    save_weights_keras3(model, path)
    with h5py.File(path, "r") as f:
        names = []
        f.visit(names.append)
        assert sorted(names) == sorted([
            "layers", "layers/dense", "layers/dense/vars", "layers/dense/vars/0",
            "layers/dense/vars/1", "layers/dropout", "layers/dropout/vars", "layers/dense_1",
            "layers/dense_1/vars", "layers/dense_1/vars/0", "layers/dense_1/vars/1",
            "optimizer", "optimizer/vars"] + [f"optimizer/vars/{i}" for i in range(10)] + ["vars"])
        assert f["optimizer/vars/0"][()] == 3 and f["optimizer/vars/0"].dtype == np.int64
        assert f["optimizer/vars/1"][()] == np.float32(0.001)
        assert f["layers/dense/vars"].attrs["name"] == "dense"
    other = small_model()
    load_weights_keras3(other, path)
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))
    assert_same_optimizer_state(model, other)


def test_weights_h5_refuses_mismatched_model(tmp_path):
    path = str(tmp_path / "m.weights.h5")
    save_weights_keras3(small_model(compile=False), path)
    wrong = keras.Sequential([keras.layers.Dense(16, input_shape=(11,)), keras.layers.Dropout(0.1),
                              keras.layers.Dense(4)])
    before = wrong.get_weights()
    with pytest.raises(CheckpointMismatchError, match=r"expected shape \(11, 16\), found \(12, 16\)"):
        load_weights_keras3(wrong, path)
    for a, b in zip(before, wrong.get_weights()):
        np.testing.assert_array_equal(a, b)  # all or nothing
    fewer = keras.Sequential([keras.layers.Dense(16, input_shape=(12,))])
    with pytest.raises(CheckpointMismatchError, match="dense_1"):
        load_weights_keras3(fewer, path)


def test_include_optimizer_false(tmp_path, rng):
    model = small_model()
    model.fit(*xy(rng), epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    save_model_keras(model, path, include_optimizer=False)
    new = load_model_keras(path)  # compiled from the config, with a fresh optimizer
    assert new.optimizer.get_config() == model.optimizer.get_config()
    assert new.metrics_names == ["loss", "accuracy"]
    assert int(new.optimizer.iterations) == 0
    assert load_model_keras(path, compile=False).optimizer is None


def test_compiled_but_untrained_model_loads_without_warnings(tmp_path):
    model = small_model(optimizer=tf.optimizers.Adam(learning_rate=0.004))
    path = str(tmp_path / "m.keras")
    save_model_keras(model, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = load_model_keras(path)
    assert int(new.optimizer.iterations) == 0
    assert new.optimizer.learning_rate == pytest.approx(0.004)


def test_keras_save_is_atomic(tmp_path, monkeypatch):
    assert_failed_save_keeps_old_file(monkeypatch, save_model_keras, str(tmp_path / "m.keras"),
                                      keras_v3, "_write_tree")


class Scale(keras.layers.Layer):
    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.offset = self.add_weight("offset", shape=(), initializer="ones", trainable=False)
        self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="random_normal")

    def call(self, inputs, training=None):
        return inputs * self.w.value * self.factor + self.offset.value

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def test_custom_layer_in_keras_archive(tmp_path, rng):
    model = keras.Sequential([keras.layers.Dense(5, input_shape=(3,)), Scale(2.5, name="scale"),
                              keras.layers.Dense(2)])
    model.layers[1].offset.assign(np.float32(0.5))
    x = rng.random((4, 3), dtype=np.float32)
    path = str(tmp_path / "c.keras")
    save_model_keras(model, path)
    with pytest.raises(UnknownObjectError, match=r"'Scale'.*custom_objects"):
        load_model_keras(path)
    new = load_model_keras(path, custom_objects={"Scale": Scale})
    assert new.layers[1].factor == 2.5
    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    save_weights_keras3(model, str(tmp_path / "w.weights.h5"))
    with h5py.File(str(tmp_path / "w.weights.h5"), "r") as f:
        # trainable first, whatever the creation order: Keras 3's order
        assert f["layers/scale/vars/0"].shape == (5,) and f["layers/scale/vars/1"].shape == ()


# --- files written by Keras 3.15 (tests/data/keras/make_golden.py) -------------------------------
@pytest.fixture(scope="module")
def expected():
    return dict(np.load(os.path.join(DATA, "expected.npz")))


def test_load_keras_archive_written_by_keras3(expected):
    model = load_model_keras(os.path.join(DATA, "keras3_model.keras"))
    x, y = expected["x"], expected["y"]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["keras3_pred"], atol=1e-6)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "accuracy"]
    assert logs["loss"] == pytest.approx(expected["keras3_loss"], abs=1e-5)
    assert logs["accuracy"] == pytest.approx(expected["keras3_accuracy"], abs=1e-6)
    assert int(model.optimizer.iterations) == 2
    assert model.optimizer.learning_rate == pytest.approx(0.002)
    for i, var in enumerate(model.optimizer.variables[1:]):
        np.testing.assert_array_equal(var.value, expected[f"keras3_slot{i}"])


def test_load_weights_h5_written_by_keras3(expected):
    model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(6,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(3, activation="softmax")])
    model.compile(tf.optimizers.Adam(learning_rate=0.002), "sparse_categorical_crossentropy")
    load_weights_keras3(model, os.path.join(DATA, "keras3_model.weights.h5"))
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected["keras3_pred"],
                               atol=1e-6)
    assert int(model.optimizer.iterations) == 2
    np.testing.assert_array_equal(model.optimizer.variables[1].value, expected["keras3_slot0"])


# --- config dialects ---------------------------------------------------------------------------
def test_config_without_input_layer_builds_from_build_config():
    from fastckpt.saving.model_config import model_from_config
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "seq", "layers": [
                  {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
                   "config": {"name": "d", "units": 3, "activation": {"module": "builtins",
                              "class_name": "function", "config": "relu", "registered_name": "relu"},
                              "dtype": {"module": "keras", "class_name": "DTypePolicy",
                                        "config": {"name": "float32"}, "registered_name": None},
                              "quantization_config": None, "lora_rank": None}}]},
              "build_config": {"input_shape": [None, 5]}}
    model = model_from_config(config)
    assert model.built and model.input_shape == (None, 5) and model.layers[0].activation == "relu"


def test_tf_keras_config_without_input_layer():
    from fastckpt.saving.model_config import model_from_config, model_to_config
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 2, "batch_input_shape": [None, 4]}},
        {"class_name": "Dropout", "config": {"name": "dr", "rate": 0.5}}]}}
    model = model_from_config(config)
    assert model.output_shape == (None, 2) and [l.name for l in model.layers] == ["d", "dr"]
    assert model_to_config(model)["config"]["layers"][0]["class_name"] == "InputLayer"


def test_mixed_precision_policy_is_refused_plainly():
    from fastckpt.saving.model_config import model_from_config
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
        {"class_name": "Dense", "config": {"units": 2, "dtype": {"class_name": "DTypePolicy",
                                                                 "config": {"name": "mixed_float16"}}}}]}}
    with pytest.raises(NotImplementedError, match="mixed_float16"):
        model_from_config(config)


def test_is_keras3_weights_file(tmp_path):
    from fastckpt.saving.legacy_h5 import save_weights_h5
    model = small_model(compile=False)
    save_weights_keras3(model, str(tmp_path / "a.weights.h5"))
    save_weights_h5(model, str(tmp_path / "b.h5"), fsync=False)
    assert keras_v3.is_keras3_weights_file(str(tmp_path / "a.weights.h5"))
    assert not keras_v3.is_keras3_weights_file(str(tmp_path / "b.h5"))
    assert keras_v3.is_keras3_weights_file(os.path.join(DATA, "keras3_model.weights.h5"))
    assert not keras_v3.is_keras3_weights_file(os.path.join(DATA, "keras3_model.h5"))


def test_sequential_keeps_an_integer_input_dtype(tmp_path):
    # An int32 Input of a Sequential (ids for an Embedding) stays int32 through a .keras file, so
    # the reloaded model takes the same arrays the same way.
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 4),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    path = str(tmp_path / "ids.keras")
    model.save(path)
    with zipfile.ZipFile(path) as zf:
        config = json.loads(zf.read("config.json"))
    assert config["config"]["layers"][0]["config"]["dtype"] == "int32"
    loaded = keras.models.load_model(path)
    assert loaded._input_layer.dtype == "int32"
    ids = np.random.default_rng(0).integers(0, 10, size=(8, 5)).astype(np.int32)
    np.testing.assert_array_equal(loaded.predict(ids, verbose=0), model.predict(ids, verbose=0))
