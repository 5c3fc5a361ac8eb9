"""Whole-model saves keep the compile arguments of a model with several outputs: losses,
loss weights, metrics and weighted metrics per output, in every format."""

import numpy as np
import pytest

from fastckpt import keras


def two_heads():
    inp = keras.Input(shape=(6,), name="features")
    h = keras.layers.Dense(8, activation="relu", name="trunk")(inp)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(1, name="reg")(h)
    model = keras.Model(inp, [cls, reg], name="two_heads")
    model.compile(optimizer="adam",
                  loss={"cls": "sparse_categorical_crossentropy", "reg": keras.losses.Huber(delta=0.5)},
                  loss_weights={"cls": 1.0, "reg": 0.25},
                  metrics={"cls": ["accuracy"], "reg": [keras.metrics.MeanAbsoluteError()]},
                  weighted_metrics={"reg": ["mse"]})
    return model


@pytest.mark.parametrize("suffix", [".h5", ".keras", ""])
def test_multi_output_compile_round_trips(tmp_path, suffix):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = {"cls": rng.integers(0, 3, 64), "reg": rng.standard_normal((64, 1)).astype(np.float32)}
    model = two_heads()
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / f"m{suffix}")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.metrics_names == model.metrics_names
    assert loaded._compile_config["loss_weights"] == {"cls": 1.0, "reg": 0.25}
    assert type(loaded._compiled.losses[1]).__name__ == "Huber"
    assert loaded._compiled.losses[1].get_config()["delta"] == 0.5
    want = model.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)


def test_tf_keras_compiles_our_multi_output_h5(tmp_path):
    from interop.conftest import require
    tfk = require("tf_keras")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = {"cls": rng.integers(0, 3, 32), "reg": rng.standard_normal((32, 1)).astype(np.float32)}
    model = two_heads()
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.h5")
    model.save(path)
    theirs = tfk.models.load_model(path)  # compile=True: the training config must be theirs too
    assert theirs.compiled_loss is not None
    ours = model.evaluate(x, y, verbose=0, return_dict=True)
    got = theirs.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], ours["loss"], rtol=1e-4)
    np.testing.assert_allclose(got["reg_loss"], ours["reg_loss"], rtol=1e-4)
