"""LearningRateScheduler and ReduceLROnPlateau: the rates they set, the ``lr`` they log, and that
fit trains with them on both paths (fused native epochs and layer by layer)."""

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.callbacks import LearningRateScheduler, ReduceLROnPlateau


class _Opt:
    def __init__(self, lr):
        self.learning_rate = lr


class _Model:
    def __init__(self, lr=1.0):
        self.optimizer = _Opt(lr)
        self.stop_training = False


def _model(optimizer=None):
    model = keras.Sequential([keras.layers.Dense(8, activation="relu", input_shape=(4,)),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer or keras.optimizers.SGD(0.1),
                  loss="sparse_categorical_crossentropy")
    return model


def _data(rng, n=48):
    return rng.normal(size=(n, 4)).astype(np.float32), rng.integers(0, 3, n)


# --- LearningRateScheduler ----------------------------------------------------------------------
def test_scheduler_two_and_one_argument_forms():
    model = _Model(0.5)
    cb = LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    cb.set_model(model)
    seen = []
    for epoch in range(3):
        cb.on_epoch_begin(epoch)
        logs = {}
        cb.on_epoch_end(epoch, logs)
        seen.append(logs["lr"])
    assert seen == [0.25, 0.125, 0.0625]
    cb = LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    cb.set_model(model)
    cb.on_epoch_begin(3)
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_scheduler_refuses_non_float_output_and_prints_when_verbose(capsys):
    cb = LearningRateScheduler(lambda epoch: 1)  # an int: refused, as tf_keras does
    cb.set_model(_Model())
    with pytest.raises(ValueError, match="should be float"):
        cb.on_epoch_begin(0)
    cb = LearningRateScheduler(lambda epoch: np.float32(0.5), verbose=1)
    cb.set_model(_Model())
    cb.on_epoch_begin(1)
    assert "Epoch 2: LearningRateScheduler setting learning rate to 0.5." in capsys.readouterr().out
    with pytest.raises(TypeError, match="schedule"):
        LearningRateScheduler(0.1)


@pytest.mark.parametrize("fused", ["1", "0"])
def test_fit_uses_the_scheduled_rate_from_the_next_epoch_on(rng, monkeypatch, fused):
    """Rate 0 from epoch 1 on: the weights must stop moving. Before fit asked for the native
    trainer after on_epoch_begin, the fused path kept training at the first epoch's rate."""
    monkeypatch.setenv("FASTCKPT_FUSED", fused)
    x, y = _data(rng)
    model = _model()
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append([w.copy() for w in model.get_weights()]))
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
        LearningRateScheduler(lambda epoch, lr: 0.1 if epoch == 0 else 0.0), record])
    assert history.history["lr"] == [pytest.approx(0.1), 0.0, 0.0]
    for a, b in zip(snapshots[0], snapshots[2]):
        np.testing.assert_array_equal(a, b)


def test_fit_with_a_schedule_equals_fit_epoch_by_epoch_at_those_rates(rng):
    x, y = _data(rng)
    rates = [0.2, 0.05, 0.01]
    keras.utils.set_random_seed(1)
    a = _model(keras.optimizers.Adam(0.2))
    a.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False,
          callbacks=[LearningRateScheduler(lambda epoch: rates[epoch])])
    keras.utils.set_random_seed(1)
    b = _model(keras.optimizers.Adam(0.2))
    for epoch, lr in enumerate(rates):
        b.optimizer.learning_rate = lr
        b.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


# --- ReduceLROnPlateau --------------------------------------------------------------------------
def _run_plateau(cb, values, monitor="val_loss", lr=1.0):
    model = _Model(lr)
    cb.set_model(model)
    cb.on_train_begin()
    rates = []
    for epoch, v in enumerate(values):
        logs = {monitor: v}
        cb.on_epoch_end(epoch, logs)
        rates.append(model.optimizer.learning_rate)
        assert "lr" in logs
    return rates


def test_plateau_patience_factor_and_min_lr():
    cb = ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.2)
    rates = _run_plateau(cb, [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2]


def test_plateau_min_delta_cooldown_and_modes():
    # Improvements smaller than min_delta do not count.
    rates = _run_plateau(ReduceLROnPlateau(factor=0.1, patience=1, min_delta=0.1),
                         [1.0, 0.95, 0.5])
    assert rates == [1.0, pytest.approx(0.1), pytest.approx(0.1)]
    # Cooldown 2: tf_keras counts it down at the start of each epoch's check, so the second
    # epoch after a reduction already counts again.
    rates = _run_plateau(ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2),
                         [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert rates == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    # 'auto' maximises names containing 'acc'.
    rates = _run_plateau(ReduceLROnPlateau(monitor="val_acc", factor=0.5, patience=1),
                         [0.5, 0.6, 0.55], monitor="val_acc")
    assert rates == [1.0, 1.0, 0.5]
    rates = _run_plateau(ReduceLROnPlateau(monitor="score", mode="max", factor=0.5, patience=1),
                         [0.5, 0.6, 0.55], monitor="score")
    assert rates == [1.0, 1.0, 0.5]


def test_plateau_missing_monitor_warns_and_bad_arguments():
    cb = ReduceLROnPlateau(monitor="val_loss")
    cb.set_model(_Model())
    cb.on_train_begin()
    with pytest.warns(RuntimeWarning, match="val_loss.*Available metrics are: loss"):
        cb.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="factor >= 1.0"):
        ReduceLROnPlateau(factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        ReduceLROnPlateau(patience=-1)
    with pytest.raises(TypeError, match="unexpected"):
        ReduceLROnPlateau(bogus=1)
    with pytest.warns(DeprecationWarning):
        assert ReduceLROnPlateau(epsilon=0.5).min_delta == 0.5


def test_plateau_state_round_trips_for_backup_and_restore():
    cb = ReduceLROnPlateau(factor=0.5, patience=3, cooldown=1)
    _run_plateau(cb, [1.0, 1.0, 1.0])
    state = cb.get_training_state()
    other = ReduceLROnPlateau(factor=0.5, patience=3, cooldown=1)
    other.set_training_state(state)
    assert (other.wait, other.cooldown_counter, other.best) == (cb.wait, cb.cooldown_counter, cb.best)


def test_plateau_in_fit_reduces_and_logs_lr(rng):
    x, y = _data(rng)
    model = _model(keras.optimizers.SGD(0.0))  # no progress: a plateau from the start
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[
        ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.0, min_delta=0.0)])
    assert history.history["lr"] == [0.0, 0.0, 0.0, 0.0]  # already at min_lr: no change
    model = _model(keras.optimizers.SGD(1e-9))
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
        ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=1.0)])
    assert history.history["lr"] == pytest.approx([1e-9, 1e-9, 5e-10], rel=1e-6)
    assert model.optimizer.learning_rate == pytest.approx(2.5e-10, rel=1e-6)
