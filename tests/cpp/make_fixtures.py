"""Writes what the C/C++ tests load, with the installed fastckpt (run by tests/cpp/run.sh and
tests/test_embed.py): ``python tests/cpp/make_fixtures.py OUTDIR``.

OUTDIR/
  model/            the tutorial model (Dense 512 relu, Dropout 0.2, Dense 10), fitted one epoch,
                    saved as a model directory (plan stored inside)
  weights/cp.ckpt   the same model, model.save_weights (plan stored inside)
  unaligned/ckpt    the same weights behind a 1-byte tensor: every float is misaligned (copy path)
  custom/           a model with a custom Python layer: no plan
  tf.plan           a hand-written plan for tests/data/keras/cp.ckpt, written by TensorFlow
  x.txt, x.f32      inputs (rows of 784 floats; text with 9 significant digits = exact float32)
  y32.f32           model.predict(x) (Keras' batch size 32); yall.f32: batch_size=len(x)
  tf_x.f32, tf_y.f32  inputs and fastckpt's predictions for the TensorFlow checkpoint
  hostile/dup       an .index whose index block lists one data block 1000 times (refused)
  info.txt          rows, n_inputs, n_outputs and the paths above, one "key value" a line
"""

from __future__ import annotations

import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TF_CKPT = os.path.join(HERE, "..", "data", "keras", "cp.ckpt")
ROWS = 100


def save_model_dir(model, path: str) -> None:
    """``model.save(path)``: the directory format, inference plan included."""
    model.save(path)


def tutorial_model(seed: int = 0):
    """The tutorial's model (fastckpt.demo.create_model), seeded and trained one epoch."""
    from fastckpt import keras
    from fastckpt.demo import create_model
    keras.utils.set_random_seed(seed)
    model = create_model()
    rng = np.random.default_rng(seed)
    model.fit(rng.random((256, 784), dtype=np.float32), rng.integers(0, 10, 256), epochs=1, verbose=0)
    return model


def main(out: str) -> None:
    from fastckpt import keras
    from fastckpt.checkpoint.bundle import BundleReader, write_bundle
    from fastckpt.layers import Layer

    os.makedirs(out, exist_ok=True)
    model = tutorial_model()
    save_model_dir(model, os.path.join(out, "model"))
    model.save_weights(os.path.join(out, "weights", "cp.ckpt"))

    # Misaligned copy: a 1-byte tensor written first shifts every float by one byte.
    with BundleReader(os.path.join(out, "weights", "cp.ckpt")) as r:
        tensors = {"a_pad": np.zeros(1, np.uint8)}
        tensors.update({k: r.get_tensor(k) for k in r.keys()})
    write_bundle(os.path.join(out, "unaligned", "ckpt"), tensors)

    class Scale(Layer):  # a custom Python layer: C++ cannot run it, so no plan is stored
        def build(self, input_shape):
            self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="ones")
            self.built = True

        def call(self, inputs, training=None):
            return inputs * self.w.value

    custom = keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), Scale()])
    custom.build((None, 3))
    save_model_dir(custom, os.path.join(out, "custom"))

    x = np.random.default_rng(1).random((ROWS, 784), dtype=np.float32)
    x.tofile(os.path.join(out, "x.f32"))
    with open(os.path.join(out, "x.txt"), "w") as f:
        for row in x:
            f.write(" ".join(f"{v:.9g}" for v in row) + "\n")
    model.predict(x, verbose=0).tofile(os.path.join(out, "y32.f32"))
    model.predict(x, batch_size=ROWS, verbose=0).tofile(os.path.join(out, "yall.f32"))

    # The TensorFlow-written checkpoint: the architecture make_golden.py built, as a plan.
    with open(os.path.join(out, "tf.plan"), "w") as f:
        f.write("fastckpt-plan 1\n# tf_keras: Dense(3, relu, input 4), Dropout(0.2), Dense(2)\ninput 4\n"
                "dense 3 relu layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE "
                "layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE\ndropout 0.2\n"
                "dense 2 linear layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE "
                "layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE\n")
    tfm = keras.Sequential([keras.layers.Dense(3, activation="relu", input_shape=(4,)),
                            keras.layers.Dropout(0.2), keras.layers.Dense(2)])
    tfm.load_weights(TF_CKPT).expect_partial()
    tx = np.random.default_rng(2).random((16, 4), dtype=np.float32)
    tx.tofile(os.path.join(out, "tf_x.f32"))
    tfm.predict(tx, verbose=0).tofile(os.path.join(out, "tf_y.f32"))

    write_repeated_block_index(os.path.join(out, "hostile", "dup"))

    with open(os.path.join(out, "info.txt"), "w") as f:
        f.write(f"rows {ROWS}\nn_inputs 784\nn_outputs 10\ntf_ckpt {os.path.abspath(TF_CKPT)}\n")


def write_repeated_block_index(prefix: str, handles: int = 1000) -> None:
    """A table whose index block lists one 64 KiB data block (no entries) `handles` times, after a
    block holding the bundle header (tests/test_hostile_index.py builds bigger ones)."""
    from fastckpt import ops

    def varint(n):
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    def contents(entries, restarts):
        return entries + b"\0" * 4 * restarts + struct.pack("<I", restarts)

    def with_trailer(c):
        return c + b"\0" + struct.pack("<I", ops.crc_mask(ops.crc32c(c + b"\0")))

    header = contents(varint(0) + varint(0) + varint(2) + bytes([0x08, 0x01]), 1)
    big = contents(b"", (64 << 10) // 4 - 1)
    meta = contents(b"", 1)
    h_hdr, h_big = (0, len(header)), (len(header) + 5, len(big))
    out = with_trailer(header) + with_trailer(big)
    h_meta = (len(out), len(meta))
    out += with_trailer(meta)
    entries = b"".join(varint(0) + varint(8) + varint(len(v)) + b"k%07d" % i + v
                       for i, v in enumerate(varint(o) + varint(n) for o, n in [h_hdr] + [h_big] * handles))
    index = contents(entries, 1)
    h_index = (len(out), len(index))
    out += with_trailer(index)
    out += (varint(h_meta[0]) + varint(h_meta[1]) + varint(h_index[0]) + varint(h_index[1])).ljust(40, b"\0")
    out += struct.pack("<Q", 0xDB4775248B80FB57)
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with open(prefix + ".index", "wb") as f:
        f.write(out)
    open(prefix + ".data-00000-of-00001", "wb").close()


if __name__ == "__main__":
    main(sys.argv[1])
