"""Whole models: the directory format, resume-equivalence across processes, BackupAndRestore."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.errors import CorruptCheckpointError
from saving_helpers import summary_text


def tutorial(metrics=("accuracy",)):
    m = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(784,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=list(metrics))
    return m


@pytest.fixture
def xy(rng):
    x = rng.random((160, 784), dtype=np.float32)
    return x, x[:, :10].argmax(1)


@pytest.mark.parametrize("suffix", ["", ".h5", ".keras"])
def test_whole_model_round_trip(tmp_path, xy, suffix):
    x, y = xy
    m = tutorial()
    m.fit(x, y, epochs=2, verbose=0)
    path = str(tmp_path / ("saved_model/my_model" + suffix))
    m.save(path)
    r = keras.models.load_model(path)
    assert summary_text(r) == summary_text(m)
    np.testing.assert_array_equal(r.predict(x, verbose=0), m.predict(x, verbose=0))
    assert r.evaluate(x, y, verbose=0, return_dict=True) == m.evaluate(x, y, verbose=0, return_dict=True)
    assert r.metrics_names == ["loss", "accuracy"]
    assert int(r.optimizer.iterations.numpy()) == int(m.optimizer.iterations.numpy())
    for a, b in zip(m.optimizer.variables, r.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert r._get_rng_state() == m._get_rng_state()


def test_directory_layout_is_readable_as_a_checkpoint(tmp_path):
    m = tutorial()
    m.save(str(tmp_path / "m"))
    assert sorted(os.listdir(tmp_path / "m")) == ["assets", "fastckpt_model.json", "variables"]
    import fastckpt
    names = dict(fastckpt.train.list_variables(str(tmp_path / "m" / "variables" / "variables")))
    assert names["layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == [784, 64]


def test_directory_overwrite_is_atomic_and_refusable(tmp_path, xy):
    m = tutorial()
    path = str(tmp_path / "m")
    m.save(path)
    m.fit(*xy, epochs=1, verbose=0)
    m.save(path)  # replaced as a whole
    np.testing.assert_array_equal(keras.models.load_model(path).predict(xy[0], verbose=0),
                                  m.predict(xy[0], verbose=0))
    assert [n for n in os.listdir(tmp_path) if n != "m"] == []  # no leftovers
    with pytest.raises(FileExistsError):
        m.save(path, overwrite=False)


def test_corrupt_directory_metadata_is_a_typed_error(tmp_path):
    m = tutorial()
    path = tmp_path / "m"
    m.save(str(path))
    (path / "fastckpt_model.json").write_text('{"format": "something else"}')
    with pytest.raises(CorruptCheckpointError, match="expected format"):
        keras.models.load_model(str(path))


RESUME = textwrap.dedent("""
    import sys, numpy as np
    from fastckpt import keras
    path, mode, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(0)
    x = rng.random((160, 784), dtype=np.float32); y = x[:, :10].argmax(1)
    if mode == "fresh":
        keras.utils.set_random_seed(11)
        m = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(784,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    else:
        m = keras.models.load_model(path)
    m.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    if mode == "fresh" and path != "-":
        m.save(path)
    np.save(sys.argv[4], np.concatenate([w.ravel() for w in m.get_weights()]))
""")


@pytest.mark.parametrize("suffix", ["", ".h5", ".keras"])
def test_n_plus_n_epochs_across_processes_equals_2n(tmp_path, suffix):
    def run(*args):
        subprocess.run([sys.executable, "-c", RESUME, *args], check=True, cwd=str(tmp_path))
    path = str(tmp_path / ("model" + suffix))
    run("-", "fresh", "4", str(tmp_path / "straight.npy"))
    run(path, "fresh", "2", str(tmp_path / "first.npy"))
    run(path, "resume", "2", str(tmp_path / "resumed.npy"))
    straight = np.load(tmp_path / "straight.npy")
    resumed = np.load(tmp_path / "resumed.npy")
    assert not np.array_equal(np.load(tmp_path / "first.npy"), straight)
    assert np.array_equal(resumed, straight)


class _Boom(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated crash")


def test_backup_and_restore_reproduces_the_uninterrupted_run(tmp_path, xy):
    x, y = xy

    def fresh():
        keras.utils.set_random_seed(5)
        return tutorial()

    ref = fresh()
    # min_delta large enough that the patience count moves: its state must survive the restart.
    stop_ref = keras.callbacks.EarlyStopping(monitor="loss", patience=50, min_delta=0.5)
    ref.fit(x, y, epochs=5, verbose=0, callbacks=[stop_ref])

    m = fresh()
    backup = str(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        m.fit(x, y, epochs=5, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup),
            keras.callbacks.EarlyStopping(monitor="loss", patience=50, min_delta=0.5),
            _Boom(at=3)])
    assert os.path.isdir(backup)
    m2 = fresh()  # a new process would build the same model from scratch
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=50, min_delta=0.5)
    seen = []
    hist = m2.fit(x, y, epochs=5, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(backup), stop,
        keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))])
    assert seen == [3, 4]  # epochs 0-2 were done before the crash
    assert len(hist.history["loss"]) == 2
    for a, b in zip(ref.get_weights(), m2.get_weights()):
        assert np.array_equal(a, b)
    assert stop.best == stop_ref.best and stop.wait == stop_ref.wait > 0
    assert not os.path.exists(backup)  # deleted after a completed run
