"""The Keras progress bar: exact lines under a fake clock, layout against tf.keras 2.x, bad input."""

from __future__ import annotations

import io
import re
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastckpt.utils.progbar as progbar_mod
from fastckpt.utils.progbar import Progbar, format_time_per_unit, format_value

BAR_FULL = "[" + "=" * 30 + "]"

# Lines printed by tf_keras 2.21 (captured once with real training; the tutorial's own output has the same
# shapes). The layout regexes below are checked against these and against ours.
TF_KERAS_LINES = {
    "v1_final": "32/32 [==============================] - 0s 5ms/step - loss: 2.2888 - sparse_categorical_accuracy: "
                "0.1430 - val_loss: 2.2577 - val_sparse_categorical_accuracy: 0.1580",
    "v1_running": "29/32 [==========================>...] - ETA: 0s - loss: 2.2883 - sparse_categorical_accuracy: 0.1412",
    "v2_final": "32/32 - 0s - loss: 2.2057 - sparse_categorical_accuracy: 0.1940 - val_loss: 2.1720 - "
                "val_sparse_categorical_accuracy: 0.2520 - 150ms/epoch - 5ms/step",
    "predict_v1": "32/32 [==============================] - 0s 1ms/step",
    "predict_v2": "32/32 - 0s - 45ms/epoch - 1ms/step",
}
NUM = r"-?\d+\.\d{4}(?:e[+-]\d\d)?"
METRICS = rf"(?: - [a-z_]+: {NUM})*"
TIME = r"\d+(?:s|ms|us)"
LAYOUTS = {
    "v1_final": re.compile(rf"^ *\d+/\d+ \[=+\] - \d+s {TIME}/step{METRICS}$"),
    "v1_running": re.compile(rf"^ *\d+/\d+ \[=*>?\.*\] - ETA: (?:\d+s|\d+:\d\d|\d+:\d\d:\d\d){METRICS}$"),
    "v2_final": re.compile(rf"^ *\d+/\d+ - \d+s{METRICS} - {TIME}/epoch - {TIME}/step$"),
    "predict_v1": re.compile(rf"^ *\d+/\d+ \[=+\] - \d+s {TIME}/step$"),
    "predict_v2": re.compile(rf"^ *\d+/\d+ - \d+s - {TIME}/epoch - {TIME}/step$"),
}


