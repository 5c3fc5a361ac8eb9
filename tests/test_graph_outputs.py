"""The native graph trainer's losses, metrics and outputs (fastckpt/training/graph_fused.py,
kernels/graph_trainer.cpp): metrics without a native count (updated from the recorded batch
outputs), several outputs with loss weights, sample and class weights. Each run equals the
layer-by-layer path (FASTCKPT_FUSED=0) bit for bit, and really ran natively."""

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.training import graph_fused, trainer as trainer_mod

L = keras.layers
M = keras.metrics


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def native_calls(monkeypatch):
    """Counts the graph trainer's native train_steps calls and the ones that recorded outputs."""
    calls = {"train": 0, "recorded": 0, "evaluate": 0}
    real_train = graph_fused.GraphFusedTrainer.train_steps
    real_eval = graph_fused.GraphFusedTrainer.evaluate

    def train(self, *a, **k):
        calls["train"] += 1
        res = real_train(self, *a, **k)
        calls["recorded"] += any(p is not None for p in res[-1])
        return res

    def evaluate(self, *a, **k):
        calls["evaluate"] += 1
        return real_eval(self, *a, **k)

    monkeypatch.setattr(graph_fused.GraphFusedTrainer, "train_steps", train)
    monkeypatch.setattr(graph_fused.GraphFusedTrainer, "evaluate", evaluate)
    return calls


def _run_both(monkeypatch, make, fit_kwargs, eval_kwargs, compile_kwargs, native_calls,
              callbacks=None):
    out = []
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        keras.utils.set_random_seed(5)
        model = make()
        model.compile(**compile_kwargs())
        before = dict(native_calls)
        hist = model.fit(verbose=0, callbacks=callbacks() if callbacks else None, **fit_kwargs)
        ev = model.evaluate(verbose=0, return_dict=True, **eval_kwargs)
        calls = {k: native_calls[k] - before[k] for k in native_calls}
        out.append((model, hist.history, ev, calls))
    return out


def _assert_same(out, epochs, per_step=False, recorded=True):
    (m1, h1, e1, c1), (m2, h2, e2, c2) = out
    assert isinstance(m1._trainer._fused, graph_fused.GraphFusedTrainer)
    assert m2._trainer._fused is None and c2 == {"train": 0, "recorded": 0, "evaluate": 0}
    if not per_step:
        assert c1["train"] == epochs  # one native call per epoch
    assert c1["evaluate"] >= 1
    assert (c1["recorded"] > 0) == recorded
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        assert np.array_equal(a, b)
    for a, b in zip(m1.optimizer.variables, m2.optimizer.variables):
        assert np.array_equal(a.numpy(), b.numpy())
    assert list(h1) == list(h2)
    assert h1 == h2
    assert e1 == e2


# --- 1. any metric ------------------------------------------------------------------------------

def imbalanced_model():
    """TF's "Classification on imbalanced data" model."""
    return keras.Sequential([L.Dense(16, activation="relu", input_shape=(12,)), L.Dropout(0.5),
                             L.Dense(1, activation="sigmoid")])


def tutorial_metrics():
    return [M.MeanSquaredError(name="Brier score"), M.TruePositives(name="tp"),
            M.FalsePositives(name="fp"), M.TrueNegatives(name="tn"), M.FalseNegatives(name="fn"),
            M.BinaryAccuracy(name="accuracy"), M.Precision(name="precision"),
            M.Recall(name="recall"), M.AUC(name="auc"), M.AUC(name="prc", curve="PR")]


def imbalanced_data(rng, n=400):
    x = rng.standard_normal((n, 12)).astype(np.float32)
    y = ((x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.standard_normal(n)) > 1.3).astype(np.float32)
    return x, y.reshape(-1, 1)


