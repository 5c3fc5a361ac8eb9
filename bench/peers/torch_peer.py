"""PyTorch eager on the CPU, written the way a PyTorch user would write the tutorial.

Manual batching with ``torch.randperm`` shuffling (no DataLoader: it would add worker and collation
overhead that is not PyTorch's compute), ``model.train()``/``model.eval()``, ``torch.no_grad()`` for
validation and predict. predict is timed both ways: the batch-32 loop (Keras' ``predict``
semantics, the ``predict`` metric) and one ``model(x)`` call on every row (``predict_one``).
Adam uses Keras' defaults (lr 1e-3, ε 1e-7) so both sides do the same math.
The file is named ``torch_peer`` so it can never shadow the real ``torch`` package.
"""

from __future__ import annotations

import time

import numpy as np

from bench.peers.keras_common import PREDICT_CALLS, time_predict
from bench.workloads.base import THREADS, load_arrays, rss_mb


def _torch():
    import torch

    torch.set_num_threads(THREADS)
    try:
        torch.set_num_interop_threads(1)  # TF gets inter-op 1 too; only settable before first use
    except RuntimeError:
        pass
    return torch


def eager_epoch(torch, model, opt, loss_fn, inputs, ys, bs):
    """One shuffled epoch of PyTorch's eager loop (``torch.randperm`` batches, ``model(*inputs)``):
    (mean loss, accuracy). Loss and hits accumulate on tensors and sync once per epoch, as Keras
    reports per-epoch logs."""
    model.train()
    n = len(ys)
    perm = torch.randperm(n)
    total_loss = torch.zeros(())
    correct = torch.zeros((), dtype=torch.int64)
    for i in range(0, n, bs):
        idx = perm[i:i + bs]
        yb = ys[idx]
        opt.zero_grad(set_to_none=True)
        logits = model(*[t[idx] for t in inputs])
        loss = loss_fn(logits, yb)
        loss.backward()
        opt.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
    return total_loss.item() / n, correct.item() / n


