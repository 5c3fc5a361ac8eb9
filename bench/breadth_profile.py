"""Per-kernel time of one fused training epoch of the breadth workloads, and their GEMM-only floor.

A script, not a timed test: ``python -m bench.breadth_profile [--workload tabular lnmlp]
[--threads 2] [--repeats 5]``. For each workload it times, alternating in one process:

- ``fused``: one epoch of the real ``model.fit`` (the graph trainer, one native call per epoch);
- ``kernels``: the same kernel sequence the graph trainer runs per batch (same shapes, same
  buffers reused, same order: forward, loss, backward, Adam over every variable), each call
  through ``fastckpt._core`` with its own timer, summed per kernel over the epoch;
- ``gemm floor``: the sgemm calls of that sequence alone (``_core.gemm``, same shapes and
  transposes, same thread count), nothing else.

The kernel sum is honest about the fused path when it lands near the fused epoch time: each
Python call adds ≈ 1 µs (measured and printed as ``call overhead``), the rest is kernel time.
Prints medians over the repeats: ms per epoch, fraction of the kernel sum, and GFLOP/s of the
GEMM-bearing kernels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _pin_fastckpt(argv):
    """``--fastckpt-path DIR``: import fastckpt from DIR (a ``pip install --target`` build, e.g.
    the mkl-static variant) instead of the installed one, as bench.child does."""
    if "--fastckpt-path" not in argv:
        return
    path = os.path.abspath(argv[argv.index("--fastckpt-path") + 1])
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, path)


_pin_fastckpt(sys.argv)

from bench.workloads import lnmlp as lnmlp_wl  # noqa: E402
from bench.workloads import tabular as tabular_wl  # noqa: E402
from bench.workloads.base import mlp_data  # noqa: E402
from fastckpt import _core, ops  # noqa: E402

ACT = _core.activations
F32 = np.float32


def _z(*shape):
    return np.zeros(shape, F32)


def _r(rng, *shape, scale=0.05):
    return (rng.standard_normal(shape) * scale).astype(F32)


class Seq:
    """One batch's kernel calls: (label, flops, fn) in the graph trainer's order."""

    def __init__(self):
        self.calls = []
        self.gemms = []  # (M, N, K, trans_a, trans_b) in order

    def add(self, label, fn, flops=0.0):
        self.calls.append((label, flops, fn))

    def dense_fwd(self, label, x, W, b, z, y, m, K, N, act):
        self.add(label, lambda: _core.dense_forward_z(x, W, b, z, y, m, K, N, ACT[act]), 2.0 * m * K * N)
        self.gemms.append((m, N, K, False, False))

    def dense_bwd(self, label, x, W, z, y, dy, dz, dW, db, dx, m, K, N, act):
        gemms = 2 if dx is not None else 1
        self.add(label, lambda: _core.dense_backward_z(x, W, z, y, dy, dz, dW, db, dx, m, K, N, ACT[act],
                                                       False), 2.0 * m * K * N * gemms)
        self.gemms.append((K, N, m, True, False))
        if dx is not None:
            self.gemms.append((m, K, N, False, True))

    def adam(self, label, variables, t_ref):
        for var, grad, mm, vv in variables:
            self.add(label, lambda var=var, grad=grad, mm=mm, vv=vv: _core.adam_update(
                var, grad, mm, vv, None, 1e-3, 0.9, 0.999, 1e-7, False, t_ref[0]))


def _adam_vars(rng, shapes):
    return [(_r(rng, *s), _r(rng, *s), _z(*s), np.abs(_r(rng, *s))) for s in shapes]


def tabular_seq(cfg, m, rng):
    """The tabular graph's steps for one batch of m rows (bench.peers.breadth_models)."""
    s = Seq()
    nf, (v1, v2), (d1, d2), (h1, h2), k = (cfg["numeric"], cfg["vocab"], cfg["embed_dim"], cfg["hidden"],
                                           cfg["classes"])
    w = nf + d1 + d2
    num = _r(rng, m, nf, scale=1.0)
    ids1 = rng.integers(0, v1, (m, 1)).astype(np.int32)
    ids2 = rng.integers(0, v2, (m, 1)).astype(np.int32)
    labels = rng.integers(0, k, m).astype(np.int32)
    T1, T2 = _r(rng, v1, d1), _r(rng, v2, d2)
    e1, e2, cat, bn = _z(m, d1), _z(m, d2), _z(m, w), _z(m, w)
    gamma, beta, mean, inv, mmean, mvar = np.ones(w, F32), _z(w), _z(w), _z(w), _z(w), np.ones(w, F32)
    W1, b1, W2, b2, W3, b3 = _r(rng, w, h1), _z(h1), _r(rng, h1, h2), _z(h2), _r(rng, h2, k), _z(k)
    y1, y2, out, g = _z(m, h1), _z(m, h2), _z(m, k), _z(m, k)
    dz3, dz2, dz1, dy2, dy1, dbn, dcat = _z(m, k), _z(m, h2), _z(m, h1), _z(m, h2), _z(m, h1), _z(m, w), _z(m, w)
    dnum, de1, de2 = _z(m, nf), _z(m, d1), _z(m, d2)
    dT1, dT2 = _z(v1, d1), _z(v2, d2)
    dW1, db1, dW2, db2, dW3, db3, dgamma, dbeta = (_z(w, h1), _z(h1), _z(h1, h2), _z(h2), _z(h2, k),
                                                   _z(k), _z(w), _z(w))
    s.add("embedding_gather", lambda: _core.embedding_gather(ids1, T1, v1, d1, e1))
    s.add("embedding_gather", lambda: _core.embedding_gather(ids2, T2, v2, d2, e2))
    s.add("concat_forward", lambda: _core.concat_forward([num, e1, e2], [nf, d1, d2], m, cat))
    s.add("batchnorm_forward_train", lambda: _core.batchnorm_forward_train(
        cat, None, m, w, gamma, beta, 1e-3, bn, mean, inv, mmean, mvar, 0.99, 1.0))
    s.dense_fwd("dense_forward 1", bn, W1, b1, None, y1, m, w, h1, "relu")
    s.dense_fwd("dense_forward 2", y1, W2, b2, None, y2, m, h1, h2, "relu")
    s.dense_fwd("dense_forward 3", y2, W3, b3, None, out, m, h2, k, "linear")
    s.add("sparse_ce", lambda: _core.sparse_ce(out, labels, m, k, True, 1e-7, None, g, 1.0 / m))
    s.dense_bwd("dense_backward 3", y2, W3, None, out, g, dz3, dW3, db3, dy2, m, h2, k, "linear")
    s.dense_bwd("dense_backward 2", y1, W2, None, y2, dy2, dz2, dW2, db2, dy1, m, h1, h2, "relu")
    s.dense_bwd("dense_backward 1", bn, W1, None, y1, dy1, dz1, dW1, db1, dbn, m, w, h1, "relu")
    s.add("batchnorm_backward", lambda: _core.batchnorm_backward(
        cat, dbn, None, m, w, mean, inv, gamma, True, dcat, dgamma, dbeta))
    s.add("concat_backward", lambda: _core.concat_backward(dcat, [nf, d1, d2], m, [dnum, de1, de2]))
    s.add("embedding_scatter_add", lambda: _core.embedding_scatter_add(ids1, de1, v1, d1, dT1))
    s.add("embedding_scatter_add", lambda: _core.embedding_scatter_add(ids2, de2, v2, d2, dT2))
    return s, [(v1, d1), (v2, d2), (w,), (w,), (w, h1), (h1,), (h1, h2), (h2,), (h2, k), (k,)]


