"""The general training loop: any loss through ``Loss._fwd_bwd``, several inputs/outputs,
compile's per-output arguments as tf.keras resolves them, History key names, sample and class
weights, steps and validation options, generators and ``Sequence``/``PyDataset``, the
``*_on_batch`` methods, regularizers and constraints, and bad input — with the fused native path
still taken (and bit-identical) for the single-output case it handled before."""

import numpy as np
import pytest

import fastckpt as fc
from fastckpt import keras
from fastckpt.training import data as data_mod

from training_helpers import (L2, MAE, MSE, ActivityL2Dense, NonNeg, Probe, TwoHeads, TwoInputs,
                              seeded)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def classifier(seed=0, metrics=("accuracy",), opt="adam"):
    seeded(seed)
    model = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(6,)),
                              keras.layers.Dropout(0.1),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=list(metrics))
    return model


def regressor(seed=0, loss=None, **compile_kw):
    seeded(seed)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(5,)),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss or MSE(), **compile_kw)
    return model


def two_heads(seed=0, **compile_kw):
    seeded(seed)
    model = TwoHeads()
    kw = dict(optimizer=keras.optimizers.SGD(0.1),
              loss={"out_a": "sparse_categorical_crossentropy", "out_b": MSE()})
    kw.update(compile_kw)
    model.compile(**kw)
    return model


def cls_data(rng, n=64):
    return rng.standard_normal((n, 6)).astype(np.float32), rng.integers(0, 4, n)


def two_data(rng, n=48):
    x = rng.standard_normal((n, 6)).astype(np.float32)
    return x, rng.integers(0, 3, n), rng.standard_normal((n, 2)).astype(np.float32)


def needs_weighted_sparse_ce():
    try:
        fc.losses.SparseCategoricalCrossentropy()._fwd_bwd(
            np.zeros(1, np.int32), np.ones((1, 2), np.float32), np.ones(1, np.float32), None, 1.0,
            False)
    except NotImplementedError:
        pytest.skip("SparseCategoricalCrossentropy has no sample weights yet (losses slice)")


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(p, q) for p, q in zip(a, b))


# --- the fused path is still the single-output path ------------------------------------------

def test_single_output_uses_the_fused_path_bit_identical_to_layer_by_layer(rng, monkeypatch):
    x, y = cls_data(rng, 100)
    runs = {}
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        m = classifier()
        h = m.fit(x, y, batch_size=16, epochs=2, validation_split=0.2, verbose=0)
        runs[fused] = (m, h.history)
    assert runs["1"][0]._trainer._fused is not None
    assert runs["0"][0]._trainer._fused is None
    assert same(runs["1"][0].get_weights(), runs["0"][0].get_weights())
    assert runs["1"][1] == runs["0"][1]
    assert list(runs["1"][1]) == ["loss", "accuracy", "val_loss", "val_accuracy"]


@pytest.mark.parametrize("kw", [dict(sample_weight=np.ones(64)), dict(class_weight={0: 1, 1: 1, 2: 1, 3: 1}),
                                dict(steps_per_epoch=2, batch_size=8)])
def test_weights_take_the_layer_by_layer_path_with_the_same_result(rng, kw):
    x, y = cls_data(rng)
    if "steps_per_epoch" not in kw:
        needs_weighted_sparse_ce()
    a, b = classifier(), classifier()
    # All-ones weights change nothing numerically: the layer-by-layer path gives the fused
    # result bit for bit.
    if "steps_per_epoch" in kw:
        a.fit(x, y, epochs=2, shuffle=False, verbose=0, **kw)
        b.fit(x[:32], y[:32], batch_size=8, epochs=1, shuffle=False, verbose=0)
        assert int(a.optimizer.iterations.numpy()) == 4 == int(b.optimizer.iterations.numpy())
        assert a._trainer._fused is not None  # per-step native calls across passes
        assert same(a.get_weights(), b.get_weights())
        return
    ha = a.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, **kw)
    hb = b.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    # Weighted runs go to the graph trainer (sample weights natively), the plain one to the chain
    # trainer.
    assert type(a._trainer._fused).__name__ == "GraphFusedTrainer"
    assert b._trainer._fused is not None
    # Weighted sparse cross-entropy is its own kernel (per-row weights), which may round the last
    # bit of a gradient differently from the fused loop's unweighted one.
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
    assert ha.history.keys() == hb.history.keys()
    for k in ha.history:
        np.testing.assert_allclose(ha.history[k], hb.history[k], rtol=1e-6)