def mlp(cfg, data, params) -> dict:
    torch = _torch()
    nn = torch.nn
    arrays = load_arrays(data)
    # from_numpy shares memory: the conversion is free and not part of any timing anyway.
    x = torch.from_numpy(arrays["x"])
    y = torch.from_numpy(arrays["y"].astype(np.int64))  # cross_entropy wants int64 targets
    x_val = torch.from_numpy(arrays["x_val"]) if "x_val" in arrays else None
    y_val = torch.from_numpy(arrays["y_val"].astype(np.int64)) if "y_val" in arrays else None
    x_pred = torch.from_numpy(arrays["x_pred"]) if "x_pred" in arrays else None
    bs, epochs = cfg["batch_size"], cfg["epochs"]
    base_rss = rss_mb()

    torch.manual_seed(cfg["seed"])
    layers, width_in = [], x.shape[1]
    for width in cfg["hidden"]:
        layers += [nn.Linear(width_in, width), nn.ReLU()]
        if cfg.get("dropout"):
            layers.append(nn.Dropout(cfg["dropout"]))
        width_in = width
    layers.append(nn.Linear(width_in, cfg["classes"]))
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()

    def train_epoch(xs, ys):
        return eager_epoch(torch, model, opt, loss_fn, [xs], ys, bs)

    def evaluate(xs, ys):
        model.eval()
        total_loss = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        with torch.no_grad():
            for i in range(0, len(xs), bs):
                logits = model(xs[i:i + bs])
                total_loss += loss_fn(logits, ys[i:i + bs]) * len(logits)
                correct += (logits.argmax(1) == ys[i:i + bs]).sum()
        return total_loss.item() / len(xs), correct.item() / len(xs)

    def predict(xs):
        model.eval()
        with torch.no_grad():  # batch size as Keras' predict uses, so the work is the same
            return torch.cat([model(xs[i:i + bs]) for i in range(0, len(xs), bs)]).numpy()

    def predict_one_call(xs):
        model.eval()
        with torch.no_grad():  # what PyTorch users write: every row in one call
            return model(xs).numpy()

    def fit(xs, ys, n_epochs, xv, yv):
        acc = float("nan")
        for _ in range(n_epochs):
            _, acc = train_epoch(xs, ys)
            if xv is not None:
                evaluate(xv, yv)
        return acc

    warm = lambda t: None if t is None else t[: min(len(t), 2 * bs + len(t) % bs)]  # noqa: E731
    t0 = time.perf_counter()
    fit(warm(x), warm(y), 1, warm(x_val), warm(y_val))
    if x_pred is not None:
        predict(warm(x_pred))
        predict_one_call(warm(x_pred))
    warmup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    acc = fit(x, y, epochs, x_val, y_val)
    fit_s = time.perf_counter() - t0
    out = {"fit_s": fit_s, "warmup_s": warmup_s, "train_acc": acc,
           "samples_per_s": len(x) * epochs / fit_s, "rss_base_mb": base_rss}
    if x_pred is not None:
        # Both ways, alternating call by call so drift hits both alike; medians of PREDICT_CALLS.
        loop, one = [], []
        for _ in range(PREDICT_CALLS):
            loop.append(time_predict(predict, x_pred, cfg, calls=1))
            one.append(time_predict(predict_one_call, x_pred, cfg, "predict_one_s", calls=1))
        for part in (loop, one):
            for key in part[0]:
                out[key] = sorted(p[key] for p in part)[len(part) // 2]
    return out


def _operands(torch, calls):
    """Preallocates (a, b, out) per call; a transposed operand is a ``.t()`` view, as in autograd."""
    gen = torch.Generator().manual_seed(0)
    cache, ops = {}, []
    for m, k, n, ta, tb in calls:
        key = (m, k, n, ta, tb)
        if key not in cache:
            a = torch.randn((k, m) if ta else (m, k), generator=gen)
            b = torch.randn((n, k) if tb else (k, n), generator=gen)
            cache[key] = (a.t() if ta else a, b.t() if tb else b, torch.empty(m, n))
        ops.append(cache[key])
    return ops


def gemm_floor(cfg, data, params) -> dict:
    from bench.workloads.gemm_floor import schedule

    torch = _torch()
    sched = schedule(cfg)
    phases = {name: _operands(torch, calls) for name, calls in sched.items()}
    mm = torch.mm
    out = {}
    for name, ops in phases.items():
        for a, b, o in ops[: min(len(ops), 200)]:  # warm up: thread pool, page faults
            mm(a, b, out=o)
        t0 = time.perf_counter()
        for a, b, o in ops:
            mm(a, b, out=o)
        out[f"{name}_s"] = time.perf_counter() - t0
    return out


def gemm_peak(cfg, data, params) -> dict:
    from bench.workloads.blas_peak import time_loop

    torch = _torch()
    out = {}
    for m, k, n, ta in cfg["shapes"]:
        (a, b, o), = _operands(torch, [(m, k, n, ta, False)])
        out[f"gflops_{m}x{k}x{n}"] = time_loop(lambda: torch.mm(a, b, out=o), 2.0 * m * k * n,
                                               cfg["min_time_s"])
    return out


def ckpt_methods(method):
    """``torch.save``/``torch.load`` of a state-dict-shaped {name: tensor} dict."""
    torch = _torch()
    converted = {}

    def prepare(tensors):
        # from_numpy shares memory; done untimed so the timing is torch.save alone.
        converted["src"] = tensors
        converted["state"] = {k: torch.from_numpy(np.ascontiguousarray(t)) for k, t in tensors.items()}

    def save(path, tensors):
        assert converted.get("src") is tensors
        torch.save(converted["state"], path)

    def load(path, keys):
        state = torch.load(path, weights_only=True)  # the safe loader, what users are told to use
        return {k: state[k].numpy() for k in keys}

    save.prepare = prepare
    return save, load, None
