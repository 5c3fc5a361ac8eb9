"""The issue-13 breadth workloads (``tabular``, ``lnmlp``) for every peer.

The Keras-API peers (fastckpt, tf.keras, Keras 3) run one function per workload, so the model,
compile arguments and calls are literally the same code; PyTorch builds the same network with
Keras' initializers (Glorot-uniform kernels, zero biases, uniform ±0.05 embeddings) and Keras'
normalization settings (BatchNorm momentum 0.99 ⇔ torch 0.01, ε 1e-3; LayerNorm ε 1e-3), trained
with the torch peer's eager loop (``torch.randperm`` index batching, no DataLoader).

Timed as the tutorial: an untimed warm-up ``fit`` (1 epoch) and ``predict`` on two batches plus the
final partial batch, then ``fit`` (continuing the same model), then ``predict`` on every training
row with the workload's batch size.
"""

from __future__ import annotations

import time

import numpy as np

from bench.peers.keras_common import _acc, _warm_slice
from bench.workloads.base import THREADS, Unavailable, load_arrays, rss_mb

_TABULAR_INPUTS = ("num", "cat1", "cat2")


# --- the Keras API (fastckpt, tf.keras, Keras 3) ---------------------------------------------------

def _keras_tabular_model(keras, cfg):
    L = keras.layers
    num = keras.Input(shape=(cfg["numeric"],), name="num")
    inputs, feats = [num], [num]
    for i, (vocab, dim) in enumerate(zip(cfg["vocab"], cfg["embed_dim"])):
        cat = keras.Input(shape=(1,), dtype="int32", name=f"cat{i + 1}")
        inputs.append(cat)
        feats.append(L.Flatten()(L.Embedding(vocab, dim)(cat)))
    h = L.BatchNormalization()(L.Concatenate()(feats))
    for width in cfg["hidden"]:
        h = L.Dense(width, activation="relu")(h)
    return keras.Model(inputs, L.Dense(cfg["classes"])(h), name="tabular")


def _keras_lnmlp_model(keras, cfg):
    L = keras.layers
    layers = [keras.Input(shape=(cfg["features"],))]
    for i, width in enumerate(cfg["hidden"]):
        layers += [L.Dense(width), L.LayerNormalization(), L.Activation("gelu")]
        if i == 0 and cfg.get("dropout"):
            layers.append(L.Dropout(cfg["dropout"]))
    layers.append(L.Dense(cfg["classes"]))
    return keras.Sequential(layers, name="lnmlp")


def keras_run(keras, workload, cfg, data, params) -> dict:
    arrays = load_arrays(data)
    if workload == "tabular":
        x = [arrays[k] for k in _TABULAR_INPUTS]
    else:
        x = arrays["x"]
    y = arrays["y"]
    bs, epochs = cfg["batch_size"], cfg["epochs"]
    base_rss = rss_mb()

    keras.utils.set_random_seed(cfg["seed"])
    build = _keras_tabular_model if workload == "tabular" else _keras_lnmlp_model
    model = build(keras, cfg)
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    warm = (lambda a: [_warm_slice(t, bs) for t in a]) if isinstance(x, list) else (
        lambda a: _warm_slice(a, bs))
    t0 = time.perf_counter()
    model.fit(warm(x), _warm_slice(y, bs), batch_size=bs, epochs=1, verbose=0)
    model.predict(warm(x), batch_size=bs, verbose=0)
    warmup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=bs, epochs=epochs, verbose=0, shuffle=True)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(x, batch_size=bs, verbose=0)
    predict_s = time.perf_counter() - t0
    if tuple(pred.shape) != (len(y), cfg["classes"]):
        raise RuntimeError(f"predict returned shape {pred.shape}")
    return {"fit_s": fit_s, "warmup_s": warmup_s, "train_acc": _acc(hist.history),
            "samples_per_s": len(y) * epochs / fit_s, "predict_s": predict_s,
            "rss_base_mb": base_rss}


def _fastckpt_keras(workload):
    from fastckpt import ops

    ops.set_num_threads(THREADS)
    try:
        from fastckpt import keras
    except ImportError as e:
        raise Unavailable(f"fastckpt.keras not importable yet ({e})") from None
    need = {"tabular": ("Embedding", "Flatten", "Concatenate", "BatchNormalization", "Dense"),
            "lnmlp": ("Dense", "LayerNormalization", "Activation", "Dropout")}[workload]
    missing = [n for n in need if not hasattr(keras.layers, n)]
    if workload == "tabular" and not hasattr(keras, "Model"):
        missing.append("Model")
    if missing:
        raise Unavailable(f"fastckpt.keras lacks {', '.join(missing)} yet")
    return keras


