"""Callbacks driven by a fake training loop: hooks, flags, History, the printed bar, EarlyStopping, CSVLogger."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastckpt.callbacks import (BackupAndRestore, Callback, CallbackList, CSVLogger, EarlyStopping, History,
                                LambdaCallback, ModelCheckpoint, ProgbarLogger, TerminateOnNaN)


class FakeModel:
    """What callbacks may touch on a model: stop_training, history, get_weights/set_weights.

    get_weights hands out the live arrays (views), as a C++-backed model might, so callbacks must copy.
    """

    def __init__(self, n: int = 3, copies: bool = False) -> None:
        self.stop_training = False
        self.copies = copies
        self.w = [np.zeros(n, np.float32), np.zeros((2, 2), np.float32)]

    def get_weights(self):
        return [w.copy() for w in self.w] if self.copies else self.w

    def set_weights(self, weights):
        assert len(weights) == len(self.w)
        for live, new in zip(self.w, weights):
            live[...] = new

    def train_one_epoch(self, value: float) -> None:
        for w in self.w:
            w[...] = value  # in place, like an optimizer step


class SavingMessage(Callback):
    """Prints what ModelCheckpoint(verbose=1) prints, to check the bar starts a new line after it."""

    def on_epoch_end(self, epoch, logs=None):
        print(f"\nEpoch {epoch + 1}: saving model to training_1/cp.ckpt")


def fake_fit(callbacks, model, epochs=2, steps=32, verbose=1, val=True, epoch_logs=None, initial_epoch=0):
    """The sequence of calls the model's fit loop makes (Keras 2 order), honouring the batch-hook flags."""
    cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                       verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    cbs.on_train_begin()
    logs = {}
    for epoch in range(initial_epoch, epochs):
        cbs.on_epoch_begin(epoch)
        if cbs.should_call_train_batch_hooks:
            for batch in range(steps):
                cbs.on_train_batch_begin(batch)
                cbs.on_train_batch_end(batch, {"loss": 1.0 / (batch + 1), "accuracy": 0.5})
        logs = dict(epoch_logs(epoch)) if epoch_logs else {"loss": 0.4266, "accuracy": 0.888}
        if val:
            cbs.on_test_begin()
            if cbs.should_call_test_batch_hooks:
                for batch in range(8):
                    cbs.on_test_batch_end(batch, {"loss": 0.5})
            cbs.on_test_end({"loss": 0.5161, "accuracy": 0.837})
            logs.update(val_loss=0.5161, val_accuracy=0.837)
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return cbs.history


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith("on_") and callable(attr):
            def record(*args, **kwargs):
                object.__getattribute__(self, "calls").append(name)
                return attr(*args, **kwargs)
            return record
        return attr


# -- Callback and the batch-hook flags ------------------------------------------------------------------

def test_base_callback_listens_to_no_batch_hook():
    cb = Callback()
    assert not any(cb.implements_batch_hooks(k) for k in ("train", "test", "predict"))
    assert cb.model is None and cb.params == {} and cb.validation_data is None


@pytest.mark.parametrize("hook, kinds", [
    ("on_batch_end", {"train"}), ("on_batch_begin", {"train"}), ("on_train_batch_end", {"train"}),
    ("on_test_batch_begin", {"test"}), ("on_predict_batch_end", {"predict"}), ("on_epoch_end", set()),
])
def test_overriding_a_hook_sets_exactly_its_kind(hook, kinds):
    cls = type("Sub", (Callback,), {hook: lambda self, *a, **k: None})
    cb = cls()
    assert {k for k in ("train", "test", "predict") if cb.implements_batch_hooks(k)} == kinds


def test_keras2_alias_receives_train_batches():
    seen = []

    class Old(Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append((batch, logs["loss"]))

    Old().on_train_batch_end(4, {"loss": 0.25})
    assert seen == [(4, 0.25)]


def test_implements_batch_hooks_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"one of \['predict', 'test', 'train'\], got 'eval'"):
        Callback().implements_batch_hooks("eval")


def test_callback_list_flags_follow_listeners():
    assert not CallbackList([Callback(), History()]).needs_batch_hooks
    cbs = CallbackList([LambdaCallback(on_batch_end=lambda b, l: None)])
    assert cbs.should_call_train_batch_hooks and not cbs.should_call_test_batch_hooks
    assert not cbs.should_call_predict_batch_hooks and cbs.needs_batch_hooks
    assert not cbs.batch_hooks_are_progress_only("train")


