"""Smoke test of an *installed* fastckpt: train, save, load, predict, from outside the source tree.

Run by tools/build_dist.sh (the repaired wheel and the sdist, each in a fresh venv) and by
cibuildwheel's test command. With ``--embed-dir DIR`` it also writes a saved model directory, its
inputs and Python's predictions there, for the C++ example (examples/embed) to check against.

    python tools/smoke.py [--embed-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-dir", help="also write model/, x.txt and y.f32 here for examples/embed")
    args = parser.parse_args()

    import numpy as np
    import fastckpt
    from fastckpt import keras

    here = os.path.dirname(os.path.abspath(fastckpt.__file__))
    source_tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here.startswith(source_tree + os.sep):
        print(f"smoke: fastckpt was imported from the source tree ({here}), not an installed copy",
              file=sys.stderr)
        return 1
    print(f"fastckpt {fastckpt.__version__} from {here}")
    fastckpt.show_config()

    rng = np.random.default_rng(0)
    x = rng.random((256, 20), dtype=np.float32)
    y = (x[:, :5].sum(axis=1) > 2.5).astype(np.int64)

    def make():
        model = keras.Sequential([keras.layers.Dense(32, activation="relu", input_shape=(20,)),
                                  keras.layers.Dropout(0.1), keras.layers.Dense(2)])
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model

    model = make()
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    losses = history.history["loss"]
    if not losses[-1] < losses[0]:
        print(f"smoke: the loss did not go down: {losses}", file=sys.stderr)
        return 1
    want = model.predict(x, verbose=0)

    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "ckpt", "cp.ckpt")
        model.save_weights(prefix)
        restored = make()
        restored.load_weights(prefix)
        if not np.array_equal(restored.predict(x, verbose=0), want):
            print("smoke: save_weights/load_weights changed the predictions", file=sys.stderr)
            return 1
        model.save(os.path.join(tmp, "whole"))
        again = keras.models.load_model(os.path.join(tmp, "whole"))
        if not np.array_equal(again.predict(x, verbose=0), want):
            print("smoke: save/load_model changed the predictions", file=sys.stderr)
            return 1
        again.fit(x, y, epochs=1, batch_size=32, verbose=0)  # resumes with the restored optimizer

    if args.embed_dir:
        os.makedirs(args.embed_dir, exist_ok=True)
        model.save(os.path.join(args.embed_dir, "model"))
        with open(os.path.join(args.embed_dir, "x.txt"), "w") as f:
            for row in x[:40]:
                f.write(" ".join(f"{v:.9g}" for v in row) + "\n")
        want[:40].astype(np.float32).tofile(os.path.join(args.embed_dir, "y.f32"))
    print(f"smoke OK: loss {losses[0]:.4f} -> {losses[-1]:.4f}, save/load round trips exact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
