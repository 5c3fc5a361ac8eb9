"""The Keras-API model run shared by fastckpt, tf.keras and Keras 3.

One function for all three so that the model, the compile arguments and the fit/predict calls are
literally the same code: any difference in the table comes from the library, not from the harness.
"""

from __future__ import annotations

import shutil
import tempfile
import time

from bench.workloads.base import load_arrays, rss_mb


def _warm_slice(arr, batch):
    # Two full batches plus the final partial one: enough to trace every batch shape the timed call
    # will see (tf.function retraces on a new shape), at a small fraction of the timed work.
    if arr is None:
        return None
    n = len(arr)
    return arr[: min(n, 2 * batch + n % batch)]


def _acc(history) -> float:
    for key, values in history.items():
        if "acc" in key and not key.startswith("val_"):
            return float(values[-1])
    return float("nan")


#: Timed predict calls per run; the run reports their median (one call is a few ms: a single timing
#: on a shared machine is mostly the neighbours).
PREDICT_CALLS = 5


def predict_flops(cfg, rows: int) -> float:
    """Multiply-adds × 2 of one forward pass of the MLP on ``rows`` rows (bias and activations
    not counted): the GEMM work predict has to do."""
    widths = [cfg["features"], *cfg["hidden"], cfg["classes"]]
    return 2.0 * rows * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def time_predict(fn, x, cfg, key: str = "predict_s", calls: int = PREDICT_CALLS) -> dict:
    """``fn(x)`` timed ``calls`` times: {key: median seconds, key's GFLOP/s}."""
    times, pred = [], None
    for _ in range(calls):
        t0 = time.perf_counter()
        pred = fn(x)
        times.append(time.perf_counter() - t0)
    if tuple(pred.shape) != (len(x), cfg["classes"]):
        raise RuntimeError(f"predict returned shape {tuple(pred.shape)}")
    med = sorted(times)[len(times) // 2]
    return {key: med, key.replace("_s", "_gflops"): predict_flops(cfg, len(x)) / med / 1e9}


def mlp(keras, cfg, data, params) -> dict:
    """Builds Dense(hidden, relu) [→ Dropout] … → Dense(classes), fits, then predicts.

    Timed: ``fit`` (epochs, with validation when the workload has it) and ``predict`` (median of
    PREDICT_CALLS calls), separately, after a warm-up fit/predict on a small slice of the same model
    (first-call tracing excluded).
    """
    arrays = load_arrays(data)
    x, y = arrays["x"], arrays["y"]
    x_val, y_val = arrays.get("x_val"), arrays.get("y_val")
    x_pred = arrays.get("x_pred")
    bs, epochs = cfg["batch_size"], cfg["epochs"]
    base_rss = rss_mb()

    keras.utils.set_random_seed(cfg["seed"])
    layers = [keras.Input(shape=(x.shape[1],))]
    for width in cfg["hidden"]:
        layers.append(keras.layers.Dense(width, activation="relu"))
        if cfg.get("dropout"):
            layers.append(keras.layers.Dropout(cfg["dropout"]))
    layers.append(keras.layers.Dense(cfg["classes"]))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    callbacks, ckpt_dir = [], None
    if params.get("model_checkpoint"):
        # The tutorial's callback: save the weights every epoch to one prefix, overwriting it.
        if not hasattr(getattr(keras, "callbacks", None), "ModelCheckpoint"):
            from bench.workloads.base import Unavailable

            raise Unavailable("keras.callbacks.ModelCheckpoint not available")
        ckpt_dir = tempfile.mkdtemp(prefix="bench_mc_")
        callbacks.append(keras.callbacks.ModelCheckpoint(
            filepath=f"{ckpt_dir}/cp.ckpt", save_weights_only=True, verbose=0))

    val = None if x_val is None else (x_val, y_val)
    warm_val = None if val is None else (_warm_slice(x_val, bs), _warm_slice(y_val, bs))
    t0 = time.perf_counter()
    model.fit(_warm_slice(x, bs), _warm_slice(y, bs), batch_size=bs, epochs=1,
              validation_data=warm_val, verbose=0, callbacks=callbacks)
    if x_pred is not None:
        model.predict(_warm_slice(x_pred, bs), batch_size=bs, verbose=0)
    warmup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=bs, epochs=epochs, validation_data=val, verbose=0,
                     shuffle=True, callbacks=callbacks)
    fit_s = time.perf_counter() - t0
    if ckpt_dir:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    out = {"fit_s": fit_s, "warmup_s": warmup_s, "train_acc": _acc(hist.history),
           "samples_per_s": len(x) * epochs / fit_s, "rss_base_mb": base_rss}
    if x_pred is not None:
        out.update(time_predict(lambda v: model.predict(v, batch_size=bs, verbose=0), x_pred, cfg))
    return out