@pytest.mark.parametrize("class_weight", [None, {0: 0.6, 1: 3.5}])
def test_imbalanced_tutorial_metrics_run_natively(rng, monkeypatch, native_calls, class_weight):
    x, y = imbalanced_data(rng)
    xv, yv = imbalanced_data(rng, 120)
    out = _run_both(
        monkeypatch, imbalanced_model,
        dict(x=x, y=y, batch_size=64, epochs=3, validation_data=(xv, yv), class_weight=class_weight),
        dict(x=xv, y=yv, batch_size=50),
        lambda: dict(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.BinaryCrossentropy(),
                     metrics=tutorial_metrics()), native_calls)
    _assert_same(out, 3)
    h = out[0][1]
    assert {"tp", "fp", "tn", "fn", "auc", "prc", "val_prc", "Brier score"} <= set(h)
    assert h["tp"][-1] + h["fn"][-1] == float(y.sum())


@pytest.mark.parametrize("metrics", [["mae", "mse"], [M.RootMeanSquaredError(), "mae"]])
def test_regression_metrics_without_a_native_count(rng, monkeypatch, native_calls, metrics):
    x = rng.standard_normal((150, 6)).astype(np.float32)
    y = (x[:, :2] * 0.7).astype(np.float32)

    def make():
        inp = keras.Input(shape=(6,))
        return keras.Model(inp, L.Dense(2)(L.LayerNormalization()(L.Dense(8, "tanh")(inp))))

    out = _run_both(monkeypatch, make, dict(x=x, y=y, batch_size=32, epochs=2, validation_split=0.2),
                    dict(x=x, y=y, batch_size=40),
                    lambda: dict(optimizer="adam", loss="mse", metrics=list(metrics)), native_calls)
    _assert_same(out, 2)


def test_mixed_native_and_python_metrics(rng, monkeypatch, native_calls):
    """Accuracy stays native, top-k and the sparse function (which reads the softmax) replay;
    a batch-end callback makes one native call per step."""
    x = rng.standard_normal((170, 10)).astype(np.float32)
    y = rng.integers(0, 5, 170).astype(np.int32)

    def make():
        inp = keras.Input(shape=(10,))
        return keras.Model(inp, L.Dense(5, activation="softmax")(L.Dense(12, "relu")(inp)))

    metrics = lambda: [M.SparseCategoricalAccuracy(), "accuracy",  # noqa: E731
                       M.SparseTopKCategoricalAccuracy(k=2)]
    seen = []
    cb = lambda: [keras.callbacks.LambdaCallback(  # noqa: E731
        on_train_batch_end=lambda b, logs: seen.append(logs))]
    out = _run_both(monkeypatch, make, dict(x=x, y=y, batch_size=32, epochs=2),
                    dict(x=x, y=y, batch_size=64),
                    lambda: dict(optimizer="adam", loss="sparse_categorical_crossentropy",
                                 metrics=metrics()), native_calls, callbacks=cb)
    _assert_same(out, 2, per_step=True)
    assert out[0][3]["train"] == 2 * 6
    half = len(seen) // 2
    assert seen[:half] == seen[half:]  # per-batch logs equal too
    assert isinstance(out[0][0]._trainer._fused.native[0][0], M.SparseCategoricalAccuracy)


def test_only_native_metrics_record_nothing(rng, monkeypatch, native_calls):
    x = rng.standard_normal((100, 10)).astype(np.float32)
    y = rng.integers(0, 3, 100).astype(np.int32)

    def make():
        inp = keras.Input(shape=(10,))
        return keras.Model(inp, L.Dense(3, activation="softmax")(L.Dense(8, "relu")(inp)))

    out = _run_both(monkeypatch, make, dict(x=x, y=y, batch_size=25, epochs=1),
                    dict(x=x, y=y), lambda: dict(optimizer="adam",
                                                 loss="sparse_categorical_crossentropy",
                                                 metrics=[M.SparseCategoricalAccuracy()]),
                    native_calls)
    _assert_same(out, 1, recorded=False)


# --- 2. several outputs -------------------------------------------------------------------------

def two_output_model():
    inp = keras.Input(shape=(9,), name="features")
    h = L.Dense(16, activation="relu")(inp)
    h = L.Dropout(0.2)(h)
    cls = L.Dense(4, activation="softmax", name="cls")(h)
    reg = L.Dense(2, name="reg")(L.Concatenate()([h, inp]))
    flag = L.Dense(1, activation="sigmoid", name="flag")(h)
    return keras.Model(inp, [cls, reg, flag])


