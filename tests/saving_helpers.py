"""Helpers shared by the saving and checkpoint tests."""

import io
import os
from contextlib import redirect_stdout

import numpy as np
import pytest

from fastckpt import keras

#: Files written by tf_keras / Keras 3 (tests/data/keras, with the script that made them).
DATA = os.path.join(os.path.dirname(__file__), "data", "keras")


def small_model(dropout=True, compile=True, metrics=("accuracy",), optimizer="adam", loss=None):
    """Dense 16 relu [-> Dropout 0.2] -> Dense 4 (softmax, or linear with a given loss) on 12 features."""
    layers = [keras.layers.Dense(16, activation="relu", input_shape=(12,))]
    if dropout:
        layers.append(keras.layers.Dropout(0.2))
    layers.append(keras.layers.Dense(4, activation="softmax" if loss is None else "linear"))
    model = keras.Sequential(layers)
    if compile:
        model.compile(optimizer=optimizer, loss=loss or "sparse_categorical_crossentropy",
                      metrics=list(metrics))
    return model


def tiny_model():
    """Dense 4 relu -> Dense 2 on 3 features, compiled: the smallest model with every kind of state."""
    model = keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                              keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def assert_failed_save_keeps_old_file(monkeypatch, save, path, module, step) -> None:
    """Saves a model at `path`, then saves again with `module.step` failing: the old file must be
    there byte for byte, and no temp file left beside it."""
    model = small_model()
    save(model, path)
    with open(path, "rb") as f:
        before = f.read()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, step, boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save(model, path)
    with open(path, "rb") as f:
        assert f.read() == before
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


def xy(rng, n=96, features=12, classes=4):
    """Learnable data: ``n`` samples of ``features`` uniform floats, labelled by the largest of the
    first ``classes`` features (the ``xy`` fixture of conftest.py draws it too)."""
    x = rng.random((n, features), dtype=np.float32)
    return x, x[:, :classes].argmax(1)


def summary_text(model) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        model.summary()
    return buf.getvalue()


def assert_same_optimizer_state(a, b) -> None:
    va, vb = a.optimizer.variables, b.optimizer.variables
    assert len(va) == len(vb)
    for x, y in zip(va, vb):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.value, y.value)


def held_deleted_files(directory) -> list:
    """Paths under `directory` of unlinked files this process still has open (Linux /proc)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith(" (deleted)"):
            held.append(target[: -len(" (deleted)")])
    return held


#: For tests that look at this process's open files.
needs_proc_fd = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")


#: A child interpreter that loads one file and reports the error, the time and how much its peak
#: RSS grew during the load (after a warm-up load of a good file of the same kind, so lazy imports
#: and first-use allocations are not counted). argv: kind ("weights" or "model"), hostile, good.
_HOSTILE_LOAD = r'''
import json, resource, sys, time
kind, path, good = sys.argv[1:4]
from fastckpt import keras
def model():
    m = keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                          keras.layers.Dense(2)])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return m
def load(p):
    if kind == "weights":
        m = model()
        m.load_weights(p)
        return m
    return keras.models.load_model(p)
load(good)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
base, t = peak(), time.perf_counter()
out = {"error": None, "mro": [], "message": ""}
try:
    m = load(path)
    out["kernel"] = m.layers[0].weights[0].value.tobytes().hex()
except BaseException as e:
    out.update(error=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__], message=str(e)[:2000])
out["seconds"] = time.perf_counter() - t
out["grew_mb"] = (peak() - base) / 1024
print("RESULT " + json.dumps(out))
'''


def hostile_load(kind, path, good, timeout=300):
    """Load `path` (kind "weights": a fresh model's load_weights; "model": load_model) in a child
    process; returns {"error", "mro", "message", "seconds", "grew_mb"[, "kernel"]}."""
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _HOSTILE_LOAD, kind, str(path), str(good)],
                         capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"child died (rc {out.returncode}): {out.stdout[-2000:]} {out.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])
