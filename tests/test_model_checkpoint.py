"""ModelCheckpoint: templates, frequencies, messages, retention, background saves."""

import os

import numpy as np
import pytest

import fastckpt
from fastckpt import keras
from saving_helpers import held_deleted_files, needs_proc_fd


def model():
    m = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(8,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(3)])
    m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return m


#: The shape of the ``xy`` fixture (conftest.py): samples, features, classes.
XY = (64, 8, 3)


@pytest.mark.parametrize("background", [True, False])
def test_every_epoch_to_one_prefix_with_keras_messages(tmp_path, xy, capsys, background):
    m = model()
    path = str(tmp_path / "training_1" / "cp.ckpt")
    cb = keras.callbacks.ModelCheckpoint(path, save_weights_only=True, verbose=1, background=background)
    m.fit(*xy, epochs=3, verbose=0, callbacks=[cb])
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line] == [
        f"Epoch {e}: saving model to {path}" for e in (1, 2, 3)]
    assert fastckpt.train.latest_checkpoint(str(tmp_path / "training_1")) == path
    fresh = model()
    fresh.load_weights(path).assert_consumed()  # the last epoch's state, optimizer included
    np.testing.assert_array_equal(fresh.predict(xy[0], verbose=0), m.predict(xy[0], verbose=0))


@needs_proc_fd
def test_background_saves_across_fits_leave_only_the_checkpoint(tmp_path, xy):
    import time

    m = model()
    path = str(tmp_path / "cp.ckpt")
    cb = keras.callbacks.ModelCheckpoint(path, save_weights_only=True)
    for _ in range(2):  # the second fit reuses the snapshot the first one's worker was freeing
        m.fit(*xy, epochs=3, verbose=0, callbacks=[cb])
        assert sorted(os.listdir(tmp_path)) == ["checkpoint", "cp.ckpt.data-00000-of-00001", "cp.ckpt.index"]
        fresh = model()
        fresh.load_weights(path).assert_consumed()
        np.testing.assert_array_equal(fresh.predict(xy[0], verbose=0), m.predict(xy[0], verbose=0))
    deadline = time.monotonic() + 10
    while held_deleted_files(tmp_path) and time.monotonic() < deadline:  # the replaced files, freed after fit
        time.sleep(0.01)
    assert held_deleted_files(tmp_path) == []


def test_template_with_epoch_and_batch_frequency(tmp_path, xy):
    m = model()
    tpl = str(tmp_path / "training_2" / "cp-{epoch:04d}.ckpt")
    m.save_weights(tpl.format(epoch=0))
    cb = keras.callbacks.ModelCheckpoint(tpl, save_weights_only=True, save_freq=4)  # batches
    m.fit(*xy, epochs=3, batch_size=16, verbose=0, callbacks=[cb])  # 4 batches per epoch
    names = sorted(n for n in os.listdir(tmp_path / "training_2") if n.endswith(".index"))
    assert names == [f"cp-000{e}.ckpt.index" for e in range(4)]
    assert fastckpt.train.latest_checkpoint(str(tmp_path / "training_2")).endswith("cp-0003.ckpt")


def test_log_keys_in_template_and_unknown_key_fails_before_training(tmp_path, xy):
    m = model()
    cb = keras.callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch:02d}-{val_loss:.2f}.ckpt"),
                                         save_weights_only=True)
    m.fit(*xy, epochs=2, verbose=0, validation_split=0.25, callbacks=[cb])
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".index")]) == 2
    bad = keras.callbacks.ModelCheckpoint(str(tmp_path / "w-{val_acuracy:.2f}.ckpt"), save_weights_only=True)
    before = m.get_weights()
    with pytest.raises(KeyError, match="val_acuracy"):
        m.fit(*xy, epochs=1, verbose=0, validation_split=0.25, callbacks=[bad])
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))  # nothing trained


def test_period_is_deprecated_but_honoured(tmp_path, xy):
    with pytest.warns(UserWarning, match="period"):
        cb = keras.callbacks.ModelCheckpoint(str(tmp_path / "cp-{epoch}.ckpt"), save_weights_only=True,
                                             period=2)
    model().fit(*xy, epochs=5, verbose=0, callbacks=[cb])
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".index")) == ["cp-2.ckpt.index",
                                                                                "cp-4.ckpt.index"]