# --- generic losses and folding ----------------------------------------------------------------

def test_generic_loss_one_step_matches_numpy(rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    model = regressor()
    (k1, b1), (k2, b2) = [l.get_weights() for l in model.layers]
    h = np.maximum(x @ k1 + b1, 0)
    p = h @ k2 + b2
    want_loss = np.mean(np.mean((p - y) ** 2, axis=1))
    gp = 2 * (p - y) / p.size
    gk2 = h.T @ gp
    gh = (gp @ k2.T) * (h > 0)
    gk1 = x.T @ gh
    hist = model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0)
    assert hist.history["loss"][0] == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(model.layers[1].kernel.numpy(), k2 - 0.05 * gk2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), k1 - 0.05 * gk1, rtol=1e-5, atol=1e-6)
    assert model._trainer._fused is None


@pytest.mark.parametrize("reduction, factor", [("sum", 10.0), ("sum_over_batch_size", 1.0)])
def test_reduction_scales_loss_and_gradient(rng, reduction, factor):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    a, b = regressor(loss=MSE(reduction=reduction)), regressor(loss=MSE())
    before = a.get_weights()
    assert a.evaluate(x, y, verbose=0) == pytest.approx(factor * b.evaluate(x, y, verbose=0),
                                                        rel=1e-6)
    a.fit(x, y, batch_size=10, shuffle=False, verbose=0)
    b.fit(x, y, batch_size=10, shuffle=False, verbose=0)
    for w0, wa, wb in zip(before, a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa - w0, factor * (wb - w0), rtol=1e-3, atol=1e-7)


def test_output_activation_is_folded_per_output_and_metrics_see_probabilities(rng):
    probe_a, probe_b = Probe("pa"), Probe("pb")
    model = two_heads(metrics={"out_a": [probe_a], "out_b": [probe_b]})
    x, ya, yb = two_data(rng)
    model.fit(x, {"out_a": ya, "out_b": yb}, batch_size=48, shuffle=False, verbose=0)
    assert model._trainer._fold == [True, False]
    pa = probe_a.seen[-1][0]
    np.testing.assert_allclose(pa.sum(axis=1), 1.0, rtol=1e-5)  # softmax applied for metrics
    assert probe_a.seen[-1][1] is None
    # The folded loss equals the loss on the model's own (softmax) outputs.
    pred_a, pred_b = model.predict(x, verbose=0)
    want = -np.mean(np.log(pred_a[np.arange(len(ya)), ya]))
    res = model.evaluate(x, [ya, yb], return_dict=True, verbose=0)
    assert res["out_a_loss"] == pytest.approx(want, rel=1e-5)
    assert res["out_b_loss"] == pytest.approx(np.mean((pred_b - yb) ** 2), rel=1e-5)


# --- several outputs: compile, History keys, evaluate, predict -------------------------------

def test_multi_output_history_keys_and_total_loss(rng):
    model = two_heads(loss_weights={"out_a": 0.7, "out_b": 1.5},
                      metrics={"out_a": "accuracy"}, weighted_metrics={"out_b": [MAE()]})
    x, ya, yb = two_data(rng)
    names = ["loss", "out_a_loss", "out_b_loss", "out_a_accuracy", "out_b_mae"]
    assert model.metrics_names == names
    hist = model.fit(x, {"out_a": ya, "out_b": yb}, batch_size=16, epochs=2,
                     validation_data=(x, [ya, yb]), verbose=0)
    assert list(hist.history) == names + ["val_" + n for n in names]
    res = model.evaluate(x, [ya, yb], verbose=0, return_dict=True)
    assert list(res) == names
    assert res["loss"] == pytest.approx(0.7 * res["out_a_loss"] + 1.5 * res["out_b_loss"], rel=1e-6)
    as_list = model.evaluate(x, [ya, yb], verbose=0)
    assert as_list == [res[n] for n in names]
    out = model.predict(x, verbose=0)
    assert isinstance(out, list) and [o.shape for o in out] == [(48, 3), (48, 2)]
    assert model.predict_on_batch(x)[1].shape == (48, 2)


