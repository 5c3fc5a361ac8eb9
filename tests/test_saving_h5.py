"""Whole-model legacy HDF5 (``model.save('m.h5')``): round trips and files written by Keras."""

import json
import os
import warnings

import h5py
import numpy as np
import pytest

import fastckpt as tf
from fastckpt import keras
from fastckpt.errors import UnknownObjectError
from fastckpt.saving import legacy_h5
from fastckpt.saving.legacy_h5 import load_model_h5, save_model_h5
from saving_helpers import (DATA, assert_failed_save_keeps_old_file, assert_same_optimizer_state,
                            small_model, summary_text, xy)

def test_round_trip_restores_everything(tmp_path, rng):
    x, y = xy(rng)
    model = small_model()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = str(tmp_path / "my_model.h5")
    save_model_h5(model, path)
    new = load_model_h5(path)

    np.testing.assert_array_equal(new.predict(x, verbose=0), model.predict(x, verbose=0))
    assert new.metrics_names == ["loss", "accuracy"]
    assert new.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert int(new.optimizer.iterations) == 6
    assert_same_optimizer_state(model, new)
    assert summary_text(new) == summary_text(model)
    assert type(new.optimizer) is type(model.optimizer)
    assert new.optimizer.get_config() == model.optimizer.get_config()


def test_accuracy_keeps_its_name_and_means_sparse_categorical_accuracy(tmp_path, rng):
    # The tutorial's TF 2.3 output: 'accuracy' came back as the wrong accuracy (9 % vs 96 %).
    x, y = xy(rng)
    model = small_model(optimizer=tf.optimizers.Adam(learning_rate=0.02))
    model.fit(x, y, epochs=30, verbose=0)
    path = str(tmp_path / "m.h5")
    save_model_h5(model, path)
    loss, acc = load_model_h5(path).evaluate(x, y, verbose=0)
    expected = float(np.mean(model.predict(x, verbose=0).argmax(1) == y))
    assert acc == pytest.approx(expected, abs=1e-7)
    assert acc > 0.5  # learnable labels: chance level would be 0.25
    stored = json.loads(h5py.File(path, "r").attrs["training_config"])
    assert stored["metrics"] == [{"class_name": "SparseCategoricalAccuracy",
                                  "config": {"name": "accuracy", "dtype": "float32"}}]


def test_training_resumes_exactly_after_reload(tmp_path, rng):
    x, y = xy(rng)
    model = small_model(dropout=False)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    path = str(tmp_path / "m.h5")
    save_model_h5(model, path)
    new = load_model_h5(path)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    new.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), new.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert_same_optimizer_state(model, new)


def test_layout_is_tf_keras(tmp_path, rng):
    model = small_model()
    model.fit(*xy(rng), epochs=1, verbose=0)
    path = str(tmp_path / "m.h5")
    save_model_h5(model, path)
    with h5py.File(path, "r") as f:
        assert f.attrs["keras_version"] == "2.21.0" and f.attrs["backend"] == "tensorflow"
        config = json.loads(f.attrs["model_config"])
        assert config["class_name"] == "Sequential"
        assert [l["class_name"] for l in config["config"]["layers"]] == [
            "InputLayer", "Dense", "Dropout", "Dense"]
        training = json.loads(f.attrs["training_config"])
        assert training["optimizer_config"]["class_name"] == "Custom>Adam"
        assert training["optimizer_config"]["config"]["is_legacy_optimizer"] is False
        names = [n.decode() for n in f["optimizer_weights"].attrs["weight_names"]]
        assert names == ["iteration:0", "Adam/m/dense/kernel:0", "Adam/v/dense/kernel:0",
                         "Adam/m/dense/bias:0", "Adam/v/dense/bias:0", "Adam/m/dense_1/kernel:0",
                         "Adam/v/dense_1/kernel:0", "Adam/m/dense_1/bias:0", "Adam/v/dense_1/bias:0"]
        assert f["optimizer_weights/iteration:0"].dtype == np.int64
        assert [n.decode() for n in f["model_weights"].attrs["layer_names"]] == [
            "dense", "dropout", "dense_1"]
        assert f["model_weights/dense/dense/kernel:0"].shape == (12, 16)


