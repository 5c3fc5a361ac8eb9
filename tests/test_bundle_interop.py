"""TensorFlow reads what fastckpt writes (and agrees byte for byte on what it writes itself).

Skipped when TensorFlow is not installed; CI installs tensorflow-cpu and tf-keras.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastckpt.checkpoint import BundleReader, write_bundle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytestmark = pytest.mark.interop
tf = ml_dtypes = None  # set by _peers before each test


@pytest.fixture(autouse=True)
def _peers():
    """Imported per test, not at module level: a missing peer is then a skip of each test (a
    failure under FASTCKPT_REQUIRE_INTEROP=1), never a silently skipped module."""
    global tf, ml_dtypes
    tf = pytest.importorskip("tensorflow")
    ml_dtypes = pytest.importorskip("ml_dtypes")
DATA = os.path.join(os.path.dirname(__file__), "data")


def every_dtype():
    rng = np.random.default_rng(3)
    t = {name: (rng.standard_normal((4, 3)) * 50).astype(name)
         for name in ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
                      "uint16", "uint32", "uint64", "complex64", "complex128"]}
    t["bfloat16"] = rng.standard_normal(6).astype(ml_dtypes.bfloat16)
    t["bool"] = rng.random(5) > 0.5
    t["scalar"] = np.float32(1.25)
    t["empty"] = np.zeros((3, 0), np.float64)
    t["strings"] = np.array([[b"a\x00b", b""], [b"\xff" * 70000, b"x"]], dtype=object)
    t["string_scalar"] = b"\x00\x01"
    t["string_empty"] = np.zeros((0,), dtype=object)
    t["zz/" + "k" * 300] = np.arange(3, dtype=np.int64)
    return t


@pytest.mark.parametrize("num_shards", [1, 3])
def test_tf_reads_every_tensor(tmp_path, num_shards):
    tensors = every_dtype()
    prefix = str(tmp_path / "ck")
    write_bundle(prefix, tensors, num_shards=num_shards)
    listed = dict(tf.train.list_variables(prefix))
    assert sorted(listed) == sorted(tensors)
    r = tf.train.load_checkpoint(prefix)
    dtypes = r.get_variable_to_dtype_map()
    for k, v in tensors.items():
        got = r.get_tensor(k)  # TF verifies the CRC here
        if isinstance(v, bytes):
            assert got == v and dtypes[k] == tf.string
            continue
        v = np.asarray(v)
        assert tuple(listed[k]) == v.shape, k
        if v.dtype == object:
            assert dtypes[k] == tf.string and got.shape == v.shape and list(got.ravel()) == list(v.ravel())
        else:
            assert dtypes[k].as_numpy_dtype == v.dtype, k
            assert got.dtype == v.dtype and np.array_equal(got, v), k


def test_tf_detects_our_crc(tmp_path):
    prefix = str(tmp_path / "ck")
    write_bundle(prefix, {"w": np.arange(100, dtype=np.float32)})
    path = prefix + ".data-00000-of-00001"
    b = bytearray(open(path, "rb").read())
    b[10] ^= 1
    open(path, "wb").write(bytes(b))
    with pytest.raises((tf.errors.OpError, RuntimeError), match="Checksum does not match"):
        tf.train.load_checkpoint(prefix).get_tensor("w")


def test_large_index_identical_to_tf(tmp_path):
    names = [f"block_{i // 7}/layer_{i:05d}/kernel/.ATTRIBUTES/VARIABLE_VALUE" + "/x" * (i % 50)
             for i in range(4000)]
    values = [np.full((i % 3 + 1,), i, np.float32) for i in range(len(names))]
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "tf"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(v) for v in values])
    write_bundle(tmp_path / "ours", dict(zip(names, values)))
    tf_index = open(tmp_path / "tf.index", "rb").read()
    assert len(tf_index) > 262144
    assert open(tmp_path / "ours.index", "rb").read() == tf_index
    assert open(tmp_path / "ours.data-00000-of-00001", "rb").read() == \
        open(tmp_path / "tf.data-00000-of-00001", "rb").read()
    with BundleReader(tmp_path / "tf") as r:
        r.verify()
        assert r.keys() == sorted(names) and r.get_tensor(names[1234]).tolist() == [1234.0] * 2


def test_tf_keras_load_weights_from_our_rewrite(tmp_path):
    """Re-write the TF-written Keras checkpoint with fastckpt; tf_keras restores it."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    keras = pytest.importorskip("tf_keras")
    with BundleReader(os.path.join(DATA, "keras", "cp.ckpt")) as r:
        order = sorted(r.keys(), key=lambda k: (r.info(k)["shard"], r.info(k)["offset"]))
        tensors = {k: r.get_tensor(k) for k in order}
    write_bundle(tmp_path / "cp.ckpt", tensors)
    for suffix in (".index", ".data-00000-of-00001"):  # same tensors, same order: same bytes
        assert open(tmp_path / ("cp.ckpt" + suffix), "rb").read() == \
            open(os.path.join(DATA, "keras", "cp.ckpt" + suffix), "rb").read()
    model = keras.Sequential([keras.layers.Dense(3, activation="relu", input_shape=(4,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(2)])
    model.load_weights(str(tmp_path / "cp.ckpt")).expect_partial()
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(),
                                  tensors["layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"])