def lnmlp_seq(cfg, m, rng):
    """The LayerNorm + GELU MLP's steps for one batch of m rows."""
    s = Seq()
    f, (h1, h2), k, rate = cfg["features"], cfg["hidden"], cfg["classes"], cfg["dropout"]
    x = rng.random((m, f), dtype=F32)
    labels = rng.integers(0, k, m).astype(np.int32)
    W1, b1, W2, b2, W3, b3 = _r(rng, f, h1), _z(h1), _r(rng, h1, h2), _z(h2), _r(rng, h2, k), _z(k)
    g1, be1, g2, be2 = np.ones(h1, F32), _z(h1), np.ones(h2, F32), _z(h2)
    z1, ln1, a1, d1, mask = _z(m, h1), _z(m, h1), _z(m, h1), _z(m, h1), np.zeros((m, h1), np.uint8)
    z2, ln2, a2, out, g = _z(m, h2), _z(m, h2), _z(m, h2), _z(m, k), _z(m, k)
    mean1, inv1, mean2, inv2 = _z(m), _z(m), _z(m), _z(m)
    dz3, da2, dln2, dz2, dzz2, dd1, da1, dln1, dz1, dzz1 = (_z(m, k), _z(m, h2), _z(m, h2), _z(m, h2),
                                                           _z(m, h2), _z(m, h1), _z(m, h1), _z(m, h1),
                                                           _z(m, h1), _z(m, h1))
    dW1, db1, dW2, db2, dW3, db3 = _z(f, h1), _z(h1), _z(h1, h2), _z(h2), _z(h2, k), _z(k)
    dg1, dbe1, dg2, dbe2 = _z(h1), _z(h1), _z(h2), _z(h2)
    gelu = ACT["gelu"]
    s.dense_fwd("dense_forward 1", x, W1, b1, None, z1, m, f, h1, "linear")
    s.add("layernorm_forward", lambda: _core.layernorm_forward(z1, m, h1, g1, be1, 1e-3, ln1, mean1, inv1))
    s.add("gelu_forward", lambda: _core.activation_forward_out(gelu, ln1, a1, m, h1))
    s.add("dropout_forward", lambda: _core.dropout_forward(a1, d1, mask, rate, 1, 0))
    s.dense_fwd("dense_forward 2", d1, W2, b2, None, z2, m, h1, h2, "linear")
    s.add("layernorm_forward", lambda: _core.layernorm_forward(z2, m, h2, g2, be2, 1e-3, ln2, mean2, inv2))
    s.add("gelu_forward", lambda: _core.activation_forward_out(gelu, ln2, a2, m, h2))
    s.dense_fwd("dense_forward 3", a2, W3, b3, None, out, m, h2, k, "linear")
    s.add("sparse_ce", lambda: _core.sparse_ce(out, labels, m, k, True, 1e-7, None, g, 1.0 / m))
    s.dense_bwd("dense_backward 3", a2, W3, None, out, g, dz3, dW3, db3, da2, m, h2, k, "linear")
    s.add("gelu_backward", lambda: _core.activation_backward_z(gelu, ln2, a2, da2, dln2, m, h2))
    s.add("layernorm_backward", lambda: _core.layernorm_backward(z2, dln2, m, h2, mean2, inv2, g2, dz2,
                                                                 dg2, dbe2))
    s.dense_bwd("dense_backward 2", d1, W2, None, z2, dz2, dzz2, dW2, db2, dd1, m, h1, h2, "linear")
    s.add("dropout_backward", lambda: _core.dropout_backward(dd1, mask, da1, rate))
    s.add("gelu_backward", lambda: _core.activation_backward_z(gelu, ln1, a1, da1, dln1, m, h1))
    s.add("layernorm_backward", lambda: _core.layernorm_backward(z1, dln1, m, h1, mean1, inv1, g1, dz1,
                                                                 dg1, dbe1))
    s.dense_bwd("dense_backward 1", x, W1, None, z1, dz1, dzz1, dW1, db1, None, m, f, h1, "linear")
    return s, [(f, h1), (h1,), (h1,), (h1,), (h1, h2), (h2,), (h2,), (h2,), (h2, k), (k,)]