def test_save_best_only_and_retention_survive_a_restart(tmp_path, xy, capsys):
    tpl = str(tmp_path / "cp-{epoch:02d}.ckpt")
    m = model()
    cb = keras.callbacks.ModelCheckpoint(tpl, save_weights_only=True, monitor="loss", max_to_keep=2)
    m.fit(*xy, epochs=4, verbose=0, callbacks=[cb])
    kept = sorted(n for n in os.listdir(tmp_path) if n.endswith(".index"))
    assert kept == ["cp-03.ckpt.index", "cp-04.ckpt.index"]
    # A new callback (a restarted process) continues from the ledger and prunes the old files.
    cb2 = keras.callbacks.ModelCheckpoint(tpl, save_weights_only=True, monitor="loss", max_to_keep=2)
    m.fit(*xy, epochs=6, initial_epoch=4, verbose=0, callbacks=[cb2])
    kept = sorted(n for n in os.listdir(tmp_path) if n.endswith(".index"))
    assert kept == ["cp-05.ckpt.index", "cp-06.ckpt.index"]
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.ckpt"), save_weights_only=True,
                                           monitor="loss", save_best_only=True, verbose=1)
    m.fit(*xy, epochs=2, verbose=0, callbacks=[best])
    assert "loss improved from inf to" in capsys.readouterr().out


def test_background_save_errors_surface(tmp_path, xy):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    cb = keras.callbacks.ModelCheckpoint(str(blocker / "cp.ckpt"), save_weights_only=True)
    with pytest.raises(OSError):
        model().fit(*xy, epochs=2, verbose=0, callbacks=[cb])


def test_whole_model_checkpoints(tmp_path, xy):
    m = model()
    cb = keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.keras"))
    m.fit(*xy, epochs=2, verbose=0, callbacks=[cb])
    r = keras.models.load_model(str(tmp_path / "m-2.keras"))
    np.testing.assert_array_equal(r.predict(xy[0], verbose=0), m.predict(xy[0], verbose=0))


# --- save_best_only: what is (and is not) written, epoch by epoch ----------------------------------

