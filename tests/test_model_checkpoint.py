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


@pytest.fixture
def xy(rng):
    x = rng.random((64, 8), dtype=np.float32)
    return x, x[:, :3].argmax(1)


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