def build(workload, cfg, seed=0):
    """Per batch size: (Seq, gemm operands) for every batch of one epoch."""
    rng = np.random.default_rng(seed)
    fn = tabular_seq if workload == "tabular" else lnmlp_seq
    bs, rows = cfg["batch_size"], cfg["rows"]
    sizes = [min(bs, rows - lo) for lo in range(0, rows, bs)]
    t_ref = [1]
    seqs = {}
    for m in sorted(set(sizes)):
        s, shapes = fn(cfg, m, rng)
        s.adam("adam_update", _adam_vars(rng, shapes), t_ref)
        ops_ = {}
        for (M, N, K, ta, tb) in s.gemms:
            ops_[(M, N, K, ta, tb)] = (_r(rng, M * K), _r(rng, K * N), _z(M * N))
        seqs[m] = (s, ops_)
    return sizes, seqs, t_ref


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of every thread)


def kernel_epoch(sizes, seqs, t_ref):
    acc = defaultdict(float)
    calls = 0
    pc = CLOCK
    for m in sizes:
        s = seqs[m][0]
        for label, _fl, fn in s.calls:
            t0 = pc()
            fn()
            acc[label] += pc() - t0
        calls += len(s.calls)
        t_ref[0] += 1
    return acc, calls


def gemm_epoch(sizes, seqs, per_shape=None):
    pc = CLOCK
    t0 = pc()
    for m in sizes:
        s, bufs = seqs[m]
        for key in s.gemms:
            M, N, K, ta, tb = key
            a, b, c = bufs[key]
            if per_shape is None:
                _core.gemm(ta, tb, M, N, K, 1.0, a, b, 0.0, c)
            else:
                t1 = pc()
                _core.gemm(ta, tb, M, N, K, 1.0, a, b, 0.0, c)
                per_shape[key] += pc() - t1
    return pc() - t0


def flops_per_label(sizes, seqs):
    out = defaultdict(float)
    for m in sizes:
        for label, fl, _fn in seqs[m][0].calls:
            out[label] += fl
    return out