def two_output_data(rng, n=210):
    x = rng.standard_normal((n, 9)).astype(np.float32)
    y_cls = rng.integers(0, 4, n).astype(np.int32)
    y_reg = (x[:, :2] * 0.5).astype(np.float32)
    y_flag = (x[:, 3] > 0.2).astype(np.float32)
    return x, {"cls": y_cls, "reg": y_reg, "flag": y_flag}


@pytest.mark.parametrize("form", ["dict", "list"])
def test_several_outputs_with_loss_weights_and_metrics(rng, monkeypatch, native_calls, form):
    x, ys = two_output_data(rng)
    xv, yv = two_output_data(rng, 60)
    names = ["cls", "reg", "flag"]

    def compile_kwargs():
        loss = {"cls": "sparse_categorical_crossentropy", "reg": "mse",
                "flag": keras.losses.BinaryCrossentropy()}
        weights = {"cls": 1.0, "reg": 0.3, "flag": 2.5}
        metrics = {"cls": ["accuracy", M.SparseTopKCategoricalAccuracy(k=2)], "reg": ["mae"],
                   "flag": [M.BinaryAccuracy(), M.AUC()]}
        if form == "list":
            loss, weights, metrics = ([d[k] for k in names] for d in (loss, weights, metrics))
        return dict(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=loss,
                    loss_weights=weights, metrics=metrics)

    yl = ys if form == "dict" else [ys[k] for k in names]
    out = _run_both(monkeypatch, two_output_model,
                    dict(x=x, y=yl, batch_size=32, epochs=2, validation_data=(xv, yv)),
                    dict(x=xv, y=yv, batch_size=32), compile_kwargs, native_calls)
    _assert_same(out, 2)
    h = out[0][1]
    assert {"loss", "cls_loss", "reg_loss", "flag_loss", "reg_mae", "flag_auc",
            "val_flag_loss", "val_cls_loss"} <= set(h)
    # The total is the weighted sum of the outputs' losses.
    total = h["cls_loss"][-1] + 0.3 * h["reg_loss"][-1] + 2.5 * h["flag_loss"][-1]
    assert h["loss"][-1] == pytest.approx(total, rel=1e-6)


def test_several_outputs_sharing_a_branch_with_one_loss_each(rng, monkeypatch, native_calls):
    """An output also read by a later layer: its loss gradient and the later one add up."""
    x = rng.standard_normal((120, 5)).astype(np.float32)
    y1 = (x[:, :3] * 0.3).astype(np.float32)
    y2 = rng.integers(0, 2, 120).astype(np.int32)

    def make():
        inp = keras.Input(shape=(5,))
        mid = L.Dense(3, name="mid")(inp)
        top = L.Dense(2, activation="softmax", name="top")(L.Dense(6, "tanh")(mid))
        return keras.Model(inp, [mid, top])

    out = _run_both(monkeypatch, make, dict(x=x, y=[y1, y2], batch_size=20, epochs=2),
                    dict(x=x, y=[y1, y2]),
                    lambda: dict(optimizer="adam", loss=["mae", "sparse_categorical_crossentropy"],
                                 loss_weights=[0.7, 1.3]), native_calls)
    _assert_same(out, 2, recorded=False)


# --- 3. sample and class weights ----------------------------------------------------------------

def test_sample_weights_and_weighted_metrics(rng, monkeypatch, native_calls):
    x, ys = two_output_data(rng, 180)
    sw = {"cls": rng.uniform(0.2, 2.0, 180).astype(np.float32),
          "flag": rng.uniform(0.0, 3.0, 180).astype(np.float32)}
    vw = rng.uniform(0.5, 1.5, 180).astype(np.float32)

    def compile_kwargs():
        return dict(optimizer="adam",
                    loss={"cls": "sparse_categorical_crossentropy", "reg": "mae",
                          "flag": "binary_crossentropy"},
                    metrics={"cls": [M.SparseCategoricalAccuracy()]},
                    weighted_metrics={"cls": [M.SparseCategoricalAccuracy(name="wacc")],
                                      "flag": ["accuracy"]})

    out = _run_both(monkeypatch, two_output_model,
                    dict(x=x, y=ys, sample_weight=sw, batch_size=30, epochs=2,
                         validation_data=(x[:60], {k: v[:60] for k, v in ys.items()},
                                          {"cls": vw[:60], "reg": vw[:60], "flag": vw[:60]})),
                    dict(x=x, y=ys, sample_weight={"cls": vw, "reg": vw, "flag": vw}),
                    compile_kwargs, native_calls)
    _assert_same(out, 2)
    assert out[0][1]["cls_wacc"] != out[0][1]["cls_sparse_categorical_accuracy"]