def test_include_optimizer_false_and_compile_false(tmp_path, rng):
    model = small_model()
    model.fit(*xy(rng), epochs=1, verbose=0)
    path = str(tmp_path / "m.h5")
    save_model_h5(model, path, include_optimizer=False)
    assert "optimizer_weights" not in h5py.File(path, "r")
    fresh = load_model_h5(path)
    assert int(fresh.optimizer.iterations) == 0 and fresh.metrics_names == ["loss", "accuracy"]
    bare = load_model_h5(path, compile=False)
    assert bare.optimizer is None
    np.testing.assert_array_equal(bare.get_weights()[0], model.get_weights()[0])


def test_uncompiled_and_untrained_models(tmp_path, rng):
    plain = small_model(compile=False)
    save_model_h5(plain, str(tmp_path / "plain.h5"))
    back = load_model_h5(str(tmp_path / "plain.h5"))
    assert back.optimizer is None and summary_text(back) == summary_text(plain)
    compiled = small_model()  # compiled, never trained: optimizer not built yet
    save_model_h5(compiled, str(tmp_path / "c.h5"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unbuilt optimizer's state is not a mismatch
        again = load_model_h5(str(tmp_path / "c.h5"))
    assert int(again.optimizer.iterations) == 0


def test_sgd_momentum_and_loss_object(tmp_path, rng):
    x, y = xy(rng)
    model = small_model(optimizer=tf.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                        loss=tf.losses.SparseCategoricalCrossentropy(from_logits=True),
                        metrics=[tf.metrics.SparseCategoricalAccuracy()])
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "m.h5")
    save_model_h5(model, path)
    new = load_model_h5(path)
    assert new.optimizer.get_config() == model.optimizer.get_config()
    assert new.loss.from_logits is True
    assert new.metrics_names == ["loss", "sparse_categorical_accuracy"]
    assert new.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert_same_optimizer_state(model, new)


def test_save_is_atomic(tmp_path, monkeypatch):
    assert_failed_save_keeps_old_file(monkeypatch, save_model_h5, str(tmp_path / "m.h5"), legacy_h5,
                                      "save_weights_to_group")


# --- custom layers -----------------------------------------------------------------------------
class Scale(keras.layers.Layer):
    """A custom layer with a trainable and a non-trainable weight and its own config."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="random_normal")
        self.offset = self.add_weight("offset", shape=(), initializer="ones", trainable=False)

    def call(self, inputs, training=None):
        return inputs * self.w.value * self.factor + self.offset.value

    def get_config(self):
        config = super().get_config()
        config["factor"] = self.factor
        return config


def custom_model():
    return keras.Sequential([keras.layers.Dense(5, input_shape=(3,)), Scale(2.5, name="scale"),
                             keras.layers.Dense(2)])


def test_custom_layer_via_custom_objects_and_scope(tmp_path, rng):
    model = custom_model()
    model.layers[1].offset.assign(np.float32(0.25))
    x = rng.random((4, 3), dtype=np.float32)
    path = str(tmp_path / "c.h5")
    save_model_h5(model, path)
    with pytest.raises(UnknownObjectError, match=r"'Scale'.*custom_objects"):
        load_model_h5(path)
    a = load_model_h5(path, custom_objects={"Scale": Scale})
    with keras.utils.custom_object_scope({"Scale": Scale}):
        b = load_model_h5(path)
    for m in (a, b):
        assert m.layers[1].factor == 2.5 and float(m.layers[1].offset.value) == 0.25
        np.testing.assert_array_equal(m.predict(x, verbose=0), model.predict(x, verbose=0))


def test_registered_custom_layer(tmp_path, rng):
    @keras.utils.register_keras_serializable(package="h5test")
    class Shift(keras.layers.Layer):
        def build(self, input_shape):
            self.b = self.add_weight("b", shape=(input_shape[-1],), initializer="random_normal")

        def call(self, inputs, training=None):
            return inputs + self.b.value

    model = keras.Sequential([keras.layers.Dense(3, input_shape=(2,)), Shift()])
    path = str(tmp_path / "r.h5")
    save_model_h5(model, path)
    assert json.loads(h5py.File(path, "r").attrs["model_config"])["config"]["layers"][2][
        "class_name"] == "h5test>Shift"
    x = rng.random((5, 2), dtype=np.float32)
    np.testing.assert_array_equal(load_model_h5(path).predict(x, verbose=0),
                                  model.predict(x, verbose=0))


# --- files written by tf_keras 2.21 and Keras 3.15 (tests/data/keras/make_golden.py) -------------
@pytest.fixture(scope="module")
def expected():
    return dict(np.load(os.path.join(DATA, "expected.npz")))


@pytest.mark.parametrize("tag,filename", [("tf_keras", "tf_keras_model.h5"),
                                          ("keras3", "keras3_model.h5")])
def test_load_h5_written_by_keras(expected, tag, filename):
    model = load_model_h5(os.path.join(DATA, filename))
    x, y = expected["x"], expected["y"]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected[f"{tag}_pred"], atol=1e-6)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert list(logs) == ["loss", "accuracy"]
    assert logs["loss"] == pytest.approx(expected[f"{tag}_loss"], abs=1e-5)
    assert logs["accuracy"] == pytest.approx(expected[f"{tag}_accuracy"], abs=1e-6)
    assert int(model.optimizer.iterations) == expected[f"{tag}_iterations"] == 2
    assert [layer.name for layer in model.layers] == ["dense", "dropout", "dense_1"]
    slots = model.optimizer.variables[1:]
    assert len(slots) == 8
    for i, var in enumerate(slots):
        np.testing.assert_array_equal(var.value, expected[f"{tag}_slot{i}"])


def test_keras3_learning_rate_comes_back(expected):
    assert load_model_h5(os.path.join(DATA, "keras3_model.h5")).optimizer.learning_rate == \
        pytest.approx(0.002)


def test_weights_only_h5_from_tf_keras(expected):
    model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(6,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(3, activation="softmax")])
    legacy_h5.load_weights_h5(model, os.path.join(DATA, "tf_keras_weights.h5"))
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected["tf_keras_pred"],
                               atol=1e-6)


# --- saves of single files (.h5, .weights.h5, .keras): lock, litter, typed write errors --------------
#: file name -> how it is saved in the child scripts below
SINGLE_FILE_SAVES = {"m.h5": "model", "w.h5": "weights", "w.weights.h5": "weights", "m.keras": "model"}

_SAVER = r'''
import os, signal, sys
from fastckpt import keras
def model(seed):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.layers.Dense(64, activation="relu", input_shape=(32,)),
                          keras.layers.Dense(4)])
    m.compile("adam", "sparse_categorical_crossentropy")
    return m
def save(m, path):
    (m.save if path.endswith(("m.h5", ".keras")) else m.save_weights)(path)
'''


def _child(script, *args, timeout=300):
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _SAVER + script, *map(str, args)],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("name", list(SINGLE_FILE_SAVES))
def test_killed_saves_leave_no_litter_after_the_next_save(tmp_path, name):
    # 100 saves SIGKILLed just before their rename (each leaves a whole temp), then one save.
    _child(r'''
path, kills = sys.argv[1], int(sys.argv[2])
m = model(1)
for _ in range(kills):
    pid = os.fork()
    if pid == 0:
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        save(m, path)
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
litter = [n for n in os.listdir(os.path.dirname(path)) if n != os.path.basename(path)]
print("left by the killed saves:", litter)
assert litter  # each kill leaves its whole temp (at least the last one's)
save(m, path)
''', tmp_path / name, 100)
    assert sorted(os.listdir(tmp_path)) == [name]


@pytest.mark.parametrize("name", ["m.h5", "w.h5", "w.weights.h5"])
def test_temp_removed_when_creating_the_h5_file_fails(tmp_path, monkeypatch, name):
    import errno
    real = h5py.File

    def full_disk(path, mode="r", *a, **k):
        if mode == "w":
            if isinstance(path, str):
                open(path, "wb").close()  # HDF5 had created the file when it ran out of space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, mode, *a, **k)

    monkeypatch.setattr(h5py, "File", full_disk)
    model = small_model()
    with pytest.raises(OSError) as err:
        (model.save if name == "m.h5" else model.save_weights)(str(tmp_path / name))
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / name)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", list(SINGLE_FILE_SAVES))
def test_directory_in_the_way_is_refused_before_writing(tmp_path, monkeypatch, name):
    from fastckpt.saving import keras_v3
    target = tmp_path / name
    (target / "inside").mkdir(parents=True)
    model = small_model()
    written = []
    for module, fn in [(legacy_h5, "save_weights_to_group"), (keras_v3, "_write_tree")]:
        real = getattr(module, fn)
        monkeypatch.setattr(module, fn, lambda *a, _real=real, **k: written.append(1) or _real(*a, **k))
    with pytest.raises(IsADirectoryError) as err:
        (model.save if SINGLE_FILE_SAVES[name] == "model" else model.save_weights)(str(target))
    assert err.value.filename == str(target)
    assert written == []  # refused before anything was written
    assert sorted(os.listdir(tmp_path)) == [name] and os.listdir(target) == ["inside"]
    os.rmdir(target / "inside")
    os.rmdir(target)
    (model.save if SINGLE_FILE_SAVES[name] == "model" else model.save_weights)(str(target))
    assert sorted(os.listdir(tmp_path)) == [name]


@pytest.mark.parametrize("name", list(SINGLE_FILE_SAVES))
def test_a_second_writer_waits_for_the_first(tmp_path, name):
    # Writer A pauses just before its rename; writer B must not write (nor sweep A's temp) until A
    # has committed; then B's save lands last.
    import subprocess
    import sys
    import time
    path, gate = tmp_path / name, tmp_path.parent / f"{tmp_path.name}-gate"
    a = subprocess.Popen([sys.executable, "-c", _SAVER + r'''
path, gate = sys.argv[1], sys.argv[2]
real = os.replace
def paused(*a, **k):
    open(gate + ".paused", "w").close()
    while not os.path.exists(gate + ".go"):
        __import__("time").sleep(0.01)
    return real(*a, **k)
os.replace = paused
save(model(1), path)
''', str(path), str(gate)])
    try:
        deadline = time.time() + 120
        while not os.path.exists(f"{gate}.paused"):
            assert a.poll() is None and time.time() < deadline, "writer A never paused"
            time.sleep(0.01)
        b = subprocess.Popen([sys.executable, "-c", _SAVER + r'''
save(model(2), sys.argv[1])
''', str(path)])
        time.sleep(3)
        b_done_early = b.poll() is not None
        open(f"{gate}.go", "w").close()
        assert a.wait(120) == 0 and b.wait(120) == 0
        assert not b_done_early, "writer B saved while writer A held the file"
    finally:
        for p in (a, locals().get("b")):
            if p is not None and p.poll() is None:
                p.kill()
    assert sorted(os.listdir(tmp_path)) == [name]
    _child(r'''
import numpy as np
path = sys.argv[1]
want = model(2)
if path.endswith(("m.h5", ".keras")):
    got = keras.models.load_model(path)
else:
    got = model(3)
    got.load_weights(path)
for x, y in zip(got.weights, want.weights, strict=True):
    np.testing.assert_array_equal(x.value, y.value)
''', path)


@pytest.mark.parametrize("name", list(SINGLE_FILE_SAVES))
def test_two_processes_saving_one_file_leave_one_whole_save(tmp_path, name):
    import subprocess
    import sys
    path = tmp_path / name
    loop = r'''
path, seed, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = model(seed)
for _ in range(rounds):
    save(m, path)
'''
    procs = [subprocess.Popen([sys.executable, "-c", _SAVER + loop, str(path), str(seed), "100"])
             for seed in (1, 2)]
    assert [p.wait(300) for p in procs] == [0, 0]
    assert sorted(os.listdir(tmp_path)) == [name]
    print(_child(r'''
import numpy as np
path = sys.argv[1]
if path.endswith(("m.h5", ".keras")):
    got = keras.models.load_model(path)
else:
    got = model(3)
    got.load_weights(path)
def same(m):
    return all(np.array_equal(x.value, y.value) for x, y in zip(got.weights, m.weights, strict=True))
matches = [seed for seed in (1, 2) if same(model(seed))]
assert len(matches) == 1, matches
print("the file holds the save of writer", matches[0])
''', path))


@pytest.mark.parametrize("name", list(SINGLE_FILE_SAVES))
def test_file_too_large_is_an_oserror_naming_the_file(tmp_path, name):
    # RLIMIT_FSIZE makes write() fail with EFBIG (SIGXFSZ ignored), as a full disk fails with ENOSPC.
    print(_child(r'''
import errno, resource
path = sys.argv[1]
m = model(1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    save(m, path)
except OSError as e:
    assert e.errno == errno.EFBIG and e.filename == path, (type(e), e.errno, e.filename, e)
    print("refused:", e)
else:
    raise SystemExit("saved past RLIMIT_FSIZE")
assert os.listdir(os.path.dirname(path)) == [], os.listdir(os.path.dirname(path))
''', tmp_path / name))
