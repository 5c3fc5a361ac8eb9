"""fastckpt: the Keras-API model through ``fastckpt.keras``, its GEMM, and its checkpoint bundle.

Every entry point checks for the API it needs and raises ``Unavailable`` when it is not there yet,
so the harness measures a feature the moment it lands on main without any change here.
"""

from __future__ import annotations

import time

import numpy as np

from bench.workloads.base import THREADS, Unavailable


def _ops(threads: int = THREADS):
    from fastckpt import ops

    ops.set_num_threads(threads)
    return ops


def mlp(cfg, data, params) -> dict:
    _ops()
    try:
        from fastckpt import keras
    except ImportError as e:
        raise Unavailable(f"fastckpt.keras not importable yet ({e})") from None
    missing = [name for name in ("Sequential", "Input", "layers", "optimizers", "losses", "utils")
               if not hasattr(keras, name)]
    if missing or not hasattr(keras.Sequential, "fit"):
        raise Unavailable(f"fastckpt.keras lacks {', '.join(missing) or 'Sequential.fit'} yet")
    from bench.peers.keras_common import mlp as run

    return run(keras, cfg, data, params)


def _operands(calls):
    rng = np.random.default_rng(0)
    cache, ops = {}, []
    for m, k, n, ta, tb in calls:
        key = (m, k, n, ta, tb)
        if key not in cache:
            # Stored the way the training step holds them: a transposed operand is the untransposed
            # array plus a flag, so no copy is made (the same as autograd's .t() views in torch).
            a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
            b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
            cache[key] = (a, b, np.empty((m, n), np.float32), ta, tb)
        ops.append(cache[key])
    return ops


def gemm_floor(cfg, data, params) -> dict:
    from bench.workloads.gemm_floor import schedule

    gemm = _ops(params.get("threads", THREADS)).gemm
    out = {}
    for name, calls in schedule(cfg).items():
        ops = _operands(calls)
        for a, b, o, ta, tb in ops[: min(len(ops), 200)]:  # warm up: BLAS threads, page faults
            gemm(a, b, out=o, trans_a=ta, trans_b=tb)
        t0 = time.perf_counter()
        for a, b, o, ta, tb in ops:
            gemm(a, b, out=o, trans_a=ta, trans_b=tb)
        out[f"{name}_s"] = time.perf_counter() - t0
    return out


def gemm_peak(cfg, data, params) -> dict:
    from bench.workloads.blas_peak import time_loop

    gemm = _ops(params["threads"]).gemm
    out = {}
    for m, k, n, ta in cfg["shapes"]:
        (a, b, o, ta, tb), = _operands([(m, k, n, ta, False)])
        out[f"gflops_{m}x{k}x{n}"] = time_loop(
            lambda: gemm(a, b, out=o, trans_a=ta, trans_b=tb), 2.0 * m * k * n, cfg["min_time_s"])
    return out


# -- checkpoint: the colleague's bundle API, measured as soon as it exists ------------------------

def _bundle():
    try:
        from fastckpt.checkpoint import bundle
    except ImportError as e:
        raise Unavailable(f"fastckpt.checkpoint.bundle not importable yet ({e})") from None
    if not (hasattr(bundle, "write_bundle") and hasattr(bundle, "BundleReader")):
        raise Unavailable("fastckpt.checkpoint.bundle lacks write_bundle/BundleReader yet")
    return bundle


def ckpt_methods(method):
    """(save, load, open) for ``bench.workloads.checkpoint``; raises Unavailable before import."""
    bundle = _bundle()
    _ops()
    alive = []  # the last reader, kept open while the caller checks the values it returned

    def release():
        # Untimed, before the harness deletes the previous round's files (as every other method's
        # `del loaded` is): the reader's mapping pins that file's page cache, and unmapping it
        # frees ~500 MB (20-26 ms here), which must not be charged to the next save.
        while alive:
            alive.pop().close()

    def save(prefix, tensors):
        # fsync off, as for every other method here: the comparison is the write path, not the disk.
        bundle.write_bundle(prefix, tensors, fsync=False)

    def open_only(prefix, keys):
        # The cost of opening for get_tensor: should be O(index), not O(data).
        with bundle.BundleReader(prefix) as reader:
            reader.get_tensor(keys[0])

    def load(prefix, keys):
        release()
        reader = bundle.BundleReader(prefix)
        out = {k: np.asarray(reader.get_tensor(k)) for k in keys}
        # get_tensor returns zero-copy views over the mapped file (CRC-checked on first access);
        # touching one byte per 4 KiB page makes sure the data is resident, which is what the
        # other methods' loads pay for, whatever the reader does lazily.
        for v in out.values():
            flat = v.reshape(-1).view(np.uint8)
            if flat.size:
                int(flat[::4096].sum())
        alive.append(reader)
        return out

    load.release = release
    return save, load, open_only
