"""Whole models: the directory format, resume-equivalence across processes, BackupAndRestore."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.errors import CorruptCheckpointError, FastckptError
from saving_helpers import summary_text


def tutorial(metrics=("accuracy",)):
    m = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(784,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=list(metrics))
    return m


#: The shape of the ``xy`` fixture (conftest.py): samples, features, classes.
XY = (160, 784, 10)


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


# --- hostile fastckpt_model.json -----------------------------------------------------------------
def _saved_dir(tmp_path):
    m = keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(2)])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "m"
    m.save(str(path))
    return path, path / "fastckpt_model.json"


def test_deeply_nested_metadata_is_a_typed_error_naming_the_file(tmp_path):
    path, meta = _saved_dir(tmp_path)
    doc = json.loads(meta.read_text())
    doc["model_config"] = "@"
    meta.write_text(json.dumps(doc).replace('"@"', "[" * 100_000 + "]" * 100_000))
    with pytest.raises(FastckptError) as e:
        keras.models.load_model(str(path))
    assert str(meta) in str(e.value)


@pytest.mark.parametrize("key", ["model_config", "format_version"])
def test_missing_metadata_entry_is_a_typed_error_naming_the_file(tmp_path, key):
    path, meta = _saved_dir(tmp_path)
    doc = json.loads(meta.read_text())
    del doc[key]
    meta.write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpointError, match=key) as e:
        keras.models.load_model(str(path))
    assert str(meta) in str(e.value)


def test_bad_model_config_error_names_the_file(tmp_path):
    path, meta = _saved_dir(tmp_path)
    doc = json.loads(meta.read_text())
    dense = [e for e in doc["model_config"]["config"]["layers"] if e["class_name"] == "Dense"]
    dense[0]["config"]["units"] = "four"
    meta.write_text(json.dumps(doc))
    with pytest.raises(CorruptCheckpointError) as e:
        keras.models.load_model(str(path))
    assert str(meta) in str(e.value) and "units" in str(e.value)


_ODD_VALUES = [None, True, False, 0, -1, 2**70, 1.5, -1e308, "", "x" * 300, "Lambda", [], {},
               [[[[]]]], {"class_name": "Lambda", "config": {}}, {"class_name": 7}, [None] * 3,
               {"config": None}, {"name": "relu", "class_name": "function", "config": "relu"}]


def _nodes(doc, trail=()):
    """(container, key) of every value in the document."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        yield doc, k
        yield from _nodes(v, trail + (k,))


def _mutate(doc, rnd):
    nodes = list(_nodes(doc))
    for _ in range(rnd.randint(1, 3)):
        container, key = rnd.choice(nodes)
        what = rnd.random()
        if what < 0.25 and isinstance(container, dict):
            del container[key]
            nodes = list(_nodes(doc))
        elif what < 0.4 and isinstance(container[key], (int, float)) and not isinstance(
                container[key], bool):
            container[key] = rnd.choice([-container[key], container[key] * 2**40, 0, 10**9])
        else:
            container[key] = json.loads(json.dumps(rnd.choice(_ODD_VALUES)))
            nodes = list(_nodes(doc))
    return doc


def test_fuzzed_metadata_loads_or_raises_a_typed_error(tmp_path):
    """Structural mutations of fastckpt_model.json (keys dropped, values swapped for odd JSON)
    and byte-level ones (truncation, flipped bytes): every load succeeds or raises a typed error
    naming what is wrong; nothing else escapes (KeyError, TypeError, AttributeError ...)."""
    import random
    path, meta = _saved_dir(tmp_path)
    original = meta.read_bytes()
    rnd = random.Random(int(os.environ.get("FUZZ_SEED", "18")))
    outcomes = {"loaded": 0, "typed": 0}
    for i in range(250):
        if i % 5 == 4:
            raw = bytearray(original)
            if rnd.random() < 0.5:
                raw = raw[:rnd.randrange(len(raw))]
            else:
                for _ in range(rnd.randint(1, 4)):
                    raw[rnd.randrange(len(raw))] = rnd.randrange(256)
            meta.write_bytes(bytes(raw))
        else:
            meta.write_text(json.dumps(_mutate(json.loads(original), rnd)))
        try:
            keras.models.load_model(str(path))
            outcomes["loaded"] += 1
        except (FastckptError, NotImplementedError) as e:
            assert str(e), type(e)
            outcomes["typed"] += 1
    assert outcomes["typed"] > 100, outcomes


def test_variables_errors_name_the_users_path(tmp_path):
    """The load reads through /proc/self/fd/<fd>; errors still name the path the caller gave."""
    path, _ = _saved_dir(tmp_path)
    data = path / "variables" / "variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError) as e:
        keras.models.load_model(str(path))
    assert str(data) in str(e.value) and e.value.path == str(data) and "/proc/" not in str(e.value)
    data.unlink()
    with pytest.raises(FileNotFoundError) as e:
        keras.models.load_model(str(path))
    assert str(data) in str(e.value) and "/proc/" not in str(e.value)
