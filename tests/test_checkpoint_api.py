"""save_weights / load_weights, the state file, Checkpoint, CheckpointManager and the CLI."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastckpt
from fastckpt import keras
from fastckpt.errors import CheckpointMismatchError, CheckpointNotFoundError, CorruptCheckpointError


def model(units=512, compiled=True):
    m = keras.Sequential([keras.layers.Dense(units, activation="relu", input_shape=(784,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    if compiled:
        m.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return m


#: The shape of the ``xy`` fixture (conftest.py): samples, features, classes.
XY = (64, 784, 10)


def test_round_trip_restores_weights_optimizer_and_accuracy(tmp_path, xy):
    x, y = xy
    a = model()
    a.fit(x, y, epochs=2, verbose=0)
    prefix = str(tmp_path / "training_1" / "cp.ckpt")
    a.save_weights(prefix)
    assert sorted(os.listdir(tmp_path / "training_1")) == [
        "checkpoint", "cp.ckpt.data-00000-of-00001", "cp.ckpt.index"]
    assert (tmp_path / "training_1" / "checkpoint").read_text() == (
        'model_checkpoint_path: "cp.ckpt"\nall_model_checkpoint_paths: "cp.ckpt"\n')
    b = model()
    assert b.evaluate(x, y, verbose=0) != a.evaluate(x, y, verbose=0)
    status = b.load_weights(prefix)
    status.assert_consumed()
    assert b.evaluate(x, y, verbose=0) == a.evaluate(x, y, verbose=0)
    assert len(a.optimizer.variables) == len(b.optimizer.variables)
    for va, vb in zip(a.optimizer.variables, b.optimizer.variables):
        assert np.array_equal(va.numpy(), vb.numpy())
    # Training continues identically from the restored state.
    for m in (a, b):
        m._shuffle_seed, m._shuffle_epochs_drawn = 1, 0
        m.layers[1].rng_seed, m.layers[1].rng_offset = 5, 0
        m.fit(x, y, epochs=1, verbose=0)
    assert len(a.get_weights()) == len(b.get_weights())
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


def test_uncompiled_model_loads_weights_and_reports_unused_optimizer(tmp_path, xy):
    a = model()
    a.fit(*xy, epochs=1, verbose=0)
    prefix = str(tmp_path / "ck")
    a.save_weights(prefix)
    b = model(compiled=False)
    status = b.load_weights(prefix)
    np.testing.assert_array_equal(b.predict(xy[0], verbose=0), a.predict(xy[0], verbose=0))
    assert any(k.startswith("optimizer/") for k in status.unused_keys)
    with pytest.raises(AssertionError, match="not fully consumed"):
        status.assert_consumed()
    status.expect_partial()
    status.assert_existing_objects_matched()


def test_mismatch_lists_what_is_wrong_and_changes_nothing(tmp_path, xy):
    a = model(units=256)
    prefix = str(tmp_path / "ck")
    a.save_weights(prefix)
    b = model(units=512)
    before = b.get_weights()
    with pytest.raises(CheckpointMismatchError) as e:
        b.load_weights(prefix)
    msg = str(e.value)
    assert ("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE: expected float32(784, 512), "
            "found float32(784, 256)") in msg
    assert "expected float32(512, 10), found float32(256, 10)" in msg
    assert len(before) == len(b.get_weights())
    assert all(np.array_equal(p, q) for p, q in zip(before, b.get_weights()))
    bigger = keras.Sequential([keras.layers.Dense(256, input_shape=(784,)), keras.layers.Dropout(0.1),
                               keras.layers.Dense(10), keras.layers.Dense(3)])
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint: dense_.*kernel"):
        bigger.load_weights(prefix)


def test_skip_mismatch_keeps_the_rest(tmp_path):
    a = keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), keras.layers.Dense(2)])
    prefix = str(tmp_path / "ck")
    a.save_weights(prefix)
    b = keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), keras.layers.Dense(5)])
    with pytest.warns(UserWarning, match="mismatched shape"):
        b.load_weights(prefix, skip_mismatch=True)
    np.testing.assert_array_equal(b.layers[0].kernel.numpy(), a.layers[0].kernel.numpy())


def test_missing_and_corrupt_checkpoints_are_typed_errors(tmp_path, xy):
    b = model()
    with pytest.raises(CheckpointNotFoundError, match="nothing"):
        b.load_weights(str(tmp_path / "nothing"))
    a = model()
    prefix = str(tmp_path / "ck")
    a.save_weights(prefix)
    with fastckpt.checkpoint.BundleReader(prefix) as r:
        off = r.info("layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE")["offset"]
    path = prefix + ".data-00000-of-00001"
    raw = bytearray(open(path, "rb").read())
    raw[off] ^= 1
    open(path, "wb").write(raw)
    before = b.get_weights()
    with pytest.raises(CorruptCheckpointError) as e:
        b.load_weights(prefix)
    assert e.value.tensor == "layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"
    assert len(before) == len(b.get_weights())
    assert all(np.array_equal(p, q) for p, q in zip(before, b.get_weights()))


def test_overwrite_false_refuses(tmp_path):
    a = model(compiled=False)
    prefix = str(tmp_path / "ck")
    a.save_weights(prefix)
    with pytest.raises(FileExistsError):
        a.save_weights(prefix, overwrite=False)


def test_latest_checkpoint_follows_a_moved_directory(tmp_path):
    a = model(compiled=False)
    a.save_weights(str(tmp_path / "run" / "cp-0001.ckpt"))
    a.save_weights(str(tmp_path / "run" / "cp-0002.ckpt"))
    assert fastckpt.train.latest_checkpoint(str(tmp_path / "run")) == str(tmp_path / "run" / "cp-0002.ckpt")
    shutil.move(str(tmp_path / "run"), str(tmp_path / "moved"))
    latest = fastckpt.train.latest_checkpoint(str(tmp_path / "moved"))
    assert latest == str(tmp_path / "moved" / "cp-0002.ckpt")
    model(compiled=False).load_weights(latest)
    os.remove(latest + ".index")  # an incomplete checkpoint is never returned
    assert fastckpt.train.latest_checkpoint(str(tmp_path / "moved")) is None
    assert fastckpt.train.latest_checkpoint(str(tmp_path / "empty")) is None


def test_h5_weights_round_trip(tmp_path, xy):
    a = model()
    a.fit(*xy, epochs=1, verbose=0)
    a.save_weights(str(tmp_path / "w.h5"))
    b = model()
    b.load_weights(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(b.predict(xy[0], verbose=0), a.predict(xy[0], verbose=0))
    with pytest.raises(CheckpointMismatchError, match="784, 512"):
        model(units=128).load_weights(str(tmp_path / "w.h5"))


def test_checkpoint_and_manager_numbering_and_retention(tmp_path, xy):
    a = model()
    a.fit(*xy, epochs=1, verbose=0)
    ckpt = fastckpt.train.Checkpoint(model=a, optimizer=a.optimizer)
    mgr = fastckpt.train.CheckpointManager(ckpt, str(tmp_path / "mgr"), max_to_keep=3)
    paths = [mgr.save() for _ in range(5)]
    assert [os.path.basename(p) for p in paths] == [f"ckpt-{i}" for i in range(1, 6)]
    assert [os.path.basename(p) for p in mgr.checkpoints] == ["ckpt-3", "ckpt-4", "ckpt-5"]
    assert not os.path.exists(paths[0] + ".index")
    keys = dict(fastckpt.train.list_variables(str(tmp_path / "mgr")))
    assert "save_counter/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE" in keys  # shortest path wins
    # A new manager over the same directory (a restarted process) picks up where it was.
    b = model()
    ckpt2 = fastckpt.train.Checkpoint(model=b, optimizer=b.optimizer)
    mgr2 = fastckpt.train.CheckpointManager(ckpt2, str(tmp_path / "mgr"), max_to_keep=3)
    assert mgr2.restore_or_initialize() == paths[-1]
    assert int(ckpt2.save_counter.numpy()) == 5
    assert os.path.basename(mgr2.save()) == "ckpt-6"
    np.testing.assert_array_equal(b.predict(xy[0], verbose=0), a.predict(xy[0], verbose=0))


def test_load_checkpoint_reader_gives_read_only_views(tmp_path):
    a = model(compiled=False)
    prefix = str(tmp_path / "ck")
    a.save_weights(prefix)
    reader = fastckpt.train.load_checkpoint(prefix)
    k = reader.get_tensor("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert not k.flags.writeable and np.array_equal(k, a.weights[0].numpy())
    assert reader.get_variable_to_shape_map()["layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"] == [10]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastckpt", *args], capture_output=True, text=True,
                          cwd=cwd)


def test_cli_ls_and_verify(tmp_path):
    a = model()
    a.fit(np.zeros((4, 784), np.float32), np.zeros(4, int), verbose=0)
    a.save_weights(str(tmp_path / "run" / "cp.ckpt"))
    out = _cli("ls", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0
    assert "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE  float32  [784,512]" in out.stdout
    assert "1605632" in out.stdout
    ok = _cli("verify", str(tmp_path / "run" / "cp.ckpt"), cwd=tmp_path)
    assert ok.returncode == 0 and "OK" in ok.stdout
    prefix = str(tmp_path / "run" / "cp.ckpt")
    with fastckpt.checkpoint.BundleReader(prefix) as r:
        off = r.info("optimizer/_variables/3/.ATTRIBUTES/VARIABLE_VALUE")["offset"]
    path = prefix + ".data-00000-of-00001"
    raw = bytearray(open(path, "rb").read())
    raw[off + 5] ^= 0x40
    open(path, "wb").write(raw)
    bad = _cli("verify", prefix, cwd=tmp_path)
    assert bad.returncode == 1
    assert "optimizer/_variables/3/.ATTRIBUTES/VARIABLE_VALUE" in bad.stderr
    assert "cp.ckpt.data-00000-of-00001" in bad.stderr


def test_state_file_rewritten_only_when_needed(tmp_path):
    """Saving to one prefix every epoch writes identical `checkpoint` bytes: the file this process
    wrote is left in place then (same inode), but a change of content, a file changed by someone
    else, a missing file, or a first durable write after a non-durable one replaces it."""
    from fastckpt.checkpoint import state
    d, path = str(tmp_path), str(tmp_path / "checkpoint")
    state.write_state(d, os.path.join(d, "cp.ckpt"))
    ino = os.stat(path).st_ino
    state.write_state(d, os.path.join(d, "cp.ckpt"))
    assert os.stat(path).st_ino == ino  # unchanged: not replaced
    state.write_state(d, os.path.join(d, "other.ckpt"))
    assert os.stat(path).st_ino != ino and state.read_state(d).model_checkpoint_path == "other.ckpt"
    with open(path, "w") as f:  # someone else rewrites it in place
        f.write('model_checkpoint_path: "x"\nall_model_checkpoint_paths: "x"\n')
    state.write_state(d, os.path.join(d, "other.ckpt"))
    assert state.read_state(d).model_checkpoint_path == "other.ckpt"
    os.remove(path)
    state.write_state(d, os.path.join(d, "other.ckpt"))
    assert state.read_state(d).model_checkpoint_path == "other.ckpt"
    state.write_state(d, os.path.join(d, "third.ckpt"), fsync=False)
    ino = os.stat(path).st_ino
    state.write_state(d, os.path.join(d, "third.ckpt"), fsync=False)
    assert os.stat(path).st_ino == ino
    state.write_state(d, os.path.join(d, "third.ckpt"))  # now asked to be durable: written again
    assert os.stat(path).st_ino != ino
