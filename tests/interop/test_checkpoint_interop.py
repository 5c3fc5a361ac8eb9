"""TensorFlow's own readers accept fastckpt checkpoints, and fastckpt reads TensorFlow's.

Versions pinned by CI: tensorflow-cpu 2.21.0, tf-keras 2.21.0.
"""

import os

import numpy as np
import pytest

import fastckpt
from fastckpt import keras
from interop.conftest import require

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _ours(compiled=True, seed=0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.layers.Dense(512, activation="relu", input_shape=(784,)),
                          keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    if compiled:
        m.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()])
    return m


def _theirs(tk, compiled=True):
    m = tk.Sequential([tk.layers.Dense(512, activation="relu", input_shape=(784,)),
                       tk.layers.Dropout(0.2), tk.layers.Dense(10)])
    if compiled:
        m.compile(optimizer="adam", loss=tk.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tk.metrics.SparseCategoricalAccuracy()])
    return m


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    return rng.random((96, 784), dtype=np.float32), rng.integers(0, 10, 96)


@pytest.fixture
def trained(data, tmp_path):
    x, y = data
    m = _ours()
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    prefix = str(tmp_path / "ck" / "cp.ckpt")
    m.save_weights(prefix)
    return m, prefix


def test_tf_reads_every_tensor_with_crc_checks(trained):
    tf = require("tensorflow")
    m, prefix = trained
    reader = tf.train.load_checkpoint(prefix)
    names = dict(tf.train.list_variables(prefix))
    for name in names:
        reader.get_tensor(name)
    k = reader.get_tensor("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert k.dtype == np.float32 and np.array_equal(k, m.weights[0].numpy())
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 6
    assert tf.train.latest_checkpoint(os.path.dirname(prefix)) == prefix


def test_tf_keras_load_weights_restores_weights_and_adam(trained, data):
    require("tensorflow")
    tk = require("tf_keras")
    m, prefix = trained
    x, y = data
    theirs = _theirs(tk)
    status = theirs.load_weights(prefix)
    theirs.optimizer.build(theirs.trainable_variables)
    status.assert_consumed()
    np.testing.assert_allclose(theirs.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5)
    assert int(theirs.optimizer.iterations.numpy()) == 6
    ours_slots = [v.numpy() for v in m.optimizer.variables[1:]]
    their_slots = [v.numpy() for v in theirs.optimizer.variables[1:]]
    assert len(ours_slots) == len(their_slots) == 8
    for a, b in zip(ours_slots, their_slots):
        assert np.array_equal(a, b)


def test_tf_keras_uncompiled_model_loads_our_weights(trained, data):
    require("tensorflow")
    tk = require("tf_keras")
    m, prefix = trained
    theirs = _theirs(tk, compiled=False)
    theirs.load_weights(prefix).expect_partial()
    np.testing.assert_allclose(theirs.predict(data[0], verbose=0), m.predict(data[0], verbose=0), atol=1e-5)


def test_we_load_tf_keras_checkpoint_with_optimizer(tmp_path, data):
    require("tensorflow")
    tk = require("tf_keras")
    x, y = data
    theirs = _theirs(tk)
    theirs.fit(x, y, epochs=1, batch_size=32, verbose=0)
    prefix = str(tmp_path / "tf" / "cp.ckpt")
    theirs.save_weights(prefix)
    assert fastckpt.train.latest_checkpoint(str(tmp_path / "tf")) == prefix
    ours = _ours()
    ours.load_weights(prefix).assert_consumed()
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-5)
    assert int(ours.optimizer.iterations.numpy()) == 3
    assert len(ours.optimizer.variables) == len(theirs.optimizer.variables)
    for a, b in zip(ours.optimizer.variables[1:], theirs.optimizer.variables[1:]):
        assert np.array_equal(a.numpy(), b.numpy())
    # Training continues from the same state in both.
    assert ours.evaluate(x, y, verbose=0)[0] == pytest.approx(theirs.evaluate(x, y, verbose=0)[0], abs=1e-5)


def test_we_load_legacy_optimizer_checkpoint(tmp_path, data):
    require("tensorflow")
    tk = require("tf_keras")
    x, y = data
    theirs = _theirs(tk, compiled=False)
    theirs.compile(optimizer=tk.optimizers.legacy.Adam(),
                   loss=tk.losses.SparseCategoricalCrossentropy(from_logits=True))
    theirs.fit(x, y, epochs=1, batch_size=32, verbose=0)
    prefix = str(tmp_path / "legacy" / "cp.ckpt")
    theirs.save_weights(prefix)
    ours = _ours()
    ours.load_weights(prefix)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=1e-5)
    assert int(ours.optimizer.iterations.numpy()) == 3
    m_theirs = theirs.optimizer.get_slot(theirs.layers[0].kernel, "m").numpy()
    assert np.array_equal(ours.optimizer.get_slot(ours.layers[0].kernel, "m").numpy(), m_theirs)


def test_checkpoint_manager_both_ways(tmp_path, data):
    tf = require("tensorflow")
    tk = require("tf_keras")
    ours = _ours()
    ours.fit(*data, epochs=1, verbose=0)
    manager = fastckpt.train.CheckpointManager(fastckpt.train.Checkpoint(model=ours),
                                               str(tmp_path / "mgr"), max_to_keep=2)
    for _ in range(4):
        manager.save()
    assert [os.path.basename(p) for p in manager.checkpoints] == ["ckpt-3", "ckpt-4"]
    theirs = _theirs(tk, compiled=False)
    ckpt = tf.train.Checkpoint(model=theirs)
    latest = tf.train.latest_checkpoint(str(tmp_path / "mgr"))
    assert latest.endswith("ckpt-4")
    ckpt.restore(latest).expect_partial().assert_existing_objects_matched()
    assert int(ckpt.save_counter) == 4
    np.testing.assert_allclose(theirs.predict(data[0], verbose=0), ours.predict(data[0], verbose=0), atol=1e-5)
    # ... and TF's manager continues our numbering; we read its checkpoint back.
    tf_manager = tf.train.CheckpointManager(ckpt, str(tmp_path / "mgr"), max_to_keep=2)
    path = tf_manager.save()
    assert path.endswith("ckpt-5")
    again = _ours(compiled=False)
    ours_ckpt = fastckpt.train.Checkpoint(model=again)
    ours_ckpt.restore(fastckpt.train.latest_checkpoint(str(tmp_path / "mgr"))).assert_existing_objects_matched()
    assert int(ours_ckpt.save_counter.numpy()) == 5
    np.testing.assert_allclose(again.predict(data[0], verbose=0), ours.predict(data[0], verbose=0), atol=1e-5)


def test_corrupted_tensor_is_refused_by_both(trained):
    tf = require("tensorflow")
    m, prefix = trained
    data_file = prefix + ".data-00000-of-00001"
    key = "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    with fastckpt.checkpoint.BundleReader(prefix) as r:
        offset = r.info(key)["offset"]
    raw = bytearray(open(data_file, "rb").read())
    raw[offset + 100] ^= 0xFF  # inside the first kernel
    with open(data_file, "wb") as f:
        f.write(raw)
    with pytest.raises(Exception, match="(?i)checksum|data loss"):
        tf.train.load_checkpoint(prefix).get_tensor("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    with pytest.raises(fastckpt.errors.CorruptCheckpointError):
        _ours().load_weights(prefix)