@pytest.mark.parametrize("verbose, dynamic, expected", [(1, True, True), (1, False, False), (2, True, False),
                                                        (0, True, False)])
def test_progbar_listens_only_when_it_redraws(verbose, dynamic, expected):
    pl = ProgbarLogger(dynamic=dynamic, stream=io.StringIO())
    cbs = CallbackList([pl], verbose=verbose, epochs=1, steps=10)
    assert cbs.should_call_train_batch_hooks is expected
    assert cbs.should_call_predict_batch_hooks is expected
    assert cbs.batch_hooks_are_progress_only("train") is expected


def test_progbar_needs_batches_to_count_an_unknown_step_count():
    cbs = CallbackList([ProgbarLogger(dynamic=False, stream=io.StringIO())], verbose=2, epochs=1, steps=None)
    assert cbs.should_call_train_batch_hooks


def test_validation_inside_fit_needs_no_test_batch_hooks():
    pl = ProgbarLogger(dynamic=True, stream=io.StringIO())
    cbs = CallbackList([pl], model=FakeModel(), verbose=1, epochs=1, steps=4)
    assert cbs.should_call_test_batch_hooks  # a standalone evaluate() draws a bar
    cbs.on_train_begin()
    assert not cbs.should_call_test_batch_hooks
    cbs.on_train_end()
    assert cbs.should_call_test_batch_hooks  # the same logger reused by evaluate() draws again


# -- CallbackList ----------------------------------------------------------------------------------------

def test_defaults_are_appended_history_then_progbar_as_in_tf_keras():
    user = Callback()
    cbs = CallbackList([user], add_history=True, add_progbar=True)
    assert [type(c) for c in cbs] == [Callback, History, ProgbarLogger]
    assert cbs.history is cbs.callbacks[1]


def test_given_history_and_progbar_are_not_duplicated():
    h, p = History(), ProgbarLogger()
    cbs = CallbackList([p, h], add_history=True, add_progbar=True)
    assert cbs.callbacks == [p, h] and cbs.history is h


def test_set_model_and_params_reach_every_callback_and_model_history():
    model = FakeModel()
    a, b = Callback(), Callback()
    cbs = CallbackList([a, b], add_history=True, model=model, verbose=0, epochs=3, steps=5)
    assert a.model is model and b.model is model and model.history is cbs.history
    assert a.params == {"verbose": 0, "epochs": 3, "steps": 5} and cbs.history.params == a.params
    late = Callback()
    cbs.append(late)
    assert late.model is model and late.params == a.params


def test_every_hook_is_forwarded_in_order():
    rec = Recorder()
    cbs = CallbackList([rec])
    cbs.on_train_begin(); cbs.on_epoch_begin(0); cbs.on_train_batch_begin(0); cbs.on_train_batch_end(0)
    cbs.on_batch_begin(1); cbs.on_batch_end(1)
    cbs.on_test_begin(); cbs.on_test_batch_begin(0); cbs.on_test_batch_end(0); cbs.on_test_end()
    cbs.on_epoch_end(0); cbs.on_train_end()
    cbs.on_predict_begin(); cbs.on_predict_batch_begin(0); cbs.on_predict_batch_end(0); cbs.on_predict_end()
    assert rec.calls == [
        "on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_batch_begin", "on_train_batch_end",
        "on_batch_end", "on_train_batch_begin", "on_batch_begin", "on_train_batch_end", "on_batch_end",
        "on_test_begin", "on_test_batch_begin", "on_test_batch_end", "on_test_end", "on_epoch_end",
        "on_train_end", "on_predict_begin", "on_predict_batch_begin", "on_predict_batch_end", "on_predict_end"]


