"""Checkpoint save/load: the same tensors through every format, against raw sequential I/O.

Two tensor sets, generated once and handed to every child as .npy files:
- ``tutorial``: the tutorial model's weights (784×512, 512, 512×10, 10 → 1.6 MB) plus Adam's m and v
  for each and the int64 iteration counter, ~4.9 MB;
- ``large``: ~500 MB of float32 (30 kernels 1024×4096 plus their biases), like a mid-size model.

Times: ``save`` = write a fresh file and close it (no fsync for anyone); ``load`` = open and get every
tensor as an array. fastckpt also reports ``open`` (open + one ``get_tensor``), which should be
O(index), not O(data). The tutorial set is tiny, so each child times it several times and reports
the median; the large set once per child, after one untimed round. Every load is checked against
the originals, untimed.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
import time

import numpy as np

from bench.workloads.base import Case, Metric, Unavailable, median, save_arrays

NAME = "checkpoint"
TITLE = "Checkpoint save/load (page cache, fsync off)"
REFERENCE = ("fastckpt", "raw")

_SETS = ("tutorial", "large")
METRICS = [m for s in _SETS for m in (
    Metric(f"{s}_save_s", f"{s} save", "ms", "time", 1e3),
    Metric(f"{s}_load_s", f"{s} load", "ms", "time", 1e3),
    Metric(f"{s}_save_gbs", f"{s} save", "GB/s", "rate"),
    Metric(f"{s}_load_gbs", f"{s} load", "GB/s", "rate"),
    Metric(f"{s}_open_s", f"{s} open+1 get_tensor", "ms", "time", 1e3),
)]

#: method -> (group, module, file suffix, extra required modules)
_METHODS = {
    "fastckpt": ("fastckpt", "bench.peers.fastckpt_peer", "", ()),
    "raw": ("baseline", "bench.peers.baseline_formats", ".bin", ()),
    "npz": ("baseline", "bench.peers.baseline_formats", ".npz", ()),
    "h5py": ("baseline", "bench.peers.baseline_formats", ".h5", ("h5py",)),
    "safetensors": ("baseline", "bench.peers.baseline_formats", ".safetensors", ("safetensors",)),
    "torch": ("torch", "bench.peers.torch_peer", ".pt", ()),
    "tf.train.Checkpoint": ("tf_keras", "bench.peers.tf_keras_peer", "", ()),
}


def config(quick: bool) -> dict:
    return {
        "seed": 7,
        # Quick mode keeps the code path but shrinks the large set to ~8 MB.
        "large_layers": 2 if quick else 30,
        "large_shape": [1024, 1024] if quick else [1024, 4096],
        "tutorial_inner": 3 if quick else 15,
        # Timed rounds of the 500 MB set per run (median taken in the child). One round per run
        # made each run's figure a draw from a two-valued distribution (fresh guest memory runs at
        # ~0.3 GB/s, recycled pages at ~3.5 GB/s; seen for raw write and for fastckpt alike).
        "large_inner": 1 if quick else 3,
    }


def _tensor_sets(cfg) -> dict:
    rng = np.random.default_rng(cfg["seed"])
    f32 = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    tut = {}
    for i, (a, b) in enumerate(((784, 512), (512, 10))):
        name = "dense" if i == 0 else f"dense_{i}"
        tut[f"{name}/kernel"], tut[f"{name}/bias"] = f32(a, b), f32(b)
    for slot in ("m", "v"):
        for k in list(tut):
            if not k.startswith("adam/"):
                tut[f"adam/{slot}/{k}"] = f32(*tut[k].shape)
    tut["adam/iterations"] = np.array(320, np.int64)
    large = {}
    rows, cols = cfg["large_shape"]
    for i in range(cfg["large_layers"]):
        large[f"layer_{i:02d}/kernel"] = f32(rows, cols)
        large[f"layer_{i:02d}/bias"] = f32(cols)
    return {"tutorial": tut, "large": large}


def prepare(cfg, tmpdir) -> dict:
    data = {}
    for set_name, tensors in _tensor_sets(cfg).items():
        d = os.path.join(tmpdir, f"ckpt_{set_name}")
        os.makedirs(d, exist_ok=True)
        keys = list(tensors)
        paths = save_arrays(d, {f"t{i:03d}": tensors[k] for i, k in enumerate(keys)})
        data[set_name] = {"keys": keys, "paths": [paths[f"t{i:03d}"] for i in range(len(keys))],
                          "bytes": int(sum(t.nbytes for t in tensors.values()))}
    return data


def cases(cfg) -> list:
    return [Case(name=m, group=g, target="bench.workloads.checkpoint:run",
                 params={"method": m}, requires=req)
            for m, (g, _mod, _ext, req) in _METHODS.items()]


def _check(loaded, tensors):
    for k, t in tensors.items():
        got = np.asarray(loaded[k])
        if got.shape != t.shape or got.dtype != t.dtype or not np.array_equal(got, t):
            raise RuntimeError(f"loaded {k!r} differs from what was saved")


def run(cfg, data, params) -> dict:
    """Child entry: times one method on both tensor sets."""
    method = params["method"]
    _group, mod_name, ext, _req = _METHODS[method]
    save, load, open_only = importlib.import_module(mod_name).ckpt_methods(method)
    scrub = getattr(load, "scrub", None)
    # Untimed: drops what the previous round's load still holds (fastckpt's reader maps the file),
    # the counterpart of `del loaded` for methods whose loads return copies.
    release = getattr(load, "release", None)
    out = {}
    workdir = tempfile.mkdtemp(prefix="bench_ckpt_")
    try:
        for set_name in _SETS:
            spec = data[set_name]
            tensors = {k: np.load(p) for k, p in zip(spec["keys"], spec["paths"])}
            # One untimed round first. For the tutorial set it warms imports and code paths; for
            # the large set it matters more: on this VM the first touch of fresh guest memory
            # (page cache for the new file, or the arrays a load allocates) runs at ~0.2 GB/s
            # while the host backs the pages, whichever method happens to go first.
            warm, inner = (1, cfg["tutorial_inner"]) if set_name == "tutorial" else (1, cfg.get("large_inner", 1))
            saves, loads, opens = [], [], []
            if hasattr(save, "prepare"):  # untimed: e.g. tf.Variables a model would already hold
                save.prepare(tensors)
            for i in range(warm + inner):
                path = os.path.join(workdir, f"ckpt_{set_name}{ext}")
                if release:
                    release()
                _clear(workdir)
                t0 = time.perf_counter()
                save(path, tensors)
                t_save = time.perf_counter() - t0
                if open_only is not None:
                    t0 = time.perf_counter()
                    open_only(path, spec["keys"])
                    t_open = time.perf_counter() - t0
                if scrub:
                    scrub()
                t0 = time.perf_counter()
                loaded = load(path, spec["keys"])
                t_load = time.perf_counter() - t0
                _check(loaded, tensors)
                del loaded
                if i < warm:
                    continue
                saves.append(t_save)
                loads.append(t_load)
                if open_only is not None:
                    opens.append(t_open)
            gb = spec["bytes"] / 1e9
            out[f"{set_name}_save_s"] = median(saves)
            out[f"{set_name}_load_s"] = median(loads)
            out[f"{set_name}_save_gbs"] = gb / median(saves)
            out[f"{set_name}_load_gbs"] = gb / median(loads)
            if opens:
                out[f"{set_name}_open_s"] = median(opens)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return out


def _clear(d):
    # Every save creates its files afresh, as a first checkpoint would (no overwrite fast paths).
    for name in os.listdir(d):
        p = os.path.join(d, name)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


__all__ = ["NAME", "TITLE", "REFERENCE", "METRICS", "config", "prepare", "cases", "run", "Unavailable"]
