"""Data-parallel training on this machine, and an α-β model of how far it scales.

    python -m bench.distributed [--rows 60000] [--epochs 2] [--repeats 3] [--hidden 512]
                                [--progress testall,wait-only,progress-thread]

Runs the ``large`` workload (the tutorial's Dense 512 relu → Dropout 0.2 → Dense 10 on
MNIST-shaped rows, batch 128; ``--hidden 1024,1024,1024`` for a deeper MLP) as 1 process × 2
threads and as 2 MPI processes × 1 thread (``mpiexec``, from ``pip install "fastckpt[mpi]"``),
alternating, and prints the medians: fit time, samples/s, their ratio, the time the allreduce of the
gradient buckets takes alone (blocking, nothing else running), and the exposed wait per step (what
the step waits for the buckets after its backward pass, the rest being hidden under it). The 2 × 1
layout can be run several ways that differ in how MPICH progresses the nonblocking allreduces
(``--progress``). Then it prints the cost model of ``docs/distributed.md`` for that model: per
step, a replica computes its share of the batch in ``t_c`` (measured here) and the ring allreduce
of ``S`` gradient bytes over ``N`` nodes takes ``t_ar = 2(N-1)·α + 2(N-1)/N · S/B``; the
efficiency of ``N`` nodes is ``t_c / (t_c + t_ar)`` when nothing is hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MARK = "DIST_RESULT "

# The networks of the table: bandwidth (bit/s) and per-message latency α (s). α: typical MPI
# latencies over TCP on Ethernet, and over RDMA (InfiniBand/RoCE) at 100 Gb/s.
NETWORKS = [("10 Gb/s Ethernet", 10e9, 30e-6), ("25 Gb/s Ethernet", 25e9, 20e-6),
            ("100 Gb/s InfiniBand", 100e9, 3e-6)]


def child(rows: int, epochs: int, batch: int, data_path: str, hidden=(512,)) -> None:
    """One timed fit (run under mpiexec or alone): prints MARK + JSON on rank 0."""
    import numpy as np

    import fastckpt
    from fastckpt import keras
    strategy = fastckpt.distribute.MultiWorkerMirroredStrategy()
    arrays = np.load(data_path)
    x, y = arrays["x"][:rows], arrays["y"][:rows]
    with strategy.scope():
        keras.utils.set_random_seed(1)
        layers = [keras.layers.Dense(hidden[0], activation="relu", input_shape=(784,)),
                  keras.layers.Dropout(0.2)]
        layers += [keras.layers.Dense(h, activation="relu") for h in hidden[1:]]
        model = keras.Sequential(layers + [keras.layers.Dense(10)])
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    model.fit(x[:batch * 4], y[:batch * 4], batch_size=batch, epochs=1, verbose=0)  # warm-up
    stats = strategy.__dict__.setdefault("_gradient_stats", {})
    stats.clear()
    strategy.barrier()
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    strategy.barrier()
    fit_s = time.perf_counter() - t0
    steps = epochs * -(-rows // batch)
    grads = sum(w.value.nbytes for w in model.trainable_weights)
    n = strategy.num_replicas_in_sync
    allreduce_ms = 0.0
    if n > 1:
        # The same buckets summed with blocking calls and nothing else running: the cost the
        # backward pass hides (or not). The arena holds the last step's gradients; values do
        # not matter here.
        from fastckpt.training.distributed import GradientBuckets
        buckets = GradientBuckets(model, strategy).buckets
        strategy.barrier()
        t = time.perf_counter()
        for _ in range(200):
            strategy.allreduce_sum_(buckets)
        allreduce_ms = 1e3 * (time.perf_counter() - t) / 200
    if strategy.rank == 0:
        print(MARK + json.dumps({
            "replicas": n, "threads": fastckpt.get_num_threads(),
            "fit_s": fit_s, "samples_per_s": rows * epochs / fit_s, "steps": steps,
            "allreduce_ms_per_step": allreduce_ms,
            "exposed_ms_per_step": 1e3 * stats.get("wait_s", 0.0) / max(1, stats.get("steps", 0)),
            "buckets": stats.get("buckets", 0),
            "gradient_bytes": grads, "accuracy": hist.history["accuracy"][-1]}), flush=True)


def run(cmd, env) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")


def efficiency(t_c: float, nbytes: float, n: int, bandwidth: float, alpha: float) -> float:
    t_ar = 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * 8 / bandwidth
    return t_c / (t_c + t_ar)


def max_nodes(t_c: float, nbytes: float, bandwidth: float, alpha: float, target: float = 0.8) -> int:
    n = 1
    while n < 100000 and efficiency(t_c, nbytes, n + 1, bandwidth, alpha) >= target:
        n += 1
    return n


# 2 x 1 layouts that differ in how MPICH progresses the buckets' nonblocking allreduces: a
# Testall between layers (the default), only the final wait, or MPICH's progress thread.
PROGRESS = {"testall": {"FASTCKPT_MPI_POKE": "1"},
            "wait-only": {"FASTCKPT_MPI_POKE": "0"},
            "progress-thread": {"FASTCKPT_MPI_POKE": "0", "MPIR_CVAR_ASYNC_PROGRESS": "1"}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hidden", default="512",
                    help="hidden widths, comma-separated (512: the large workload)")
    ap.add_argument("--progress", default="testall",
                    help=f"2x1 variants to alternate, comma-separated, of {sorted(PROGRESS)}")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    if args.child:
        child(args.rows, args.epochs, args.batch, args.data, hidden)
        return
    variants = args.progress.split(",")
    for v in variants:
        if v not in PROGRESS:
            raise SystemExit(f"--progress: unknown variant {v!r}, expected some of {sorted(PROGRESS)}")
    import numpy as np

    from bench.workloads.base import mlp_data
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        raise SystemExit("mpiexec not found next to this Python: pip install \"fastckpt[mpi]\"")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data.npz")
        d = mlp_data(args.rows, 0, 0, 784, 10, 99)
        np.savez(data, x=d["x"], y=d["y"])
        me = [sys.executable, "-m", "bench.distributed", "--child", "--data", data, "--rows",
              str(args.rows), "--epochs", str(args.epochs), "--batch", str(args.batch),
              "--hidden", args.hidden]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        base = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        results = {"1x2": [], **{f"2x1 {v}": [] for v in variants}}
        for _ in range(args.repeats):  # alternating, so drifts of a shared machine hit all
            results["1x2"].append(run(me, dict(base, FASTCKPT_NUM_THREADS="2", OMP_NUM_THREADS="2")))
            for v in variants:
                results[f"2x1 {v}"].append(run([mpiexec, "-n", "2"] + me, dict(
                    base, FASTCKPT_NUM_THREADS="1", OMP_NUM_THREADS="1", **PROGRESS[v])))
    keys = ("fit_s", "samples_per_s", "allreduce_ms_per_step", "exposed_ms_per_step")
    med = {k: {m: statistics.median(r[m] for r in v) for m in keys} for k, v in results.items()}
    one = med["1x2"]
    nbytes = results["1x2"][0]["gradient_bytes"]
    buckets = results[f"2x1 {variants[0]}"][0]["buckets"]
    name = "large workload" if hidden == (512,) else f"MLP 784-{'-'.join(map(str, hidden))}-10"
    print(f"{name}, {args.rows} rows x {args.epochs} epochs, global batch {args.batch}, "
          f"gradients {nbytes / 1e6:.2f} MB in {buckets} bucket(s), median of {args.repeats} "
          f"alternating runs")
    print("| layout | fit (s) | samples/s | vs 1x2 | allreduce per step, alone (ms) | "
          "exposed wait per step (ms) |")
    print("|---|---|---|---|---|---|")
    print(f"| 1 process x 2 threads | {one['fit_s']:.2f} | {one['samples_per_s']:,.0f} | 1.00x | - | - |")
    for v in variants:
        two = med[f"2x1 {v}"]
        print(f"| 2 processes x 1 thread, {v} | {two['fit_s']:.2f} | {two['samples_per_s']:,.0f} | "
              f"{two['samples_per_s'] / one['samples_per_s']:.2f}x | "
              f"{two['allreduce_ms_per_step']:.3f} | {two['exposed_ms_per_step']:.3f} |")
    # Cost model: one node computes a batch of b rows at this machine's 2-thread rate.
    rate = one["samples_per_s"]
    print(f"\ncost model: gradients {nbytes / 1e6:.2f} MB per step, node throughput "
          f"{rate:,.0f} samples/s (this machine, 2 threads), allreduce not hidden by the backward pass")
    print("| per-node batch | compute per step (ms) | " +
          " | ".join(f"max nodes at >=80% ({name})" for name, _, _ in NETWORKS) + " |")
    print("|---|---|" + "---|" * len(NETWORKS))
    for b in (128, 512, 2048, 8192):
        t_c = b / rate
        cells = [str(max_nodes(t_c, nbytes, bw, a)) for _, bw, a in NETWORKS]
        print(f"| {b} | {1e3 * t_c:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