def test_logs_dict_is_shared_so_later_callbacks_see_additions():
    class AddsLr(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["lr"] = 0.001

    model = FakeModel()
    history = fake_fit([AddsLr()], model, epochs=1, verbose=0)
    assert history.history["lr"] == [0.001]


def test_none_logs_become_an_empty_dict():
    got = []
    CallbackList([LambdaCallback(on_train_begin=got.append)]).on_train_begin()
    assert got == [{}]


@pytest.mark.parametrize("bad, fragment", [("cb", "got str"), ({"a": 1}, "got dict"), ([Callback(), 3], "int at index 1")])
def test_callback_list_rejects_non_callbacks(bad, fragment):
    with pytest.raises(TypeError, match=fragment):
        CallbackList(bad)


def test_lone_callback_is_accepted_like_keras():
    cb = Callback()
    assert CallbackList(cb).callbacks == [cb]


def test_append_and_set_params_reject_bad_input():
    with pytest.raises(TypeError, match="Callback instance, got builtin_function_or_method"):
        CallbackList().append(print)
    with pytest.raises(TypeError, match="params to be a dict, got list"):
        CallbackList().set_params([1])


# -- History ---------------------------------------------------------------------------------------------

def test_history_records_each_epoch_and_is_set_on_the_model():
    model = FakeModel()
    history = fake_fit([], model, epochs=3, verbose=0, epoch_logs=lambda e: {"loss": 1.0 / (e + 1), "accuracy": e / 4})
    assert model.history is history
    assert history.epoch == [0, 1, 2]
    assert history.history == {"loss": [1.0, 0.5, 1 / 3], "accuracy": [0.0, 0.25, 0.5],
                               "val_loss": [0.5161] * 3, "val_accuracy": [0.837] * 3}
    assert history.params == {"verbose": 0, "epochs": 3, "steps": 32}


def test_history_epochs_start_at_initial_epoch():
    history = fake_fit([], FakeModel(), epochs=4, verbose=0, initial_epoch=2)
    assert history.epoch == [2, 3] and len(history.history["loss"]) == 2


# -- what fit prints -------------------------------------------------------------------------------------

FINAL_V1 = (r"32/32 \[==============================\] - \d+s \d+(?:s|ms|us)/step - loss: 0\.4266 - "
            r"accuracy: 0\.8880 - val_loss: 0\.5161 - val_accuracy: 0\.8370")


def test_fit_verbose1_off_terminal_prints_header_message_and_final_line(capsys):
    fake_fit([SavingMessage()], FakeModel(), epochs=2, verbose=1)
    out = capsys.readouterr().out
    lines = out.split("\n")
    assert lines[0] == "Epoch 1/2" and lines[1] == "" and lines[2] == "Epoch 1: saving model to training_1/cp.ckpt"
    assert re.fullmatch(FINAL_V1, lines[3])
    assert lines[4] == "Epoch 2/2" and re.fullmatch(FINAL_V1, lines[7]) and lines[8:] == [""]
    assert "\r" not in out and "\b" not in out


def test_fit_verbose1_on_terminal_ends_the_running_line_before_the_message(capsys):
    pl = ProgbarLogger(dynamic=True)
    fake_fit([SavingMessage(), pl], FakeModel(), epochs=1, verbose=1)
    out = capsys.readouterr().out
    running, message, final = out.split("\n")[:3]
    assert running.startswith("\r 1/32 [") and "ETA: " in running  # single epoch: no "Epoch 1/1" header
    assert message == "Epoch 1: saving model to training_1/cp.ckpt"
    assert re.fullmatch("\r" + FINAL_V1, final)


def test_fit_verbose2_prints_one_line_per_epoch(capsys):
    fake_fit([], FakeModel(), epochs=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2" and len(lines) == 4
    assert re.fullmatch(r"32/32 - \d+s - loss: 0\.4266 - accuracy: 0\.8880 - val_loss: 0\.5161 - "
                        r"val_accuracy: 0\.8370 - \d+(?:s|ms|us)/epoch - \d+(?:s|ms|us)/step", lines[1])


def test_fit_verbose0_prints_nothing(capsys):
    fake_fit([], FakeModel(), epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_evaluate_and_predict_bars(capsys):
    for verbose in (1, 2):
        cbs = CallbackList(None, add_progbar=True, model=FakeModel(), verbose=verbose, epochs=1, steps=32)
        cbs.on_test_begin()
        if cbs.should_call_test_batch_hooks:
            for b in range(32):
                cbs.on_test_batch_end(b, {"loss": 0.5, "sparse_categorical_accuracy": 0.5})
        cbs.on_test_end({"loss": 0.4137, "sparse_categorical_accuracy": 0.873})
        cbs = CallbackList(None, add_progbar=True, model=FakeModel(), verbose=verbose, epochs=1, steps=32)
        cbs.on_predict_begin()
        if cbs.should_call_predict_batch_hooks:
            for b in range(32):
                cbs.on_predict_batch_end(b, {"outputs": np.zeros((32, 10))})
        cbs.on_predict_end()
    t = r"\d+(?:s|ms|us)"
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"32/32 \[=+\] - \d+s {t}/step - loss: 0\.4137 - sparse_categorical_accuracy: 0\.8730", lines[0])
    assert re.fullmatch(rf"32/32 \[=+\] - \d+s {t}/step", lines[1])
    assert re.fullmatch(rf"32/32 - \d+s - loss: 0\.4137 - sparse_categorical_accuracy: 0\.8730 - {t}/epoch - {t}/step",
                        lines[2])
    assert re.fullmatch(rf"32/32 - \d+s - {t}/epoch - {t}/step", lines[3])
    assert len(lines) == 4


def test_unknown_step_count_is_learnt_from_the_batches(capsys):
    cbs = CallbackList(None, add_progbar=True, model=FakeModel(), verbose=1, epochs=1, steps=None)
    cbs.on_predict_begin()
    assert cbs.should_call_predict_batch_hooks
    for b in range(7):
        cbs.on_predict_batch_end(b)
    cbs.on_predict_end()
    assert capsys.readouterr().out.startswith("7/7 [==============================] - ")


@pytest.mark.parametrize("params, fragment", [
    ({"verbose": 3, "epochs": 1, "steps": 1}, "0, 1, 2 or 'auto', got 3"),
    ({"verbose": 1, "epochs": 1, "steps": -2}, "None or an integer >= 0, got -2"),
])
def test_progbar_logger_rejects_bad_params(params, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        ProgbarLogger().set_params(params)


def test_progbar_logger_rejects_bad_arguments():
    with pytest.raises(ValueError, match="count_mode='steps'.*got 'samples'"):
        ProgbarLogger("samples")
    with pytest.raises(TypeError, match="the string 'loss'"):
        ProgbarLogger(stateful_metrics="loss")


# -- EarlyStopping ---------------------------------------------------------------------------------------

def run_es(es, values, model=None, key="val_loss"):
    """Feeds one monitored value per epoch; returns the epochs that ran."""
    model = model or FakeModel()
    es.set_model(model)
    model.stop_training = False
    es.on_train_begin()
    ran = []
    for epoch, v in enumerate(values):
        model.train_one_epoch(float(epoch))
        ran.append(epoch)
        es.on_epoch_end(epoch, {key: v, "loss": 1.0})
        if model.stop_training:
            break
    es.on_train_end()
    return ran


def test_patience_counts_epochs_without_improvement():
    assert run_es(EarlyStopping(patience=0), [1.0, 0.9, 0.95, 0.5]) == [0, 1, 2]
    assert run_es(EarlyStopping(patience=2), [1.0, 0.9, 0.95, 0.92, 0.5]) == [0, 1, 2, 3]
    assert run_es(EarlyStopping(patience=2), [1.0, 0.9, 0.95, 0.8, 0.85]) == [0, 1, 2, 3, 4]


def test_min_delta_ignores_small_improvements():
    assert run_es(EarlyStopping(patience=2), [1.0, 0.95, 0.92, 0.5]) == [0, 1, 2, 3]
    assert run_es(EarlyStopping(patience=2, min_delta=0.1), [1.0, 0.95, 0.92, 0.5]) == [0, 1, 2]


@pytest.mark.parametrize("monitor, maximize", [("val_loss", False), ("val_accuracy", True), ("acc", True),
                                               ("val_sparse_categorical_accuracy", True), ("auc", True),
                                               ("mae", False)])
def test_auto_mode_direction(monitor, maximize):
    assert EarlyStopping(monitor=monitor).maximize is maximize


@pytest.mark.parametrize("cls", ["EarlyStopping", "ModelCheckpoint"])
def test_unknown_mode_warns_and_falls_back_to_auto(cls, tmp_path):
    # tf.keras: both callbacks log "... mode up is unknown, fallback to auto mode." and go on.
    make = {"EarlyStopping": lambda **k: EarlyStopping(**k),
            "ModelCheckpoint": lambda **k: ModelCheckpoint(str(tmp_path / "cp"), **k)}[cls]
    with pytest.warns(UserWarning, match=f"{cls} mode 'up' is unknown, fallback to auto mode"):
        cb = make(monitor="val_accuracy", mode="up")
    assert cb.maximize is True
    with pytest.warns(UserWarning, match="unknown"):
        assert make(monitor="val_loss", mode="up").maximize is False


@pytest.mark.parametrize("monitor, es_max, mc_max", [
    ("fmeasure", False, True), ("val_accuracy", True, True), ("val_loss", False, False),
    ("acc_top5", False, True)])
def test_auto_mode_follows_tf_keras_per_callback(monitor, es_max, mc_max, tmp_path):
    # tf_keras' EarlyStopping: names ending in acc/accuracy/auc; its ModelCheckpoint: "acc" anywhere
    # or a name starting with "fmeasure". One MonitorCallback base, each class its own rule.
    assert EarlyStopping(monitor=monitor).maximize is es_max
    assert ModelCheckpoint(str(tmp_path / "cp"), monitor=monitor).maximize is mc_max


def test_max_mode_stops_when_accuracy_stalls():
    assert run_es(EarlyStopping(monitor="val_accuracy"), [0.5, 0.6, 0.55, 0.9], key="val_accuracy") == [0, 1, 2]


def test_baseline_keeps_patience_running_until_beaten():
    # An improvement that does not beat the baseline does not reset the counter (but never stops training
    # itself: only an epoch without improvement can).
    assert run_es(EarlyStopping(patience=2), [0.9, 0.95, 0.97]) == [0, 1, 2]
    assert run_es(EarlyStopping(patience=2, baseline=0.5), [0.9, 0.95, 0.97]) == [0, 1]
    assert run_es(EarlyStopping(patience=2, baseline=0.5), [0.9, 0.8, 0.7, 0.4, 0.45, 0.46]) == [0, 1, 2, 3, 4, 5]


def test_start_from_epoch_skips_warm_up():
    assert run_es(EarlyStopping(start_from_epoch=2), [1.0, 2.0, 3.0, 4.0, 3.5]) == [0, 1, 2, 3]


def test_restore_best_weights_restores_a_copy_of_the_best_epoch(capsys):
    model = FakeModel()
    es = EarlyStopping(patience=1, restore_best_weights=True, verbose=1)
    ran = run_es(es, [1.0, 0.4, 0.6, 0.7], model=model)
    assert ran == [0, 1, 2] and es.best_epoch == 1
    # FakeModel.get_weights returns live arrays that later epochs overwrite: only a copy still holds epoch 1.
    assert all(np.all(w == 1.0) for w in model.w)
    assert capsys.readouterr().out == ("Epoch 3: early stopping\n"
                                       "Restoring model weights from the end of the best epoch: 2.\n")


def test_reused_instance_resets_on_train_begin():
    es = EarlyStopping(patience=0)
    assert run_es(es, [1.0, 2.0]) == [0, 1]
    assert run_es(es, [5.0, 4.0, 3.0]) == [0, 1, 2]  # best from the first run must not carry over


def test_missing_monitor_warns_with_available_keys():
    es = EarlyStopping(monitor="val_loss")
    es.set_model(FakeModel())
    es.on_train_begin()
    with pytest.warns(RuntimeWarning, match=r"`val_loss` which is not available\. Available metrics are: loss,accuracy"):
        es.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
    assert not es.model.stop_training


@pytest.mark.parametrize("kwargs, exc, fragment", [
    ({"patience": -1}, ValueError, "patience to be an integer >= 0, got -1"),
    ({"patience": 1.5}, ValueError, "patience to be an integer"),
    ({"monitor": 3}, TypeError, "metric name"),
    ({"min_delta": "0.1"}, TypeError, "min_delta to be a number"),
    ({"baseline": "x"}, TypeError, "baseline to be None or a number"),
    ({"start_from_epoch": -3}, ValueError, "start_from_epoch"),
])
def test_early_stopping_rejects_bad_arguments(kwargs, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        EarlyStopping(**kwargs)


@pytest.mark.interop
@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.sampled_from([0.1, 0.2, 0.3, 0.35, 0.4, 0.5]), min_size=1, max_size=12),
       patience=st.integers(0, 3), min_delta=st.sampled_from([0.0, 0.05, 0.15]),
       baseline=st.sampled_from([None, 0.25]), start=st.integers(0, 2), mode=st.sampled_from(["min", "max"]))
def test_early_stopping_stops_where_tf_keras_does(values, patience, min_delta, baseline, start, mode):
    tf_keras = pytest.importorskip("tf_keras")
    kwargs = dict(monitor="val_loss", patience=patience, min_delta=min_delta, baseline=baseline,
                  start_from_epoch=start, mode=mode, restore_best_weights=True)
    ours, theirs = EarlyStopping(**kwargs), tf_keras.callbacks.EarlyStopping(**kwargs)
    results = []
    for es in (ours, theirs):
        model = FakeModel(copies=True)  # tf_keras relies on get_weights returning copies
        ran = run_es(es, values, model=model)
        results.append((ran, es.stopped_epoch, es.best_epoch, [w.copy() for w in model.w]))
    assert results[0][:3] == results[1][:3]
    assert len(results[0][3]) == len(results[1][3])
    assert all(np.array_equal(a, b) for a, b in zip(results[0][3], results[1][3]))


# -- CSVLogger -------------------------------------------------------------------------------------------

def test_csv_logger_writes_epoch_then_sorted_keys(tmp_path):
    path = tmp_path / "log.csv"
    history = fake_fit([CSVLogger(path)], FakeModel(), epochs=2, verbose=0,
                       epoch_logs=lambda e: {"loss": 0.5 / (e + 1), "accuracy": 0.75})
    assert history is not None
    raw = path.read_bytes()
    assert raw.startswith(b"epoch,accuracy,loss,val_accuracy,val_loss\r\n")  # csv's line ends, as Keras writes
    rows = list(csv.reader(io.StringIO(raw.decode())))
    assert rows[1:] == [["0", "0.75", "0.5", "0.837", "0.5161"], ["1", "0.75", "0.25", "0.837", "0.5161"]]


def test_csv_logger_adds_val_columns_and_na_when_validation_missing(tmp_path):
    path = tmp_path / "log.csv"
    fake_fit([CSVLogger(path, separator=";")], FakeModel(), epochs=1, verbose=0, val=False)
    rows = [r.split(";") for r in path.read_text().splitlines()]
    assert rows == [["epoch", "accuracy", "loss", "val_accuracy", "val_loss"], ["0", "0.888", "0.4266", "NA", "NA"]]


def test_csv_logger_append_keeps_rows_and_writes_header_once(tmp_path):
    path = tmp_path / "log.csv"
    fake_fit([CSVLogger(path)], FakeModel(), epochs=1, verbose=0)
    fake_fit([CSVLogger(path, append=True)], FakeModel(), epochs=2, initial_epoch=1, verbose=0)
    lines = path.read_text().splitlines()
    assert [l.split(",")[0] for l in lines] == ["epoch", "0", "1"]
    fake_fit([CSVLogger(path)], FakeModel(), epochs=1, verbose=0)  # append=False truncates
    assert len(path.read_text().splitlines()) == 2


def test_csv_logger_writes_vector_values_in_one_cell(tmp_path):
    path = tmp_path / "log.csv"
    logger = CSVLogger(str(path))
    logger.on_train_begin()
    logger.on_epoch_end(0, {"per_class": np.array([0.5, 0.25]), "loss": np.float32(0.5), "note": "ok"})
    logger.on_train_end()
    rows = list(csv.reader(path.open(newline="")))
    assert rows[0] == ["epoch", "loss", "note", "per_class", "val_loss", "val_note", "val_per_class"]
    assert rows[1] == ["0", "0.5", "ok", "[0.5, 0.25]", "NA", "NA", "NA"]


def test_csv_logger_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="one-character string, got ', '"):
        CSVLogger(tmp_path / "x.csv", separator=", ")
    with pytest.raises(TypeError, match="str or os.PathLike, got int"):
        CSVLogger(3)
    with pytest.raises(RuntimeError, match="on_train_begin before on_epoch_end"):
        CSVLogger(tmp_path / "x.csv").on_epoch_end(0, {"loss": 1.0})


@pytest.mark.interop
def test_csv_logger_matches_tf_keras_file(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    logs = [{"loss": 0.5, "accuracy": 0.75, "val_loss": 0.625}, {"loss": 0.25, "accuracy": 0.875}]
    texts = []
    for cls in (CSVLogger, tf_keras.callbacks.CSVLogger):
        path = tmp_path / f"{cls.__module__}.csv"
        cb = cls(str(path))
        cb.on_train_begin()
        for epoch, l in enumerate(logs):
            cb.on_epoch_end(epoch, dict(l))
        cb.on_train_end()
        texts.append(path.read_bytes())
    assert texts[0] == texts[1]


# -- LambdaCallback, TerminateOnNaN -----------------------------------------------------------------------

def test_lambda_callback_calls_each_function_at_its_hook():
    calls = []
    cb = LambdaCallback(on_epoch_begin=lambda e, l: calls.append(("eb", e)),
                        on_epoch_end=lambda e, l: calls.append(("ee", e, l["loss"])),
                        on_batch_end=lambda b, l: calls.append(("be", b)),
                        on_train_begin=lambda l: calls.append("tb"), on_train_end=lambda l: calls.append("te"),
                        on_test_end=lambda l: calls.append("test"))
    fake_fit([cb], FakeModel(), epochs=1, steps=2, verbose=0)
    assert calls == ["tb", ("eb", 0), ("be", 0), ("be", 1), "test", ("ee", 0, 0.4266), "te"]


def test_lambda_callback_rejects_unknown_hooks_and_non_callables():
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['on_epoch_middle'\]"):
        LambdaCallback(on_epoch_middle=print)
    with pytest.raises(TypeError, match="on_epoch_end to be callable or None, got int"):
        LambdaCallback(on_epoch_end=3)


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), -float("inf")])
def test_terminate_on_nan_stops_training(loss, capsys):
    model = FakeModel()
    cbs = CallbackList([TerminateOnNaN()], model=model)
    assert cbs.should_call_train_batch_hooks
    cbs.on_train_batch_end(0, {"loss": 0.5})
    assert not model.stop_training
    cbs.on_train_batch_end(1, {"loss": loss})
    assert model.stop_training
    assert capsys.readouterr().out == "Batch 1: Invalid loss, terminating training\n"