def fastckpt_tabular(cfg, data, params) -> dict:
    return keras_run(_fastckpt_keras("tabular"), "tabular", cfg, data, params)


def fastckpt_lnmlp(cfg, data, params) -> dict:
    return keras_run(_fastckpt_keras("lnmlp"), "lnmlp", cfg, data, params)


def tf_keras_tabular(cfg, data, params) -> dict:
    from bench.peers.tf_keras_peer import _keras

    return keras_run(_keras(), "tabular", cfg, data, params)


def tf_keras_lnmlp(cfg, data, params) -> dict:
    from bench.peers.tf_keras_peer import _keras

    return keras_run(_keras(), "lnmlp", cfg, data, params)


def keras3_tabular(cfg, data, params) -> dict:
    from bench.peers.keras3_peer import _keras

    return keras_run(_keras(), "tabular", cfg, data, params)


def keras3_lnmlp(cfg, data, params) -> dict:
    from bench.peers.keras3_peer import _keras

    return keras_run(_keras(), "lnmlp", cfg, data, params)


# --- PyTorch eager ------------------------------------------------------------------------------

def _keras_init(torch, model):
    nn = torch.nn
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.uniform_(m.weight, -0.05, 0.05)


def _torch_tabular_model(torch, cfg):
    nn = torch.nn

    class Tabular(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = nn.ModuleList(
                nn.Embedding(v, d) for v, d in zip(cfg["vocab"], cfg["embed_dim"]))
            width = cfg["numeric"] + sum(cfg["embed_dim"])
            # Keras' moving = 0.99·moving + 0.01·batch is torch's momentum 0.01.
            self.bn = nn.BatchNorm1d(width, eps=1e-3, momentum=0.01)
            layers = []
            for h in cfg["hidden"]:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, cfg["classes"]))
            self.mlp = nn.Sequential(*layers)

        def forward(self, num, *cats):
            feats = [num] + [emb(c).flatten(1) for emb, c in zip(self.embeddings, cats)]
            return self.mlp(self.bn(torch.cat(feats, dim=1)))

    return Tabular()


def _torch_lnmlp_model(torch, cfg):
    nn = torch.nn
    layers, width = [], cfg["features"]
    for i, h in enumerate(cfg["hidden"]):
        layers += [nn.Linear(width, h), nn.LayerNorm(h, eps=1e-3), nn.GELU()]
        if i == 0 and cfg.get("dropout"):
            layers.append(nn.Dropout(cfg["dropout"]))
        width = h
    layers.append(nn.Linear(width, cfg["classes"]))
    return nn.Sequential(*layers)


def torch_run(workload, cfg, data, params) -> dict:
    from bench.peers.torch_peer import _torch, eager_epoch

    torch = _torch()
    arrays = load_arrays(data)
    if workload == "tabular":
        # nn.Embedding takes int64 (or int32) ids; converted once, untimed, as the targets are.
        xs = [torch.from_numpy(arrays["num"])] + [torch.from_numpy(arrays[k].astype(np.int64))
                                                   for k in _TABULAR_INPUTS[1:]]
    else:
        xs = [torch.from_numpy(arrays["x"])]
    y = torch.from_numpy(arrays["y"].astype(np.int64))
    bs, epochs = cfg["batch_size"], cfg["epochs"]
    base_rss = rss_mb()

    torch.manual_seed(cfg["seed"])
    model = (_torch_tabular_model if workload == "tabular" else _torch_lnmlp_model)(torch, cfg)
    _keras_init(torch, model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()

    def fit(inputs, ys, n_epochs):
        acc = float("nan")
        for _ in range(n_epochs):
            _, acc = eager_epoch(torch, model, opt, loss_fn, inputs, ys, bs)
        return acc

    def predict(inputs):
        model.eval()
        n = len(inputs[0])
        with torch.no_grad():
            return torch.cat([model(*[t[i:i + bs] for t in inputs]) for i in range(0, n, bs)]).numpy()

    warm = lambda t: t[: min(len(t), 2 * bs + len(t) % bs)]  # noqa: E731
    t0 = time.perf_counter()
    fit([warm(t) for t in xs], warm(y), 1)
    predict([warm(t) for t in xs])
    warmup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    acc = fit(xs, y, epochs)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predict(xs)
    predict_s = time.perf_counter() - t0
    assert pred.shape == (len(y), cfg["classes"])
    return {"fit_s": fit_s, "warmup_s": warmup_s, "train_acc": acc,
            "samples_per_s": len(y) * epochs / fit_s, "predict_s": predict_s,
            "rss_base_mb": base_rss}


def torch_tabular(cfg, data, params) -> dict:
    return torch_run("tabular", cfg, data, params)


def torch_lnmlp(cfg, data, params) -> dict:
    return torch_run("lnmlp", cfg, data, params)