def test_compile_broadcasts_and_maps_like_tf_keras():
    seeded()
    m = TwoHeads(units_a=2, act_a=None)
    acc = MAE("m")
    m.compile("sgd", loss=MSE(), metrics=[acc, "accuracy"])
    # One loss for all outputs; a flat metric list for each output, as copies.
    assert m.metrics_names == ["loss", "out_a_loss", "out_b_loss", "out_a_m", "out_a_accuracy",
                               "out_b_m", "out_b_accuracy"]
    mets = m.compiled_metrics
    assert mets[0] is not mets[2] and acc.name == "m"
    m.compile("sgd", loss=[None, MSE()], metrics=[["accuracy"], [MAE()]], loss_weights=[1.0, 2.0])
    assert m.metrics_names == ["loss", "out_b_loss", "out_a_accuracy", "out_b_mae"]
    assert m._compiled.loss_weights == [1.0, 2.0]
    m.compile("sgd", loss={"out_b": MSE()}, loss_weights=3)
    assert m._compiled.losses[0] is None and m._compiled.loss_weights == [3.0, 3.0]
    m.compile("sgd", loss=MSE(), metrics=[MAE()], weighted_metrics=[MAE()])
    assert m.metrics_names[3:] == ["out_a_mae", "out_a_weighted_mae", "out_b_mae",
                                   "out_b_weighted_mae"]
    single = regressor(metrics=[MAE()], weighted_metrics=[MAE()])
    assert single.metrics_names == ["loss", "mae", "weighted_mae"]
    with pytest.raises(ValueError, match=r"\['out_c'\].*Valid output names: \['out_a', 'out_b'\]"):
        m.compile("sgd", loss={"out_c": MSE()})
    with pytest.raises(ValueError, match="3 entries but the model has 2 output"):
        m.compile("sgd", loss=[MSE(), MSE(), MSE()])
    shared = MAE()
    with pytest.raises(ValueError, match="more than once"):
        m.compile("sgd", loss=MSE(), metrics=[shared], weighted_metrics=[shared])
    with pytest.raises(ValueError, match="same name: out_a_x"):
        m.compile("sgd", loss=MSE(), metrics=[[MAE("x"), MAE("x")], []])


def test_output_without_loss_gets_no_gradient_and_no_loss_key(rng):
    model = two_heads(loss={"out_b": MSE()})
    x, ya, yb = two_data(rng)
    before = model.head_a.get_weights()
    hist = model.fit(x, {"out_b": yb}, batch_size=16, verbose=0)
    assert list(hist.history) == ["loss", "out_b_loss"]
    assert same(before, model.head_a.get_weights())
    assert hist.history["loss"] == hist.history["out_b_loss"]


def test_inputs_and_targets_by_name_list_or_dict(rng):
    x, ya, yb = two_data(rng)
    runs = []
    for xin, yin in [(x, [ya, yb]), ({"features": x}, {"out_a": ya, "out_b": yb}), ([x], (ya, yb))]:
        model = two_heads()
        runs.append(model.fit(xin, yin, batch_size=16, shuffle=False, verbose=0).history)
    assert runs[0] == runs[1] == runs[2]
    model = two_heads()
    with pytest.raises(ValueError, match=r"unknown input name\(s\) \['feats'\].*\['features'\]"):
        model.fit({"feats": x}, [ya, yb], verbose=0)
    with pytest.raises(ValueError, match=r"expects 1 input\(s\) \['features'\], got a list of 2"):
        model.predict([x, x], verbose=0)
    with pytest.raises(ValueError, match=r"unknown output name\(s\) \['out_c'\].*\['out_a', 'out_b'\]"):
        model.fit(x, {"out_a": ya, "out_c": yb}, verbose=0)
    with pytest.raises(ValueError, match=r"expects 2 output\(s\).*got a list of 3"):
        model.fit(x, [ya, yb, yb], verbose=0)


