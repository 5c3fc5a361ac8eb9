"""Load time and predict latency of the tutorial model: C++ (libfastckpt) next to Python.

    python bench/embed_latency.py

Saves the tutorial model (Dense 512 relu, Dropout 0.2, Dense 10 on 784 inputs; fitted one epoch)
as a model directory, builds bench/embed/ against the installed fastckpt and runs it, then times
Python on the same directory. Medians of repeats, milliseconds; batch 1 and 1000, with Keras'
predict batch size (32 rows per pass) and with the whole batch in one pass.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _median_ms(reps, fn):
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def _fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures",
                                                  os.path.join(ROOT, "tests", "cpp", "make_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    from fastckpt import embedding, keras
    fx = _fixtures()
    work = tempfile.mkdtemp(prefix="embed_latency_")
    model = fx.tutorial_model()
    model_dir = os.path.join(work, "my_model")
    fx.save_model_dir(model, model_dir)

    build = os.path.join(work, "build")
    subprocess.run(["cmake", "-S", os.path.join(HERE, "embed"), "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                    f"-Dfastckpt_DIR={embedding.cmake_dir()}"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build], check=True, capture_output=True)
    out = subprocess.run([os.path.join(build, "embed_latency"), model_dir], check=True,
                         capture_output=True, text=True).stdout
    cpp = {k: float(v) for k, v in (line.split() for line in out.splitlines())}

    how = "keras.models.load_model(dir)"
    load = lambda: keras.models.load_model(model_dir)  # noqa: E731
    py = {"load_ms": _median_ms(7, load)}
    m = load()
    for rows in (1, 1000):
        x = np.random.default_rng(0).random((rows, 784), dtype=np.float32)
        m.predict(x, verbose=0)
        reps = 201 if rows == 1 else 21
        py[f"predict_{rows}_bs32_ms"] = _median_ms(reps, lambda: m.predict(x, verbose=0))
        py[f"predict_{rows}_bs0_ms"] = _median_ms(reps, lambda: m.predict(x, batch_size=rows, verbose=0))

    print(f"tutorial model (784-512-10), {os.cpu_count()} CPUs, medians in ms; Python load = {how}")
    print(f"{'':34} {'C++ (libfastckpt)':>18} {'Python':>10} {'ratio':>7}")
    rows = [("load", "load_ms"),
            ("predict batch 1", "predict_1_bs32_ms"),
            ("predict batch 1000 (32-row passes)", "predict_1000_bs32_ms"),
            ("predict batch 1000 (one pass)", "predict_1000_bs0_ms")]
    for label, key in rows:
        print(f"{label:34} {cpp[key]:18.4f} {py[key]:10.4f} {py[key] / cpp[key]:6.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