@pytest.mark.parametrize("loss", ["sparse", "categorical"])
def test_class_weight_single_output(rng, monkeypatch, native_calls, loss):
    x = rng.standard_normal((200, 8)).astype(np.float32)
    y = rng.integers(0, 3, 200).astype(np.int32)
    if loss == "categorical":
        y = np.eye(3, dtype=np.float32)[y]

    def make():
        inp = keras.Input(shape=(8,))
        h = L.BatchNormalization()(L.Dense(10, "relu")(inp))
        return keras.Model(inp, L.Dense(3, activation="softmax")(h))

    out = _run_both(monkeypatch, make,
                    dict(x=x, y=y, batch_size=32, epochs=2, class_weight={0: 0.5, 1: 2.0, 2: 1.25},
                         sample_weight=rng.uniform(0.5, 1.5, 200)),
                    dict(x=x, y=y), lambda: dict(optimizer="adam",
                                                 loss=f"{loss}_categorical_crossentropy"
                                                 if loss == "sparse" else "categorical_crossentropy",
                                                 metrics=["accuracy"]), native_calls)
    _assert_same(out, 2, recorded=False)  # "accuracy": counted natively for both losses


def test_resumed_run_with_weights_and_outputs_is_identical(rng, monkeypatch, tmp_path,
                                                           native_calls):
    """Two epochs in one fit equal one epoch, save, load, one more epoch (metrics, outputs,
    loss and sample weights on the native path)."""
    x, ys = two_output_data(rng, 150)
    sw = {"cls": rng.uniform(0.2, 2.0, 150).astype(np.float32)}

    def make():
        keras.utils.set_random_seed(11)
        model = two_output_model()
        model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse",
                                              "binary_crossentropy"],
                      loss_weights=[1.0, 0.5, 2.0],
                      metrics=[["accuracy"], ["mae"], [M.AUC()]])
        return model

    kw = dict(batch_size=32, verbose=0, shuffle=False)
    whole = make()
    hw = whole.fit(x, ys, epochs=2, sample_weight=sw, **kw).history
    first = make()
    first.fit(x, ys, epochs=1, sample_weight=sw, **kw)
    first.save(tmp_path / "m.keras")
    resumed = keras.models.load_model(tmp_path / "m.keras")
    hr = resumed.fit(x, ys, epochs=1, sample_weight=sw, **kw).history
    assert isinstance(resumed._trainer._fused, graph_fused.GraphFusedTrainer)
    assert all(np.array_equal(a, b) for a, b in zip(whole.get_weights(), resumed.get_weights()))
    assert {k: v[-1] for k, v in hw.items()} == {k: v[-1] for k, v in hr.items()}


def test_targets_the_native_loop_cannot_read_fall_back(rng, native_calls):
    """An ignore_class loss, or a loss without a native kernel on one output: layer by layer."""
    x, ys = two_output_data(rng, 64)
    model = two_output_model()
    model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "huber",
                                          "binary_crossentropy"])
    model.fit(x, ys, epochs=1, verbose=0)
    assert model._trainer._fused is None and native_calls["train"] == 0
    model = two_output_model()
    model.compile(optimizer="adam", loss=[keras.losses.SparseCategoricalCrossentropy(
        ignore_class=0), "mse", "binary_crossentropy"])
    model.fit(x, ys, epochs=1, verbose=0)
    assert model._trainer._fused is None and native_calls["train"] == 0


