"""Writes the golden checkpoints under tests/data with real TensorFlow (not with fastckpt).

Run from the repository root with an environment that has tensorflow-cpu and tf-keras 2.21:

    TF_CPP_MIN_LOG_LEVEL=3 python tests/data/make_golden.py

Outputs (all small, committed):
  small.*        six small tensors, via tf.raw_ops.SaveV2 (a/kernel = arange(12))
  dtypes.*       every dtype fastckpt supports, scalars, empty tensors, strings with NULs
  keras/cp.ckpt.*  tf_keras model.save_weights of a tiny compiled and fitted model (TF format)
  tfckpt/ckpt-1.*  tf.train.Checkpoint(model=..., optimizer=...).save of the same model
  manifest.json  for every file: key -> [dtype name, shape, sha256 of the value as TF reads it]

The tensor values of small/dtypes come from the numpy-only functions below, which the tests import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def small_tensors():
    """Six small tensors, in the order SaveV2 gets them (which is the data-file order)."""
    return {
        "a/bias": np.arange(4, dtype=np.float32),
        "a/kernel": np.arange(12, dtype=np.float32).reshape(3, 4),
        "blob": b"\x01\x02\x03",
        "names": [b"hello", b"", b"w\x00rld"],
        "scalar": np.float32(2.5),
        "step": np.int64(7),
    }


def dtype_tensors():
    """One tensor per dtype plus edge cases; bfloat16 is given as float32 values exactly representable."""
    rng = np.random.default_rng(1234)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal((2, 2, 2)),
        "f16": rng.standard_normal(7).astype(np.float16),
        "bf16_as_f32": np.array([1.0, -2.5, 0.15625, 65536.0, -0.0], np.float32),
        "i8": np.array([-128, -1, 0, 1, 127], np.int8),
        "i16": np.array([-32768, 0, 32767], np.int16),
        "i32": np.arange(-5, 7, dtype=np.int32).reshape(3, 4),
        "i64": np.array([-(2**63), 0, 2**63 - 1], np.int64),
        "u8": np.arange(256, dtype=np.uint8),
        "u16": np.array([0, 1, 65535], np.uint16),
        "u32": np.array([0, 1, 2**32 - 1], np.uint32),
        "u64": np.array([0, 1, 2**64 - 1], np.uint64),
        "bool": np.array([[True, False], [False, True]]),
        "c64": np.array([1 + 2j, -3.5 - 0.5j], np.complex64),
        "c128": np.array([[1e300 + 1j]], np.complex128),
        "scalar_f32": np.float32(3.25),
        "scalar_i64": np.int64(-42),
        "empty_f32": np.zeros((0,), np.float32),
        "empty_2d": np.zeros((2, 0, 3), np.int32),
        "str_2d": np.array([[b"a", b""], [b"\x00\xff", b"long" * 50]], dtype=object),
        "str_empty": np.zeros((0,), dtype=object),
        "str_scalar": b"\x00nul\x00",
        "z/last": np.float64(1.5),
    }


def value_digest(v) -> str:
    """sha256 of a value as TF returns it: raw LE bytes for numbers, len+bytes per string."""
    h = hashlib.sha256()
    a = np.asarray(v)
    if a.dtype == object or a.dtype.kind == "S":
        for x in a.reshape(-1):
            x = bytes(x)
            h.update(len(x).to_bytes(8, "little") + x)
    else:
        h.update(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()


# What main() regenerates under keras/ and tfckpt/ (the TF-format bundles and the state files
# TF writes beside them). Anything else there -- keras/make_golden.py and the Keras 3 / tf_keras
# .h5 and .keras goldens it writes -- belongs to another script and is never touched.
_SUFFIX = r"\.(?:index|data-\d{5}-of-\d{5})"
GENERATED = {"keras": re.compile(r"cp\.ckpt" + _SUFFIX + "|checkpoint"),
             "tfckpt": re.compile(r"ckpt-\d+" + _SUFFIX + "|checkpoint")}


def _generated(sub: str, name: str) -> bool:
    return GENERATED[sub].fullmatch(name) is not None


def clear_outputs(root: str = HERE) -> list:
    """Remove the files of a previous run that main() writes again, and only those."""
    removed = []
    for sub in GENERATED:
        d = os.path.join(root, sub)
        os.makedirs(d, exist_ok=True)
        for name in sorted(os.listdir(d)):
            if _generated(sub, name):
                os.remove(os.path.join(d, name))
                removed.append(f"{sub}/{name}")
    return removed


def main():
    import tensorflow as tf

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras

    def save_v2(prefix, tensors):
        names, values = [], []
        for k, v in tensors.items():
            names.append(k)
            if k.startswith("bf16"):
                values.append(tf.constant(v, dtype=tf.bfloat16))
            elif isinstance(v, (bytes, list)) or (isinstance(v, np.ndarray) and v.dtype == object):
                values.append(tf.constant(np.array(v, dtype=object), dtype=tf.string))
            else:
                values.append(tf.constant(v))
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=values)

    clear_outputs()
    save_v2(os.path.join(HERE, "small"), small_tensors())
    save_v2(os.path.join(HERE, "dtypes"), dtype_tensors())

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.layers.Dense(3, activation="relu", input_shape=(4,)),
                              keras.layers.Dropout(0.2), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    model.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    model.save_weights(os.path.join(HERE, "keras", "cp.ckpt"))
    ck = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    ck.save(os.path.join(HERE, "tfckpt", "ckpt"))

    manifest = {}
    for prefix in ("small", "dtypes", "keras/cp.ckpt", "tfckpt/ckpt-1"):
        r = tf.train.load_checkpoint(os.path.join(HERE, prefix))
        dtypes = r.get_variable_to_dtype_map()
        manifest[prefix] = {k: [dtypes[k].name, list(s), value_digest(r.get_tensor(k))]
                            for k, s in tf.train.list_variables(os.path.join(HERE, prefix))}
    with open(os.path.join(HERE, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    for sub in ("keras", "tfckpt"):  # only the bundle files are golden
        for name in os.listdir(os.path.join(HERE, sub)):
            if name == "checkpoint":
                os.remove(os.path.join(HERE, sub, name))


if __name__ == "__main__":
    main()
