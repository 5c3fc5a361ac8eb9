"""Where the tutorial's peak RSS comes from: ``python bench/rss_breakdown.py``.

The harness's memory note judges one figure, the tutorial child's peak RSS, against a budget
(bench/report.py: baseline + 1.2 × (16 × params + one batch's activations + inputs)). This runs
the same steps as the harness's fastckpt child (bench/peers/keras_common.mlp: load the arrays,
build, compile, warm-up fit and predict on a slice, fit 10 epochs, predict 5 times), each run in
a fresh process, and samples after every phase the current RSS (/proc/self/statm) and the peak
so far (``VmHWM``). The phase where the peak grows is where to look. Two phases the harness's
plain row does not have come last, so they cannot move its figure: a fit epoch with the
tutorial's ``ModelCheckpoint`` and a ``save_weights``.

Prints, as medians over ``--runs`` processes, one row per phase and the budget line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MB = 2**20


def _child(data_dir: str) -> None:
    import time

    def sample(name, out):
        with open("/proc/self/statm") as f:
            cur = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
        with open("/proc/self/status") as f:  # VmHWM: this process's own peak since exec
            peak = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024.0
        out.append((name, cur, peak))

    out = []
    sample("interpreter", out)
    import numpy as np
    sample("import numpy", out)
    from fastckpt import keras, ops
    ops.set_num_threads(2)
    sample("import fastckpt", out)
    sys.path.insert(0, ROOT)
    from bench.peers.keras_common import _warm_slice
    from bench.workloads.base import load_arrays
    sample("import bench helpers", out)

    arrays = load_arrays({k: os.path.join(data_dir, f"{k}.npy")
                          for k in ("x", "y", "x_val", "y_val", "x_pred")})
    x, y, xv, yv, xp = (arrays[k] for k in ("x", "y", "x_val", "y_val", "x_pred"))
    sample("data load (= harness baseline)", out)
    bs = 32
    keras.utils.set_random_seed(1234)
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    sample("model build (weights initialized)", out)
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    sample("compile", out)
    model.fit(_warm_slice(x, bs), _warm_slice(y, bs), batch_size=bs, epochs=1,
              validation_data=(_warm_slice(xv, bs), _warm_slice(yv, bs)), verbose=0)
    sample("warm-up fit (slots, trainer, workspaces)", out)
    model.predict(_warm_slice(xp, bs), batch_size=bs, verbose=0)
    sample("warm-up predict", out)
    model.fit(x, y, batch_size=bs, epochs=10, validation_data=(xv, yv), verbose=0, shuffle=True)
    sample("fit 10 epochs", out)
    for _ in range(5):
        model.predict(xp, batch_size=bs, verbose=0)
    sample("predict 1000 rows x5 (end of the harness child)", out)
    tmp = tempfile.mkdtemp(prefix="rss_breakdown_")
    cb = keras.callbacks.ModelCheckpoint(os.path.join(tmp, "cp.ckpt"), save_weights_only=True)
    model.fit(x, y, batch_size=bs, epochs=1, validation_data=(xv, yv), verbose=0, callbacks=[cb])
    sample("fit 1 epoch + ModelCheckpoint (not in the plain row)", out)
    model.save_weights(os.path.join(tmp, "w.ckpt"))
    sample("save_weights (not in the plain row)", out)
    time.sleep(0)
    print("RSS_BREAKDOWN " + json.dumps(out))


def _write_data(directory: str) -> None:
    import numpy as np

    sys.path.insert(0, ROOT)
    from bench.workloads.base import mlp_data

    for k, v in mlp_data(1000, 1000, 1000, 784, 10, 1234).items():
        np.save(os.path.join(directory, f"{k}.npy"), np.ascontiguousarray(v))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes (default 5)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    if args.data:
        _write_data(args.data)
        return 0

    # This process stays small (no NumPy) all the same: Linux carries the peak RSS of the process
    # that spawned a child into the child's ru_maxrss (vfork + exec); VmHWM starts again at exec.
    runs = []
    with tempfile.TemporaryDirectory(prefix="rss_breakdown_data_") as d:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run([sys.executable, os.path.abspath(__file__), "--data", d], env=env, check=True)
        for _ in range(args.runs):
            res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", d],
                                 capture_output=True, text=True, env=env, check=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("RSS_BREAKDOWN ")][-1]
            runs.append(json.loads(line[len("RSS_BREAKDOWN "):]))
    names = [r[0] for r in runs[0]]
    cur = [statistics.median(run[i][1] for run in runs) for i in range(len(names))]
    peak = [statistics.median(run[i][2] for run in runs) for i in range(len(names))]
    print(f"tutorial child, {args.runs} fresh processes, medians (MB = MiB)")
    print(f"{'phase':52s} {'RSS':>7s} {'peak':>7s} {'peak +':>7s}")
    for i, name in enumerate(names):
        grow = peak[i] - (peak[i - 1] if i else 0.0)
        print(f"{name:52s} {cur[i]:7.1f} {peak[i]:7.1f} {grow:7.1f}")
    # The harness's budget (bench/report.py, _memory_note), from the same figures.
    params = 784 * 512 + 512 + 512 * 10 + 10
    acts = 32 * (3 * 512 + 2 * 10) * 4
    inputs = 3000 * 784 * 4 + 2000 * 4
    base = cur[names.index("data load (= harness baseline)")] - inputs / MB
    budget = base + 1.2 * (16 * params + acts + inputs) / MB
    end = names.index("predict 1000 rows x5 (end of the harness child)")
    print(f"peak at the end of the harness child {peak[end]:.1f} MB vs budget {budget:.1f} MB "
          f"(baseline {base:.1f} MB): {'met' if peak[end] <= budget else 'NOT met'}, "
          f"margin {budget - peak[end]:+.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