class FakeClock:
    """Stands in for the time module inside progbar so that timings in the output are exact."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progbar_mod, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


def run_epoch(bar: Progbar, clock: FakeClock, steps: int, dt: float, final_logs, running=None):
    for step in range(1, steps):
        clock.advance(dt)
        bar.update(step, running(step) if running else None, finalize=False)
    clock.advance(dt)
    bar.update(steps, final_logs, finalize=True)


# -- exact output ---------------------------------------------------------------------------------------

def test_verbose1_off_terminal_prints_only_the_final_line(clock):
    out = io.StringIO()
    bar = Progbar(32, stream=out, dynamic=False, stateful_metrics=["loss", "sparse_categorical_accuracy"])
    run_epoch(bar, clock, 32, 0.004, [("loss", 0.42664), ("sparse_categorical_accuracy", 0.888)],
              running=lambda s: [("loss", 1.0 / s), ("sparse_categorical_accuracy", 0.5)])
    assert out.getvalue() == (
        "32/32 [==============================] - 0s 4ms/step - loss: 0.4266 - sparse_categorical_accuracy: 0.8880\n")


def test_verbose1_on_terminal_redraws_in_place_throttled_to_interval(clock):
    out = io.StringIO()
    bar = Progbar(32, stream=out, dynamic=True, stateful_metrics=["loss"])
    run_epoch(bar, clock, 32, 0.004, [("loss", 0.5)], running=lambda s: [("loss", 1.0)])
    text = out.getvalue()
    frames = text.split("\r")[1:]
    # 31 running updates 4 ms apart with a 50 ms interval: the first, then one every 13 steps, then the final.
    assert [f.split()[0] for f in frames] == ["1/32", "14/32", "27/32", "32/32"]
    assert frames[0].startswith(" 1/32 [..............................] - ETA: 0s - loss: 1.0000")
    assert frames[-1] == "32/32 [==============================] - 0s 4ms/step - loss: 0.5000\n"
    assert text.count("\n") == 1 and "\b" not in text


def test_running_line_matches_the_tutorials_bar(clock):
    out = io.StringIO()
    bar = Progbar(32, stream=out, dynamic=True, stateful_metrics=["loss", "sparse_categorical_accuracy"])
    clock.advance(0.01)
    bar.update(23, [("loss", 1.3666), ("sparse_categorical_accuracy", 0.606)])
    # The Italian seed's line, "23/32 [====================>.........] - ETA: 0s - loss: 1.3666 - ...".
    assert out.getvalue() == ("\r23/32 [====================>.........] - ETA: 0s - loss: 1.3666 - "
                              "sparse_categorical_accuracy: 0.6060")


def test_shorter_redraw_blanks_the_rest_of_the_previous_line(clock):
    out = io.StringIO()
    bar = Progbar(10, stream=out, dynamic=True, stateful_metrics=["loss"])
    bar.update(1, [("loss", 0.5)])
    first = out.getvalue()[1:]
    clock.advance(1.0)
    bar.update(2, [("loss", 0.0)])  # '0.0000e+00' is longer; then a shorter one
    clock.advance(1.0)
    bar.update(3, [("loss", 0.25)])
    last = out.getvalue().split("\r")[-1]
    second = out.getvalue().split("\r")[2]
    assert len(second) > len(first)
    assert last.rstrip(" ").endswith("loss: 0.2500") and len(last) == len(second)


def test_verbose2_prints_one_summary_line(clock):
    out = io.StringIO()
    bar = Progbar(32, verbose=2, stream=out, stateful_metrics=["loss"])
    run_epoch(bar, clock, 32, 0.004, [("loss", 0.4061)], running=lambda s: [("loss", 9.0)])
    assert out.getvalue() == "32/32 - 0s - loss: 0.4061 - 128ms/epoch - 4ms/step\n"


def test_predict_lines_have_no_metrics(clock):
    out = io.StringIO()
    run_epoch(Progbar(32, stream=out, dynamic=False), clock, 32, 0.001, None)
    run_epoch(Progbar(32, verbose=2, stream=out), clock, 32, 0.001, None)
    assert out.getvalue().splitlines() == ["32/32 [==============================] - 0s 1ms/step",
                                           "32/32 - 0s - 32ms/epoch - 1ms/step"]


def test_first_step_is_left_out_of_the_time_per_step(clock):
    out = io.StringIO()
    bar = Progbar(3, stream=out, dynamic=False)
    clock.advance(2.0)  # a slow warm-up step
    bar.update(1)
    clock.advance(0.004)
    bar.update(2)
    clock.advance(0.004)
    bar.update(3)
    assert out.getvalue() == "3/3 [==============================] - 2s 4ms/step\n"


def test_non_stateful_values_are_averaged_weighted_by_steps(clock):
    out = io.StringIO()
    bar = Progbar(4, stream=out, dynamic=False)
    bar.update(1, [("loss", 1.0)])
    bar.update(4, [("loss", 0.0)])  # covers 3 steps: (1*1 + 0*3) / 4
    assert out.getvalue().rstrip("\n").endswith(" - loss: 0.2500")


def test_stateful_values_are_shown_as_given(clock):
    out = io.StringIO()
    bar = Progbar(2, stream=out, dynamic=False, stateful_metrics=["acc"])
    bar.update(1, [("acc", 0.2)])
    bar.update(2, [("acc", 0.9)])
    assert out.getvalue().rstrip("\n").endswith(" - acc: 0.9000")


def test_unknown_target_counts_up(clock):
    out = io.StringIO()
    bar = Progbar(None, stream=out, dynamic=True)
    clock.advance(0.6)
    bar.update(17)
    assert out.getvalue() == "\r     17/Unknown - 1s 35ms/step"
    bar.update(17, finalize=True)
    assert out.getvalue().endswith("\n")


def test_add_advances_and_default_stream_is_stdout_at_write_time(clock, capsys):
    bar = Progbar(2, dynamic=False)
    bar.add(1)
    bar.add(1, [("loss", 0.5)])
    assert capsys.readouterr().out.startswith("2/2 [==============================]")


def test_verbose0_prints_nothing(clock, capsys):
    out = io.StringIO()
    run_epoch(Progbar(5, verbose=0, stream=out), clock, 5, 0.1, [("loss", 1.0)])
    assert out.getvalue() == ""


def test_non_scalar_values_show_their_mean(clock):
    out = io.StringIO()
    Progbar(1, stream=out, dynamic=False, stateful_metrics=["v"]).update(1, [("v", [0.25, 0.75])])
    assert out.getvalue().rstrip("\n").endswith(" - v: 0.5000")


# -- formatting helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, text", [
    (0.42664, "0.4266"), (1.0, "1.0000"), (123.456789, "123.4568"), (0.0011, "0.0011"),
    (0.001, "1.0000e-03"), (5e-5, "5.0000e-05"), (0.0, "0.0000e+00"), (-0.5, "-0.5000"),
])
def test_format_value(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("seconds, text", [
    (0.0, " 0s/step"), (1.0, " 1s/step"), (2.4, " 2s/step"), (0.0042, " 4ms/step"), (0.001, " 1ms/step"),
    (0.000125, " 125us/step"), (0.9996, " 1s/step"), (0.0009996, " 1ms/step"),
    (0.0004, " 400us/step"), (0.0007, " 700us/step"), (0.9994, " 999ms/step"),
])
def test_format_time_per_unit(seconds, text):
    assert format_time_per_unit(seconds, "step") == text


@pytest.mark.parametrize("eta, text", [(0.4, "0s"), (59, "59s"), (125, "2:05"), (3725, "1:02:05")])
def test_eta_formats(eta, text):
    assert progbar_mod._format_eta(eta) == text


@settings(max_examples=200, deadline=None)
@given(target=st.integers(1, 100_000), data=st.data())
def test_bar_has_constant_width_and_an_arrow_only_mid_way(target, data):
    current = data.draw(st.integers(0, target))
    text = Progbar(target, stream=io.StringIO())._bar_text(current)
    digits = len(str(target))
    assert len(text) == 2 * digits + 1 + 1 + 32
    assert text.startswith(str(current).rjust(digits) + "/" + str(target) + " [")
    inner = text[-31:-1]
    assert re.fullmatch(r"=*>?\.*", inner)
    assert (">" in inner) == (0 < current < target and int(30 * current / target) > 0)
    assert (inner == "=" * 30) == (current == target)


# -- layout against tf.keras ----------------------------------------------------------------------------

def _drive_tf_keras_and_ours(monkeypatch, tf_keras, capsys, verbose, steps, dt, updates):
    """The same updates at the same fake times into tf_keras' Progbar and ours; their frames."""
    import tf_keras.src.utils.generic_utils as tk_utils
    fake = FakeClock()
    monkeypatch.setattr(tk_utils, "time", types.SimpleNamespace(time=fake.monotonic))
    monkeypatch.setattr(progbar_mod, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    names = sorted({k for _, values, _ in updates for k, _ in (values or [])})
    stateful = [n for n in names if n.endswith("accuracy") or n == "acc"]
    capsys.readouterr()
    ref = tf_keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=stateful)
    out = io.StringIO()
    ours = Progbar(steps, verbose=verbose, stateful_metrics=stateful, stream=out, dynamic=True)
    for step, values, finalize in updates:
        fake.advance(dt(step))
        ref.update(step, values, finalize=finalize)
        ours.update(step, values, finalize=finalize)
    theirs = capsys.readouterr().out
    # tf_keras erases a frame with backspaces and '\r'; ours with '\r' alone: the frames are the text.
    return ([f for f in theirs.replace("\b", "").split("\r") if f],
            [f for f in out.getvalue().split("\r") if f])


