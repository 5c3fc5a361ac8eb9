"""fastckpt built with each BLAS provider, measured side by side (issue 16, "GEMM provider").

    python bench/blas_compare.py --build openblas=/tmp/fastckpt-ob --build mkl=/tmp/fastckpt-mkl \\
        --avx2 --rounds 5

Each round runs one child process per build (and, with --avx2, one more per build on its AVX2 code
path: MKL_ENABLE_INSTRUCTIONS=AVX2 / OPENBLAS_CORETYPE=Haswell), in rotating order so drift on a
shared machine spreads over all of them. A child imports the build from its path, sets 2 threads
and measures, alternating its cases: the tutorial's predict (1000 rows; with packed weights on and
off where the build has them), a validation-style evaluate (1000 rows, batch 32), the tutorial fit
(1000 rows, 10 epochs, batch 32, validation each epoch), the ``large`` and ``wide`` fits (one
epoch of 60 000 × 784 at Dense 512, and of 6 000 × 784 at Dense 2048 × 3, batch 128) and
``ops.gemm`` on the tutorial's products. The parent prints the medians over the rounds, each with
the ratio to the first build, the load average seen by each child, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
AVX2_ENV = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "OPENBLAS_CORETYPE": "Haswell"}
GEMMS = [("gemm 1000x784x512", False, (1000, 784), (784, 512)),
         ("gemm 32x784x512", False, (32, 784), (784, 512)),
         ("gemm 784x32x512 (wgrad)", True, (32, 784), (32, 512))]


QUIET_CORES = 0.3  # a sample counts as quiet when other processes used less than this


def _machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


_CPU = []  # process CPU seconds per call of the last _median_time, all threads


def _median_time(fn, n, others=None):
    """Median wall time of n calls; appends to ``others`` the cores other processes used meanwhile
    (the machine's busy CPU minus this process's, over the wall time) and to _CPU this process's
    CPU time per call (both threads; with OMP_WAIT_POLICY=passive a waiting thread sleeps, so this
    is the work done, which other processes on the machine do not inflate the way they do wall
    time)."""
    ts = []
    b0, c0, w0 = _machine_busy(), time.process_time(), time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    _CPU.append((time.process_time() - c0) / n)
    if others is not None:
        wall = time.perf_counter() - w0
        others.append(max(0.0, (_machine_busy() - b0) - (time.process_time() - c0)) / wall)
    return statistics.median(ts)


def child(path: str, inner: int, skip_big: bool, args_epochs: int = 10,
          big_rows=(60000, 6000)) -> dict:
    sys.path.insert(0, ROOT)  # for bench.workloads; the build's path goes ahead of it
    if path:
        sys.path.insert(0, path)
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    import numpy as np

    import fastckpt
    from bench.workloads.base import forward_flops, mlp_data, mlp_gemm_flops
    from fastckpt import keras, ops

    ops.set_num_threads(2)
    info = ops.build_info()
    packed_avail = bool(info.get("blas_packed_b_available"))
    d = mlp_data(1000, 1000, 1000, 784, 10, 1234)

    def tutorial(hidden=(512,), dropout=0.2, seed=5):
        keras.utils.set_random_seed(seed)
        layers = [keras.Input(shape=(784,))]
        for h in hidden:
            layers.append(keras.layers.Dense(h, activation="relu"))
            if dropout:
                layers.append(keras.layers.Dropout(dropout))
        layers.append(keras.layers.Dense(10))
        m = keras.Sequential(layers)
        m.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    model = tutorial()
    model.fit(d["x"][:64], d["y"][:64], batch_size=32, epochs=1, verbose=0,
              validation_data=(d["x_val"][:64], d["y_val"][:64]))
    xp = d["x_pred"]

    def predict():
        model.predict(xp, batch_size=32, verbose=0)

    def set_packed(on):
        if packed_avail:
            ops._core.set_blas_packed_b(on)

    res = {"file": fastckpt.__file__, "blas": info["blas"], "blas_config": info["blas_config"],
           "packed_available": packed_avail, "load_start": os.getloadavg()[0]}
    # Packed and plain predict must agree closely (they differ in the last bits only).
    set_packed(True)
    a = model.predict(xp, batch_size=32, verbose=0)
    set_packed(False)
    b = model.predict(xp, batch_size=32, verbose=0)
    res["packed_vs_plain_max_abs_diff"] = float(np.abs(a - b).max())
    rng = np.random.default_rng(0)
    gem = []
    for name, ta, sa, sb in GEMMS:
        ga, gb = rng.standard_normal(sa, dtype=np.float32), rng.standard_normal(sb, dtype=np.float32)
        m, k = (sa[1], sa[0]) if ta else sa
        gem.append((name, ta, ga, gb, np.empty((m, sb[1]), np.float32), 2.0 * m * k * sb[1]))
    big = {}
    if not skip_big:
        dl = mlp_data(big_rows[0], 0, 0, 784, 10, 99)
        dw = mlp_data(big_rows[1], 0, 0, 784, 10, 98)
        big = {"large": (tutorial(seed=7), dl, [784, 512, 10]),
               "wide": (tutorial(hidden=(2048,) * 3, dropout=0.0, seed=8), dw, [784, 2048, 2048, 2048, 10])}
        for m, dd, _ in big.values():
            m.fit(dd["x"][:256], dd["y"][:256], batch_size=128, epochs=1, verbose=0)
    samples = {}
    oth = []

    def add(key, value, cpu_key=None, cpu_scale=1.0):
        samples.setdefault(key, []).append((value, oth[-1]))
        if cpu_key:
            samples.setdefault(cpu_key, []).append((_CPU[-1] * cpu_scale, oth[-1]))

    pflops = forward_flops(1000, [784, 512, 10])
    for rnd in range(inner):
        cases = ["predict_packed", "predict_plain", "evaluate", "fit", "gemm"] + sorted(big)
        cases = cases[rnd % len(cases):] + cases[:rnd % len(cases)]
        for case in cases:
            if case == "predict_packed" and packed_avail:
                set_packed(True)
                t = _median_time(predict, 15, oth)
                add("predict_packed_ms", t * 1e3, "predict_packed_cpu_ms", 1e3)
                add("predict_packed_gflops", pflops / t / 1e9)
            elif case == "predict_plain":
                set_packed(False)
                t = _median_time(predict, 15, oth)
                add("predict_ms", t * 1e3, "predict_cpu_ms", 1e3)
                add("predict_gflops", pflops / t / 1e9)
                set_packed(True)
            elif case == "evaluate":
                add("evaluate_ms", 1e3 * _median_time(
                    lambda: model.evaluate(d["x_val"], d["y_val"], batch_size=32, verbose=0), 5, oth),
                    "evaluate_cpu_ms", 1e3)
            elif case == "fit":
                add("fit_epoch_s", _median_time(lambda: model.fit(
                    d["x"], d["y"], batch_size=32, epochs=args_epochs, verbose=0,
                    validation_data=(d["x_val"], d["y_val"])), 1, oth) / args_epochs,
                    "fit_epoch_cpu_s", 1.0 / args_epochs)
            elif case == "gemm":
                for name, ta, ga, gb, gc, fl in gem:
                    for _ in range(5):
                        ops.gemm(ga, gb, gc, trans_a=ta)
                    t = _median_time(lambda: ops.gemm(ga, gb, gc, trans_a=ta), 30, oth)
                    add(name + " gflops", fl / t / 1e9)
                    # per CPU-second of both threads: x2 is the rate two unhindered threads reach
                    samples.setdefault(name + " gflops_per_cpu_x2", []).append(
                        (2 * fl / _CPU[-1] / 1e9, oth[-1]))
            elif case in big:
                m, dd, widths = big[case]
                t = _median_time(lambda: m.fit(dd["x"], dd["y"], batch_size=128, epochs=1, verbose=0),
                                 1, oth)
                add(case + "_fit_s", t, case + "_fit_cpu_s")
                fl = mlp_gemm_flops(len(dd["x"]), widths, 1)
                add(case + "_gemm_gflops", fl / t / 1e9)
                samples.setdefault(case + "_gemm_gflops_per_cpu_x2", []).append((2 * fl / _CPU[-1] / 1e9, oth[-1]))
    set_packed(True)
    # Each metric: its values and the load beside each; the parent keeps the quiet ones.
    res["samples"] = samples
    res["load_end"] = os.getloadavg()[0]
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", default=[], metavar="NAME=PATH",
                    help="a fastckpt build: a --target install dir ('' for the importable one)")
    ap.add_argument("--avx2", action="store_true", help="also run each build on its AVX2 code path")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--inner", type=int, default=3, help="alternating rounds inside each child")
    ap.add_argument("--wait", type=float, default=20.0,
                    help="seconds to wait at most for a quiet machine before each child")
    ap.add_argument("--skip-big", action="store_true", help="leave out the large and wide fits")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the tutorial fit")
    ap.add_argument("--large-rows", type=int, default=60000)
    ap.add_argument("--wide-rows", type=int, default=6000)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.inner, args.skip_big, args.epochs,
                               (args.large_rows, args.wide_rows))))
        return
    variants = []
    for spec in args.build:
        name, _, path = spec.partition("=")
        variants.append((name, path, {}))
        if args.avx2:
            variants.append((name + " AVX2", path, AVX2_ENV))
    runs = {v[0]: [] for v in variants}
    sys.path.insert(0, ROOT)
    from bench.run import wait_for_quiet

    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for name, path, extra in order:
            env = dict(os.environ, **extra)
            env.setdefault("OMP_WAIT_POLICY", "passive")  # CPU time = work (see _median_time)
            cmd = [sys.executable, os.path.abspath(__file__), "--child", path, "--inner", str(args.inner),
                   "--epochs", str(args.epochs), "--large-rows", str(args.large_rows),
                   "--wide-rows", str(args.wide_rows)]
            if args.skip_big:
                cmd.append("--skip-big")
            wait_for_quiet(args.wait, QUIET_CORES)
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/tmp")
            if out.returncode != 0:
                sys.exit(f"{name}: child failed\n{out.stderr}")
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r} {name}: load average {runs[name][-1]['load_start']:.1f}", file=sys.stderr)
    keys = []
    for rs in runs.values():
        for k in rs[0]["samples"]:
            if k not in keys:
                keys.append(k)
    table = {}
    for name, rs in runs.items():
        row = table[name] = {"blas": rs[0]["blas"],
                             "load_average": statistics.median(r["load_start"] for r in rs)}
        for k in keys:
            vals = [v for r in rs for v in r["samples"].get(k, [])]
            if not vals:
                continue
            quiet = [v for v, o in vals if o < QUIET_CORES]
            row[k] = {"quiet_median": statistics.median(quiet) if quiet else None,
                      "all_median": statistics.median(v for v, _ in vals),
                      "quiet": len(quiet), "n": len(vals),
                      "others_median": statistics.median(o for _, o in vals)}
    base = variants[0][0]

    def val(n, k):
        c = table[n].get(k)
        return None if c is None else (c["quiet_median"] if c["quiet_median"] is not None else c["all_median"])

    print(f"{'metric (quiet median, quiet/all)':34}" + "".join(f"{n:>26}" for n in runs))
    for k in keys:
        row = f"{k:34}"
        for n in runs:
            v, b, c = val(n, k), val(base, k), table[n].get(k)
            row += f"{'-':>26}" if v is None else (
                f"{v:10.3f} {v / b:5.2f}x {c['quiet']:>2}/{c['n']:<2}" if b else f"{v:17.3f} {c['quiet']:>2}/{c['n']:<2}")
        print(row)
    print(f"{'load average (median)':34}" + "".join(f"{table[n]['load_average']:26.1f}" for n in runs))
    print(json.dumps({"table": table, "runs": runs}))


if __name__ == "__main__":
    main()