def test_several_inputs_as_list_or_dict(rng):
    xa = rng.standard_normal((30, 4)).astype(np.float32)
    xb = rng.standard_normal((30, 3)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    hists, preds = [], []
    for x in ([xa, xb], {"b": xb, "a": xa}, (xa, xb)):
        seeded(4)
        model = TwoInputs()
        model.compile("sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        hists.append(model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history)
        preds.append(model.predict(x, verbose=0))
    assert hists[0] == hists[1] == hists[2] and list(hists[0]) == ["loss", "accuracy"]
    assert np.array_equal(preds[0], preds[1]) and preds[0].shape == (30, 3)
    assert model._trainer._fold == [True] and model._trainer._fused is None  # not a chain
    with pytest.raises(ValueError, match=r"expects 2 inputs \['a', 'b'\] \(a list or a dict"):
        model.fit(xa, y, verbose=0)
    with pytest.raises(ValueError, match=r"no data for input\(s\) \['b'\]; the model expects "
                                         r"inputs \['a', 'b'\]"):
        model.predict({"a": xa}, verbose=0)
    with pytest.raises(ValueError, match=r"expects x\['b'\] with shape \(None, 3\), got \(30, 4\)"):
        model.evaluate([xa, xa], y, verbose=0)
    with pytest.raises(ValueError, match=r"x\['a'\] has 30 samples but x\['b'\] has 29"):
        model.fit([xa, xb[:29]], y, verbose=0)


def test_arrays_reach_the_step_without_a_copy(rng):
    model = classifier()
    x, y = cls_data(rng)
    y32 = y.astype(np.int32)
    arrays = model._trainer._arrays(x, y32, None)
    assert arrays.xs[0] is x and arrays.ys[0] is y32
    xs, ys, _ = arrays.batch(None, 8, 24)
    assert np.shares_memory(xs[0], x) and np.shares_memory(ys[0], y32)


def test_bad_targets_in_one_output_are_named_and_nothing_changes(rng):
    model = two_heads()
    x, ya, yb = two_data(rng)
    before = model.get_weights()
    ya = ya.copy()
    ya[5] = 3
    with pytest.raises(ValueError, match=r"index 5 of y\['out_a'\].*\[0, 3\)"):
        model.fit(x, [ya, yb], verbose=0)
    with pytest.raises(ValueError, match=r"y\['out_b'\] of shape \(48, 2\), got \(48, 3\)"):
        model.fit(x, [ya % 3, np.zeros((48, 3))], verbose=0)
    with pytest.raises(ValueError, match=r"x has 48 samples but y\['out_b'\] has 47"):
        model.fit(x, [ya % 3, yb[:47]], verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight\['out_b'\] of shape \(48,\).*got shape \(40,\)"):
        model.fit(x, [ya % 3, yb], sample_weight={"out_b": np.ones(40)}, verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[1\]\['out_a'\]"):
        model.fit(x, [ya % 3, yb], validation_data=(x, [ya, yb]), verbose=0)
    assert same(before, model.get_weights())
    assert int(model.optimizer.iterations.numpy()) == 0


# --- sample and class weights ------------------------------------------------------------------

def test_sample_weight_weights_the_loss_as_keras(rng):
    x = rng.standard_normal((20, 5)).astype(np.float32)
    y = rng.standard_normal((20, 2)).astype(np.float32)
    w = rng.random(20).astype(np.float32)
    model = regressor(weighted_metrics=[MAE()], metrics=[MAE()])
    pred = model.predict(x, verbose=0)
    per = np.mean((pred.astype(np.float64) - y) ** 2, axis=1)
    res = model.evaluate(x, y, sample_weight=w, batch_size=20, verbose=0, return_dict=True)
    assert res["loss"] == pytest.approx(np.sum(per * w) / 20, rel=1e-5)  # / rows, as Keras
    mae = np.mean(np.abs(pred - y), axis=1)
    assert res["weighted_mae"] == pytest.approx(np.sum(mae * w) / np.sum(w), rel=1e-5)
    assert res["mae"] == pytest.approx(np.mean(mae), rel=1e-5)  # unweighted metrics ignore it
    hist = model.fit(x, y, sample_weight=w, validation_data=(x, y, w), epochs=1, batch_size=20,
                     verbose=0)
    assert hist.history["val_loss"][0] == pytest.approx(
        model.evaluate(x, y, sample_weight=w, batch_size=20, verbose=0)[0], rel=1e-6)
    with pytest.raises(ValueError, match=r"sample_weight of shape \(20,\).*got shape \(19,\)"):
        model.fit(x, y, sample_weight=w[:19], verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[2\] of shape"):
        model.fit(x, y, validation_data=(x, y, w[:3]), verbose=0)


def test_class_weight_equals_the_sample_weights_it_implies(rng):
    x = rng.standard_normal((40, 5)).astype(np.float32)
    cls = rng.integers(0, 2, 40)
    y = np.eye(2, dtype=np.float32)[cls]
    table = {0: 0.3, 1: 2.0}
    a, b = regressor(), regressor()
    ha = a.fit(x, y, class_weight=table, batch_size=8, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(x, y, sample_weight=np.where(cls == 0, 0.3, 2.0), batch_size=8, epochs=2,
               shuffle=False, verbose=0)
    assert ha.history == hb.history and same(a.get_weights(), b.get_weights())
    # validation data is not class-weighted
    va = a.fit(x, y, class_weight=table, validation_split=0.25, epochs=1, verbose=0)
    assert va.history["val_loss"][0] == pytest.approx(
        a.evaluate(x[30:], y[30:], verbose=0), rel=1e-6)
    with pytest.raises(ValueError, match="keys from 0 to one less"):
        a.fit(x, y, class_weight={1: 1.0, 2: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="no weight for class 1"):
        a.fit(x, y, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="only supported for Models with a single output"):
        two_heads().fit(x[:, :5], [cls, y], class_weight=table, verbose=0)


# --- fit options ---------------------------------------------------------------------------

class EpochLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = {}

    def on_epoch_end(self, epoch, logs=None):
        self.logs[epoch] = dict(logs)


@pytest.mark.parametrize("freq, validated", [(2, [1, 3]), ([1, 4], [0, 3])])
def test_validation_freq(rng, freq, validated):
    x, y = cls_data(rng)
    cb = EpochLogs()
    classifier().fit(x, y, epochs=4, validation_data=(x, y), validation_freq=freq, verbose=0,
                     callbacks=[cb])
    assert [e for e, logs in cb.logs.items() if "val_loss" in logs] == validated
    with pytest.raises(ValueError, match="list or int"):
        classifier().fit(x, y, validation_freq="2", verbose=0)


def test_initial_epoch_steps_and_validation_steps(rng):
    x, y = cls_data(rng, 50)
    model = classifier()
    hist = model.fit(x, y, epochs=4, initial_epoch=2, batch_size=10, verbose=0)
    assert hist.epoch == [2, 3] and int(model.optimizer.iterations.numpy()) == 10
    model = classifier()
    model.fit(x, y, epochs=3, steps_per_epoch=7, batch_size=10, verbose=0)  # spans passes
    assert int(model.optimizer.iterations.numpy()) == 21
    model = classifier()
    model.fit(x, y, epochs=1, steps_per_epoch=2, verbose=0)  # batch size ceil(50 / 2)
    assert int(model.optimizer.iterations.numpy()) == 2
    cb = EpochLogs()
    model.fit(x, y, epochs=1, validation_data=(x, y), validation_steps=1, validation_batch_size=5,
              verbose=0, callbacks=[cb])
    assert cb.logs[0]["val_loss"] == pytest.approx(model.evaluate(x[:5], y[:5], verbose=0)[0],
                                                   rel=1e-6)
    with pytest.raises(ValueError, match="steps_per_epoch to be a positive integer"):
        model.fit(x, y, steps_per_epoch=0, verbose=0)


def test_shuffle_batch_permutes_within_and_between_batches(rng):
    model = classifier()
    order = data_mod.epoch_order(model, 10, "batch", batch_size=4)
    assert sorted(order) == list(range(10))
    # Rows of one batch-sized chunk stay together: blocks [0-3], [4-7], [8-9] each form one run.
    runs = [int(order[0]) // 4]
    for e in order[1:]:
        if int(e) // 4 != runs[-1]:
            runs.append(int(e) // 4)
    assert sorted(runs) == [0, 1, 2]
    assert any(not np.array_equal(data_mod.epoch_order(model, 10, "batch", 4), np.arange(10))
               for _ in range(5))
    x, y = cls_data(rng)
    model.fit(x, y, shuffle="batch", verbose=0)
    with pytest.raises(ValueError, match="bool or 'batch'"):
        model.fit(x, y, shuffle="rows", verbose=0)


def test_evaluate_and_predict_steps(rng):
    x, y = cls_data(rng, 40)
    model = classifier()
    assert model.evaluate(x, y, steps=2, batch_size=10, verbose=0) == \
        model.evaluate(x[:20], y[:20], batch_size=10, verbose=0)
    assert model.predict(x, steps=2, batch_size=10, verbose=0).shape == (20, 4)
    assert model.predict(x, steps=4, verbose=0).shape == (40, 4)


# --- generators, Sequence, PyDataset ------------------------------------------------------------

def batches(x, y, bs, w=None):
    for lo in range(0, len(x), bs):
        s = slice(lo, lo + bs)
        yield (x[s], y[s]) if w is None else (x[s], y[s], w[s])


def test_generator_equals_arrays_without_shuffle(rng):
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.standard_normal((30, 2)).astype(np.float32)
    w = rng.random(30).astype(np.float32)
    a, b = regressor(), regressor()
    ha = a.fit(batches(x, y, 8, w), epochs=1, verbose=0)
    hb = b.fit(x, y, sample_weight=w, batch_size=8, shuffle=False, verbose=0)
    assert ha.history == hb.history and same(a.get_weights(), b.get_weights())

    def forever():
        while True:
            yield from batches(x, y, 10)

    c = regressor()
    hc = c.fit(forever(), steps_per_epoch=3, epochs=2, verbose=0)
    assert len(hc.history["loss"]) == 2 and int(c.optimizer.iterations.numpy()) == 6
    assert c.evaluate(batches(x, y, 10), verbose=0) == pytest.approx(c.evaluate(x, y, verbose=0),
                                                                     rel=1e-6)
    assert np.array_equal(c.predict((xb for xb, _ in batches(x, y, 7)), verbose=0),
                          c.predict(x, batch_size=7, verbose=0))


def test_generator_that_stops_early_or_yields_bad_batches(rng):
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.standard_normal((30, 2)).astype(np.float32)
    model = regressor()
    with pytest.raises(ValueError, match=r"exhausted after 4 batches, before epoch 2 of 2"):
        model.fit(batches(x, y, 8), epochs=2, verbose=0)
    model = regressor()
    ref = regressor()
    ref.fit(batches(x, y, 8), steps_per_epoch=3, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"stopped after 4 batches, at step 2 of epoch 2.*end of "
                                         r"epoch 1"):
        model.fit(batches(x, y, 8), steps_per_epoch=3, epochs=2, verbose=0)
    # Back at the end of the last finished epoch: the partial epoch is undone.
    assert int(model.optimizer.iterations.numpy()) == 3
    assert same(model.get_weights(), ref.get_weights())
    assert same([v.numpy() for v in model.optimizer.variables],
                [v.numpy() for v in ref.optimizer.variables])
    model = regressor()
    before = model.get_weights()

    def bad():
        yield x[:8], y[:8], np.ones(8), "extra"

    with pytest.raises(ValueError, match=r"batch 0 has the wrong structure.*tuple of 4"):
        model.fit(bad(), verbose=0)

    def bad_y():
        yield x[:8], np.zeros((8, 3))

    with pytest.raises(ValueError, match=r"y in batch 0 of the generator passed as x of shape \(8, 2\)"):
        model.fit(bad_y(), verbose=0)

    def x_only():
        yield x[:8]

    with pytest.raises(ValueError, match=r"expected \(x, y\)"):
        model.fit(x_only(), verbose=0)

    def good_then_bad():
        yield x[:8], y[:8]
        yield x[8:16], y[8:16]
        yield x[16:24], y[16:20]

    with pytest.raises(ValueError, match=r"x in batch 2 of the generator passed as x has 8 samples "
                                         r"but y in batch 2 .* has 4"):
        model.fit(good_then_bad(), verbose=0)
    assert same(before, model.get_weights()) and int(model.optimizer.iterations.numpy()) == 0
    with pytest.raises(ValueError, match="`y` argument is not supported"):
        model.fit(batches(x, y, 8), y, verbose=0)
    with pytest.raises(ValueError, match="validation_split` is only supported"):
        model.fit(batches(x, y, 8), validation_split=0.2, verbose=0)


def test_unbuilt_model_is_built_from_the_first_generator_batch(rng):
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.standard_normal((30, 2)).astype(np.float32)
    seeded(0)
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=MSE())
    assert not model.built
    hist = model.fit(batches(x, y, 8), verbose=0)
    assert model.built and model.input_shape == (None, 5)
    assert int(model.optimizer.iterations.numpy()) == 4 and len(hist.history["loss"]) == 1


class Batches(keras.utils.Sequence):
    def __init__(self, x, y, bs):
        self.x, self.y, self.bs = x, y, bs
        self.ends = 0
        self.asked = []

    def __len__(self):
        return int(np.ceil(len(self.x) / self.bs))

    def __getitem__(self, i):
        self.asked.append(i)
        s = slice(i * self.bs, (i + 1) * self.bs)
        return self.x[s], self.y[s]

    def on_epoch_end(self):
        self.ends += 1


class Counted(keras.utils.PyDataset):
    def __init__(self, x, y, **kw):
        super().__init__(**kw)
        self.x, self.y = x, y
        self.begins = 0

    @property
    def num_batches(self):
        return 3

    def __getitem__(self, i):
        return self.x[i * 10:(i + 1) * 10], self.y[i * 10:(i + 1) * 10]

    def on_epoch_begin(self):
        self.begins += 1


def test_sequence_and_pydataset(rng):
    x = rng.standard_normal((30, 5)).astype(np.float32)
    y = rng.standard_normal((30, 2)).astype(np.float32)
    seq = Batches(x, y, 8)
    a, b = regressor(), regressor()
    ha = a.fit(seq, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert ha.history == hb.history and same(a.get_weights(), b.get_weights())
    assert seq.ends == 2 and seq.asked == [0, 1, 2, 3] * 2
    seq.asked = []
    regressor().fit(seq, epochs=1, verbose=0)  # shuffle=True permutes the indices
    assert sorted(seq.asked) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="steps_per_epoch=5 is more than the 4 batches"):
        a.fit(seq, steps_per_epoch=5, verbose=0)
    ds = Counted(x, y, workers=2)
    c = regressor()
    c.fit(ds, epochs=2, validation_data=Counted(x, y), verbose=0)
    assert ds.begins == 2 and len(ds) == 3 and int(c.optimizer.iterations.numpy()) == 6
    assert c.evaluate(Counted(x, y), verbose=0) == pytest.approx(c.evaluate(x, y, verbose=0))
    assert keras.utils.Sequence is fc.utils.Sequence and keras.utils.PyDataset is fc.utils.PyDataset


# --- single batches ---------------------------------------------------------------------------

def test_on_batch_methods(rng, monkeypatch):
    x, y = cls_data(rng, 32)
    a, b = classifier(), classifier()
    res = a.train_on_batch(x, y)
    assert isinstance(res, list) and len(res) == 2
    b.fit(x, y, batch_size=32, shuffle=False, verbose=0)
    assert same(a.get_weights(), b.get_weights())
    assert int(a.optimizer.iterations.numpy()) == 1
    d = a.train_on_batch(x, y, return_dict=True)
    assert list(d) == ["loss", "accuracy"]
    again = a.train_on_batch(x, y, reset_metrics=False, return_dict=True)
    single = a.test_on_batch(x, y, return_dict=True)
    assert again["loss"] != single["loss"]
    assert a.test_on_batch(x, y) == a.evaluate(x, y, batch_size=32, verbose=0)
    np.testing.assert_allclose(a.predict_on_batch(x), a.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    r = regressor()
    assert isinstance(r.test_on_batch(x[:, :5], np.zeros((32, 2))), float)


# --- regularizers and constraints ---------------------------------------------------------------

def test_regularizer_penalty_is_in_the_loss_and_its_gradient_in_the_step(rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    plain, reg = regressor(), regressor()
    reg.layers[0].kernel.regularizer = L2(0.01)
    k = reg.layers[0].kernel.numpy().astype(np.float64)
    penalty = 0.01 * np.sum(k ** 2)
    assert reg.losses == [pytest.approx(penalty, rel=1e-6)] and plain.losses == []
    assert reg.evaluate(x, y, verbose=0) == pytest.approx(plain.evaluate(x, y, verbose=0) + penalty,
                                                          rel=1e-6)
    hist = reg.fit(x, y, batch_size=10, shuffle=False, verbose=0)
    ph = plain.fit(x, y, batch_size=10, shuffle=False, verbose=0)
    assert hist.history["loss"][0] == pytest.approx(ph.history["loss"][0] + penalty, rel=1e-6)
    # SGD: the regularized kernel moved by an extra -lr * 2 * l2 * k.
    np.testing.assert_allclose(reg.layers[0].kernel.numpy() - plain.layers[0].kernel.numpy(),
                               -0.05 * 0.02 * k, rtol=1e-3, atol=1e-7)


def test_constraint_applies_after_each_update_and_disables_fusion(rng):
    x, y = cls_data(rng)
    model = classifier()
    model.layers[0].kernel.constraint = NonNeg()
    model.fit(x, y, epochs=2, verbose=0)
    assert model._trainer._fused is None
    assert model.layers[0].kernel.numpy().min() >= 0.0


def test_activity_penalty_reported_by_the_layer_is_in_the_loss(rng):
    x = rng.standard_normal((10, 5)).astype(np.float32)
    y = rng.standard_normal((10, 2)).astype(np.float32)
    seeded(0)
    model = keras.Sequential([ActivityL2Dense(8, activation="relu", input_shape=(5,)),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=MSE())
    plain = regressor()
    plain.set_weights(model.get_weights())
    h = np.maximum(x @ model.layers[0].kernel.numpy() + model.layers[0].bias.numpy(), 0)
    penalty = 0.01 * np.sum(h.astype(np.float64) ** 2) / 10
    assert model.evaluate(x, y, batch_size=10, verbose=0) == pytest.approx(
        plain.evaluate(x, y, batch_size=10, verbose=0) + penalty, rel=1e-5)
    assert model.losses == [pytest.approx(penalty, rel=1e-5)]

    class Silent(keras.layers.Layer):  # has one, but its forward_train does not report it
        activity_regularizer = L2(0.1)

    bad = keras.Sequential([Silent(input_shape=(5,)), keras.layers.Dense(2)])
    bad.compile(optimizer="sgd", loss=MSE())
    with pytest.raises(NotImplementedError, match="'.*' has an activity_regularizer"):
        bad.fit(x, y, verbose=0)


def test_regularizer_without_gradient_is_refused(rng):
    x, y = cls_data(rng)
    model = classifier()
    model.layers[0].kernel.regularizer = lambda w: 0.0
    with pytest.raises(NotImplementedError, match="add_gradient"):
        model.fit(x, y, verbose=0)


def test_unknown_fit_argument_is_a_type_error(rng):
    x, y = cls_data(rng)
    with pytest.raises(TypeError, match="unexpected keyword"):
        classifier().fit(x, y, verbose=0, epoch=3)


def test_an_output_mask_weighs_the_loss_and_metrics():
    """Ids → Embedding(mask_zero) → Dense per step: the loss is the mean over unmasked steps (the
    cross-entropy computed in NumPy), and the targets under the mask change nothing."""
    from fastckpt import keras
    rng = np.random.default_rng(3)
    x = rng.integers(1, 9, (10, 5)).astype(np.int32)
    x[:, 3:] = 0
    x[0, 1:] = 0
    y = rng.integers(0, 4, (10, 5)).astype(np.int32)
    ids = keras.Input((5,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(4)(keras.layers.Embedding(9, 3, mask_zero=True)(ids)))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["sparse_categorical_accuracy"])
    logits = model.predict(x, verbose=0).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    valid = x != 0
    got = model.evaluate(x, y, batch_size=10, verbose=0, return_dict=True)
    np.testing.assert_allclose(got["loss"], nll[valid].mean(), rtol=1e-5)
    acc = (logits.argmax(-1) == y)[valid].mean()
    np.testing.assert_allclose(got["sparse_categorical_accuracy"], acc, rtol=1e-6)
    y2 = np.where(valid, y, (y + 1) % 4).astype(np.int32)  # other targets under the mask
    before = [w.copy() for w in model.get_weights()]
    h1 = model.fit(x, y, batch_size=5, epochs=1, shuffle=False, verbose=0).history
    after1 = model.get_weights()
    model.set_weights(before)
    h2 = model.fit(x, y2, batch_size=5, epochs=1, shuffle=False, verbose=0).history
    assert h1 == h2
    for a, b in zip(after1, model.get_weights()):
        np.testing.assert_array_equal(a, b)