def fused_runner(workload, cfg):
    """A compiled fastckpt model and a one-epoch fit closure (the graph trainer's path)."""
    from fastckpt import keras
    from bench.peers.breadth_models import _keras_lnmlp_model, _keras_tabular_model

    keras.utils.set_random_seed(cfg["seed"])
    if workload == "tabular":
        d = tabular_wl.tabular_data(cfg)
        x, y = [d["num"], d["cat1"], d["cat2"]], d["y"]
        model = _keras_tabular_model(keras, cfg)
    else:
        d = mlp_data(cfg["rows"], 0, 0, cfg["features"], cfg["classes"], cfg["seed"])
        x, y = d["x"], d["y"]
        model = _keras_lnmlp_model(keras, cfg)
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    bs = cfg["batch_size"]

    def run():
        t0 = CLOCK()
        model.fit(x, y, batch_size=bs, epochs=1, verbose=0, shuffle=True)
        return CLOCK() - t0

    run()  # warm-up: builds the fused trainer
    return run


def call_overhead(n=20000):
    a = np.zeros(16, F32)
    t0 = CLOCK()
    for _ in range(n):
        _core.scale_offset(a, a, 1.0, 0.0) if hasattr(_core, "scale_offset") else _core.num_threads()
    return (CLOCK() - t0) / n


def profile(workload, repeats, with_fused=True):
    cfg = (tabular_wl if workload == "tabular" else lnmlp_wl).config(False)
    sizes, seqs, t_ref = build(workload, cfg)
    fl = flops_per_label(sizes, seqs)
    gemm_flops = sum(2.0 * M * N * K for m in sizes for (M, N, K, _a, _b) in seqs[m][0].gemms)
    fused = fused_runner(workload, cfg) if with_fused else None
    kernel_epoch(sizes, seqs, t_ref)  # warm-up
    gemm_epoch(sizes, seqs)
    per = defaultdict(list)
    sums, floors, fused_t, ncalls = [], [], [], 0
    for _ in range(repeats):
        if fused:
            fused_t.append(fused())
        acc, ncalls = kernel_epoch(sizes, seqs, t_ref)
        for k, v in acc.items():
            per[k].append(v)
        sums.append(sum(acc.values()))
        floors.append(gemm_epoch(sizes, seqs))
    shape_t = defaultdict(float)
    gemm_epoch(sizes, seqs, shape_t)
    over = call_overhead()
    med = {k: statistics.median(v) for k, v in per.items()}
    total = statistics.median(sums)
    floor = statistics.median(floors)
    print(f"\n== {workload}: {cfg['rows']} rows, batch {cfg['batch_size']}, {ops.num_threads()} threads, "
          f"BLAS {ops.build_info().get('blas', '?')}, medians of {repeats}, "
          f"{'CPU' if CLOCK is time.process_time else 'wall'} time ==")
    if fused:
        ft = statistics.median(fused_t)
        print(f"fused fit epoch      {ft * 1e3:8.1f} ms   ({cfg['rows'] / ft:,.0f} samples/s)")
    print(f"kernel sum           {total * 1e3:8.1f} ms   ({ncalls} calls; call overhead ≈ "
          f"{over * 1e6:.1f} µs each = {over * ncalls * 1e3:.1f} ms)")
    print(f"GEMM-only floor      {floor * 1e3:8.1f} ms   ({gemm_flops / 1e9:.2f} GFLOP, "
          f"{gemm_flops / floor / 1e9:.1f} GFLOP/s)")
    print(f"{'kernel':26s} {'ms/epoch':>9s} {'share':>7s} {'GFLOP/s':>8s}")
    for k, v in sorted(med.items(), key=lambda kv: -kv[1]):
        rate = f"{fl[k] / v / 1e9:8.1f}" if fl[k] else ""
        print(f"{k:26s} {v * 1e3:9.2f} {v / total:7.1%} {rate}")
    print(f"{'GEMM (M, N, K, tA, tB)':32s} {'ms/epoch':>9s} {'GFLOP/s':>8s}   (one epoch, after the medians)")
    count = defaultdict(int)
    for m in sizes:
        for key in seqs[m][0].gemms:
            count[key] += 1
    for key, v in sorted(shape_t.items(), key=lambda kv: -kv[1]):
        M, N, K, _a, _b = key
        print(f"{str(key):32s} {v * 1e3:9.2f} {2.0 * M * N * K * count[key] / v / 1e9:8.1f}")
    return {"kernels": med, "sum": total, "floor": floor,
            "fused": statistics.median(fused_t) if fused else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workload", nargs="+", default=["tabular", "lnmlp"], choices=["tabular", "lnmlp"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-fused", action="store_true", help="skip the real fit epochs")
    p.add_argument("--fastckpt-path", default=None, help="import fastckpt from this directory")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time, robust on a loaded machine at 1 thread (at more "
                        "threads it adds every thread's time, spin-waits included)")
    a = p.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if a.clock == "cpu" else time.perf_counter
    ops.set_num_threads(a.threads)
    for w in a.workload:
        profile(w, a.repeats, not a.no_fused)


if __name__ == "__main__":
    main()