@pytest.mark.interop
@pytest.mark.parametrize("verbose", [1, 2])
@pytest.mark.parametrize("case", ["fit", "predict", "slow_first_step", "tiny_and_negative_values"])
def test_frames_equal_tf_keras_progbar_under_the_same_clock(monkeypatch, capsys, verbose, case):
    """Every frame our bar draws, character for character, is the one tf_keras' Progbar draws for
    the same updates at the same (fake) times: the real output of both, no hand-written lines."""
    tf_keras = pytest.importorskip("tf_keras")
    steps = 32
    if case == "fit":
        updates = [(s, [("loss", 2.3 / s), ("sparse_categorical_accuracy", s / 40)], s == steps)
                   for s in range(1, steps + 1)]
        dt = lambda s: 0.004
    elif case == "predict":
        updates = [(s, None, s == steps) for s in range(1, steps + 1)]
        # Not 1 ms: a per-step time a hair under 1 ms reads "1ms" here and "1000us" in Keras (on
        # purpose, see format_time_per_unit and test_format_time_per_unit).
        dt = lambda s: 0.002
    elif case == "slow_first_step":
        updates = [(s, [("loss", 1.0)], s == steps) for s in range(1, steps + 1)]
        dt = lambda s: 2.0 if s == 1 else 0.03
    else:
        updates = [(s, [("loss", (-1) ** s * 1e-5 * s)], s == steps) for s in range(1, steps + 1)]
        dt = lambda s: 0.2
    theirs, ours = _drive_tf_keras_and_ours(monkeypatch, tf_keras, capsys, verbose, steps, dt, updates)
    assert theirs, "tf_keras printed nothing"
    assert ours == theirs