def test_native_trainer_checks_targets_weights_and_buffers(rng):
    x, ys = two_output_data(rng, 40)
    model = two_output_model()
    model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse",
                                          "binary_crossentropy"], metrics=[[], [], [M.AUC()]])
    model.fit(x, ys, epochs=1, verbose=0)
    fused = model._trainer._fused
    assert isinstance(fused, graph_fused.GraphFusedTrainer) and fused.record == [False, False, True]
    impl = fused.impl
    it = model.optimizer.iterations.value.reshape(1)
    y = [ys["cls"], ys["reg"], ys["flag"].reshape(-1, 1)]
    with pytest.raises(ValueError, match="expected 3 target arrays"):
        impl.train_steps([x], y[:2], [None] * 3, None, 8, 0, 1, it, [None] * 3)
    with pytest.raises(ValueError, match="same rows"):
        impl.train_steps([x], [y[0], y[1][:20], y[2]], [None] * 3, None, 8, 0, 1, it, [None] * 3)
    with pytest.raises(TypeError, match="float32"):
        impl.train_steps([x], y, [np.ones(40), None, None], None, 8, 0, 1, it, [None] * 3)
    with pytest.raises(ValueError, match="sample_weight: expected at least 40"):
        impl.train_steps([x], y, [np.ones(4, np.float32), None, None], None, 8, 0, 1, it,
                         [None] * 3)
    with pytest.raises(ValueError, match="predictions: expected at least 16"):
        impl.train_steps([x], y, [None] * 3, None, 8, 0, 2, it,
                         [None, None, np.empty((15, 1), np.float32)])
    with pytest.raises(TypeError, match="must be a NumPy array"):
        impl.evaluate([x], [list(y[0])] + y[1:], [None] * 3, 8, [None] * 3)


def test_weighted_validation_keeps_both_native_trainers(rng, monkeypatch, native_calls):
    """A Dense chain trains on the chain trainer; its validation data carry sample weights, so
    they run on the graph trainer: each is built once and kept, and the run equals the
    layer-by-layer path."""
    x = rng.standard_normal((160, 10)).astype(np.float32)
    y = rng.integers(0, 3, 160).astype(np.int32)
    wv = rng.uniform(0.5, 2.0, 40).astype(np.float32)
    seen = []

    def make():
        return keras.Sequential([L.Dense(12, activation="relu", input_shape=(10,)),
                                 L.Dropout(0.2), L.Dense(3, activation="softmax")])

    def cb():
        return [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
            (m.trainer._chain, m.trainer._graph)))]

    class _Holder:
        trainer = None

    m = _Holder()
    real_make = make

    def make():  # noqa: F811
        model = real_make()
        m.trainer = model._trainer
        return model

    out = _run_both(monkeypatch, make,
                    dict(x=x[:120], y=y[:120], batch_size=32, epochs=3,
                         validation_data=(x[120:], y[120:], wv)),
                    dict(x=x, y=y), lambda: dict(optimizer="adam",
                                                 loss="sparse_categorical_crossentropy",
                                                 metrics=["accuracy"]), native_calls,
                    callbacks=cb)
    (m1, h1, e1, c1), (m2, h2, e2, c2) = out
    assert c1["train"] == 0 and c1["evaluate"] == 3  # training on the chain trainer
    assert len({id(a) for a, _ in seen[:3]}) == 1 and len({id(b) for _, b in seen[:3]}) == 1
    assert seen[0][0] is not None and seen[0][1] is not None
    assert all(a is None and b is None for a, b in seen[3:])
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        assert np.array_equal(a, b)
    assert h1 == h2 and e1 == e2


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_sum_and_none_reductions(rng, monkeypatch, native_calls, reduction):
    x, ys = two_output_data(rng, 130)
    sw = {"cls": rng.uniform(0.2, 2.0, 130).astype(np.float32)}

    def compile_kwargs():
        return dict(optimizer=keras.optimizers.SGD(0.01),
                    loss=[keras.losses.SparseCategoricalCrossentropy(reduction=reduction),
                          keras.losses.MeanSquaredError(reduction=reduction),
                          keras.losses.BinaryCrossentropy()],
                    loss_weights=[0.5, 1.0, 2.0], metrics=[["accuracy"], [], ["mse"]])

    out = _run_both(monkeypatch, two_output_model,
                    dict(x=x, y=ys, sample_weight=sw, batch_size=32, epochs=2),
                    dict(x=x, y=ys), compile_kwargs, native_calls)
    _assert_same(out, 2)