# --- the public protocol between fit, BackupAndRestore and the other callbacks ---------------------------
class _Counter(Callback):
    """A user callback with state to keep across a restart, through the public protocol only."""

    def __init__(self, fail_at=None):
        super().__init__()
        self.count, self.fail_at, self.events = 0, fail_at, []

    def on_epoch_end(self, epoch, logs=None):
        self.count += 10
        self.events.append(("end", epoch))
        if epoch == self.fail_at:
            raise KeyboardInterrupt  # a crash after this epoch's backup is the previous one

    def on_checkpoint_committed(self, epoch, logs=None):
        self.events.append(("committed", epoch))

    def get_training_state(self):
        return {"count": self.count}

    def set_training_state(self, state):
        self.count = state["count"]


def test_backup_and_restore_keeps_user_callback_state_through_the_public_protocol(tmp_path, rng):
    from fastckpt import keras
    x = rng.random((32, 4), dtype=np.float32)
    y = x[:, :2].argmax(1)
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(4,))])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    first = _Counter(fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[BackupAndRestore(str(tmp_path)), first])
    # on_checkpoint_committed follows every callback's on_epoch_end of the same epoch.
    assert first.events == [("end", 0), ("committed", 0), ("end", 1), ("committed", 1), ("end", 2)]
    second = _Counter()
    history = model.fit(x, y, epochs=5, verbose=0, callbacks=[BackupAndRestore(str(tmp_path)), second])
    assert history.epoch == [2, 3, 4]  # resumed after the last backed-up epoch (1)
    assert second.count == 20 + 30  # two epochs' count restored, three more counted


def test_callback_protocol_defaults_keep_nothing():
    cb = Callback()
    assert cb.get_training_state() is None and cb.resume_epoch() is None
    cb.set_peer_callbacks([cb])
    cb.on_checkpoint_committed(0, {})
    cbs = CallbackList([cb])
    assert cbs.resume_epoch(3) == 3