def test_our_lines_match_tf_keras_layouts(clock):
    logs = [("loss", 2.2888), ("sparse_categorical_accuracy", 0.143), ("val_loss", 2.2577),
            ("val_sparse_categorical_accuracy", 0.158)]
    names = [k for k, _ in logs]
    ours = {}
    out = io.StringIO()
    run_epoch(Progbar(32, stream=out, dynamic=False, stateful_metrics=names), clock, 32, 0.005, logs)
    ours["v1_final"] = out.getvalue().rstrip("\n")
    out = io.StringIO()
    Progbar(32, stream=out, dynamic=True, stateful_metrics=names).update(29, logs[:2])
    ours["v1_running"] = out.getvalue().lstrip("\r")
    out = io.StringIO()
    run_epoch(Progbar(32, verbose=2, stream=out, stateful_metrics=names), clock, 32, 0.005, logs)
    ours["v2_final"] = out.getvalue().rstrip("\n")
    out = io.StringIO()
    run_epoch(Progbar(32, stream=out, dynamic=False), clock, 32, 0.001, None)
    ours["predict_v1"] = out.getvalue().rstrip("\n")
    out = io.StringIO()
    run_epoch(Progbar(32, verbose=2, stream=out), clock, 32, 0.001, None)
    ours["predict_v2"] = out.getvalue().rstrip("\n")
    for name, line in ours.items():
        assert LAYOUTS[name].match(line), (name, line)
    # Same timings and values as the recorded tf_keras lines => the same text.
    assert ours["v1_final"] == TF_KERAS_LINES["v1_final"]
    assert ours["predict_v1"] == TF_KERAS_LINES["predict_v1"]


def _skeleton(text: str) -> str:
    # Numbers and time units vary between runs; everything else must be identical.
    text = re.sub(r"\d+(?:\.\d+)?(?:e[+-]\d+)?(?:s|ms|us)?(?=/| |$)", "N", text)
    return re.sub(r"\d+(?:\.\d+)?(?:e[+-]\d+)?", "N", text)


@pytest.mark.interop
def test_same_text_as_tf_keras_progbar_for_the_same_updates(capsys):
    tf_keras = pytest.importorskip("tf_keras")
    updates = [(s, [("loss", 1.0 / s), ("acc", s / 40)]) for s in range(1, 33)]
    for verbose in (1, 2):
        ref = tf_keras.utils.Progbar(32, verbose=verbose, stateful_metrics=["acc"])
        for step, values in updates:
            ref.update(step, values)
        theirs = capsys.readouterr().out
        out = io.StringIO()
        ours = Progbar(32, verbose=verbose, stateful_metrics=["acc"], stream=out, dynamic=False)
        for step, values in updates:
            ours.update(step, values)
        # tf_keras always redraws with backspaces and '\r'; its final frame is what a reader sees.
        their_final = theirs.split("\r")[-1].rstrip("\n").replace("\b", "")
        our_final = out.getvalue().rstrip("\n")
        assert _skeleton(our_final) == _skeleton(their_final)
        # The averaged loss and the stateful acc agree to the printed digit.
        assert re.findall(r"(?:loss|acc): \S+", our_final) == re.findall(r"(?:loss|acc): \S+", their_final)


# -- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, fragment", [
    ({"target": -1}, ValueError, "target >= 0, got -1"),
    ({"target": "10"}, TypeError, "got str"),
    ({"target": 3.0}, TypeError, "got float"),
    ({"target": True}, TypeError, "got bool"),
    ({"target": 5, "width": 0}, ValueError, "width >= 1"),
    ({"target": 5, "verbose": 3}, ValueError, "0, 1 or 2, got 3"),
    ({"target": 5, "interval": -1}, ValueError, "interval"),
    ({"target": 5, "stateful_metrics": "loss"}, TypeError, "the string 'loss'"),
    ({"target": 5, "unit_name": 3}, TypeError, "unit_name"),
])
def test_bad_constructor_arguments(kwargs, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        Progbar(**kwargs)


def test_bad_update_arguments():
    bar = Progbar(5, stream=io.StringIO(), dynamic=False)
    with pytest.raises(ValueError, match="current >= 0, got -1"):
        bar.update(-1)
    with pytest.raises(TypeError, match=r"\(name, number\) pairs, got 'loss'"):
        bar.update(1, ["loss"])
    with pytest.raises(TypeError, match="progress value 'loss', got str"):
        bar.update(1, [("loss", "high")])
    with pytest.raises(ValueError, match="non-empty value for progress value 'v'"):
        bar.update(1, [("v", [])])