class _Script(keras.callbacks.Callback):
    """Placed before ModelCheckpoint: sets ``logs[key]`` to a scripted value at each epoch end and
    records the weights of that epoch (what a save at that epoch would hold)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values, self.weights = key, values, []

    def on_epoch_end(self, epoch, logs=None):
        if self.key is not None:
            logs[self.key] = self.values[epoch]
        self.weights.append(self.model.get_weights())


class _Listing(keras.callbacks.Callback):
    """Placed after ModelCheckpoint: the checkpoint names on disk after each epoch."""

    def __init__(self, directory):
        super().__init__()
        self.directory, self.after = directory, []

    def on_epoch_end(self, epoch, logs=None):
        self.after.append(sorted(n for n in os.listdir(self.directory) if n.startswith("cp-")
                                 and not n.endswith((".data-00000-of-00001",))))


# (save_weights_only, suffix, names on disk for epoch e)
_KINDS = {
    "weights-tf": (True, ".ckpt", lambda e: [f"cp-{e}.ckpt.index"]),
    "weights-h5": (True, ".h5", lambda e: [f"cp-{e}.h5"]),
    "model-dir": (False, "", lambda e: [f"cp-{e}"]),
    "model-keras": (False, ".keras", lambda e: [f"cp-{e}.keras"]),
    "model-h5": (False, ".h5", lambda e: [f"cp-{e}.h5"]),
}
_VALUES = [0.5, 0.6, 0.4, 0.4, 0.3]


def _saved_weights(path, weights_only):
    if weights_only:
        m = model()
        m.load_weights(path)
        return m.get_weights()
    return keras.models.load_model(path).get_weights()


@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize("monitor,mode,improved", [
    ("val_loss", "min", [1, 3, 5]), ("val_loss", "auto", [1, 3, 5]),
    ("val_accuracy", "max", [1, 2]), ("val_accuracy", "auto", [1, 2]), ("score", "max", [1, 2])])
def test_save_best_only_writes_only_improving_epochs(tmp_path, xy, kind, monitor, mode, improved):
    weights_only, suffix, names = _KINDS[kind]
    script, listing = _Script(monitor, _VALUES), _Listing(tmp_path)
    cb = keras.callbacks.ModelCheckpoint(str(tmp_path / ("cp-{epoch}" + suffix)), monitor=monitor, mode=mode,
                                         save_best_only=True, save_weights_only=weights_only, background=False)
    model().fit(*xy, epochs=5, verbose=0, callbacks=[script, cb, listing])
    expected, on_disk = [], []
    for epoch in range(1, 6):
        if epoch in improved:
            expected = sorted(expected + names(epoch))
        on_disk.append(expected)
    assert listing.after == on_disk
    assert cb.best == _VALUES[improved[-1] - 1]
    for epoch in improved:  # each file holds the weights of its own epoch
        got = _saved_weights(str(tmp_path / f"cp-{epoch}{suffix}"), weights_only)
        assert len(got) == len(script.weights[epoch - 1])
        for a, b in zip(got, script.weights[epoch - 1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind,background", [(k, False) for k in sorted(_KINDS)] + [("weights-tf", True)])
def test_save_best_only_to_one_path_keeps_the_best_epoch(tmp_path, xy, kind, background, capsys):
    weights_only, suffix, _ = _KINDS[kind]
    path = str(tmp_path / ("best" + (suffix or "_model")))
    script = _Script("val_loss", _VALUES)
    cb = keras.callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True, verbose=1,
                                         save_weights_only=weights_only, background=background)
    model().fit(*xy, epochs=5, verbose=0, callbacks=[script, cb])
    got = _saved_weights(path, weights_only)
    assert len(got) == len(script.weights[4])
    for a, b in zip(got, script.weights[4]):  # epoch 5 (0.3) is the best
        np.testing.assert_array_equal(a, b)
    out = [line for line in capsys.readouterr().out.splitlines() if line]
    assert out == [
        f"Epoch 1: val_loss improved from inf to 0.50000, saving model to {path}",
        "Epoch 2: val_loss did not improve from 0.50000",
        f"Epoch 3: val_loss improved from 0.50000 to 0.40000, saving model to {path}",
        "Epoch 4: val_loss did not improve from 0.40000",
        f"Epoch 5: val_loss improved from 0.40000 to 0.30000, saving model to {path}"]
    # Stop after epoch 4: the file holds epoch 3 (the best so far), not epoch 4.
    script2 = _Script("val_loss", _VALUES)
    path2 = str(tmp_path / ("best2" + (suffix or "_model")))
    cb2 = keras.callbacks.ModelCheckpoint(path2, monitor="val_loss", save_best_only=True,
                                          save_weights_only=weights_only, background=background)
    model().fit(*xy, epochs=4, verbose=0, callbacks=[script2, cb2])
    got = _saved_weights(path2, weights_only)
    assert any(not np.array_equal(a, b) for a, b in zip(script2.weights[3], script2.weights[2]))
    for a, b in zip(got, script2.weights[2]):
        np.testing.assert_array_equal(a, b)


def test_save_best_only_threshold_and_missing_monitor(tmp_path, xy):
    script = _Script("val_loss", _VALUES)
    cb = keras.callbacks.ModelCheckpoint(str(tmp_path / "cp-{epoch}.ckpt"), monitor="val_loss", save_best_only=True,
                                         save_weights_only=True, initial_value_threshold=0.45)
    model().fit(*xy, epochs=5, verbose=0, callbacks=[script, cb])
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".index")) == ["cp-3.ckpt.index",
                                                                                "cp-5.ckpt.index"]
    # A monitor that is not in the logs: a warning each epoch and nothing written.
    other = tmp_path / "other"
    cb = keras.callbacks.ModelCheckpoint(str(other / "cp-{epoch}.ckpt"), monitor="val_los", save_best_only=True,
                                         save_weights_only=True)
    with pytest.warns(UserWarning, match="val_los available, skipping") as record:
        model().fit(*xy, epochs=2, verbose=0, callbacks=[_Script("val_loss", _VALUES), cb])
    assert len([w for w in record if "val_los available" in str(w.message)]) == 2
    assert not other.exists() or os.listdir(other) == []
