"""Every path a user hands to a save or a load: a NUL character is a typed error naming the
argument (not the OS layer's bare ValueError), and non-UTF-8 names work in every format."""

import numpy as np
import pytest

from fastckpt import keras, train
from fastckpt.errors import InvalidPathError


@pytest.fixture
def model():
    m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), verbose=0)
    return m


def _fit_with(model, callback):
    model.fit(np.zeros((4, 3), np.float32), np.zeros(4, np.int64), verbose=0, callbacks=[callback])


CALLS = {
    "save dir": lambda m, p: m.save(p),
    "save .h5": lambda m, p: m.save(p + ".h5"),
    "save .keras": lambda m, p: m.save(p + ".keras"),
    "load_model": lambda m, p: keras.models.load_model(p),
    "load_model .h5": lambda m, p: keras.models.load_model(p + ".h5"),
    "save_weights": lambda m, p: m.save_weights(p),
    "save_weights .h5": lambda m, p: m.save_weights(p + ".h5"),
    "load_weights": lambda m, p: m.load_weights(p),
    "load_weights .h5": lambda m, p: m.load_weights(p + ".h5"),
    "ModelCheckpoint": lambda m, p: keras.callbacks.ModelCheckpoint(p + "/cp.ckpt"),
    "BackupAndRestore": lambda m, p: keras.callbacks.BackupAndRestore(p),
    "CheckpointManager": lambda m, p: train.CheckpointManager(train.Checkpoint(model=m), p),
    "Checkpoint.write": lambda m, p: train.Checkpoint(model=m).write(p),
    "latest_checkpoint": lambda m, p: train.latest_checkpoint(p),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_nul_in_a_path_is_a_typed_error(tmp_path, model, call):
    with pytest.raises(InvalidPathError, match="NUL") as e:
        CALLS[call](model, str(tmp_path / "a\0b"))
    assert e.value.path is not None and "\0" in e.value.path


def test_non_utf8_names_work_in_every_format(tmp_path, model):
    x = np.ones((2, 3), np.float32)
    want = model.predict(x, verbose=0)
    base = str(tmp_path / "m\udcff")
    for path in (base, base + ".h5", base + ".keras"):
        model.save(path)
        np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), want)
    model.save_weights(base + "-w")
    model.load_weights(base + "-w")
    _fit_with(model, keras.callbacks.ModelCheckpoint(str(tmp_path / "d\udcff" / "cp.ckpt"),
                                                     save_weights_only=True))
    assert train.latest_checkpoint(str(tmp_path / "d\udcff")).endswith("cp.ckpt")
