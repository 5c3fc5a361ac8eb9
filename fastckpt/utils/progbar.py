"""Keras' text progress bar, line for line.

The layout is tf.keras 2.x's, because users compare our output with the tutorial's:

    verbose=1:  ``32/32 [==============================] - 0s 4ms/step - loss: 0.4266 - accuracy: 0.8880``
                (while running: ``23/32 [====================>.........] - ETA: 0s - loss: 1.3666``)
    verbose=2:  ``32/32 - 0s - loss: 0.4266 - accuracy: 0.8880 - 145ms/epoch - 5ms/step``

One deliberate difference: on a stream that is not a terminal (a file, a CI log) the bar prints only its
final line, instead of filling the log with carriage returns and backspaces as Keras does on POSIX.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from typing import IO, Iterable, Optional, Sequence, Tuple

import numpy as np

from fastckpt.checks import is_int, is_real

__all__ = ["Progbar", "format_time_per_unit", "format_value"]


def format_value(value: float) -> str:
    """Formats a metric as Keras does: ``%.4f``, or ``%.4e`` when ``|value| <= 1e-3`` (so 0 reads ``0.0000e+00``).

    >>> format_value(0.42664), format_value(5e-5)
    ('0.4266', '5.0000e-05')
    """
    # Keras' verbose=2 branch compares the signed value; we use |value| in both modes so a negative loss
    # reads -0.5000 rather than -5.0000e-01.
    if abs(value) > 1e-3:
        return f"{value:.4f}"
    return f"{value:.4e}"


def format_time_per_unit(seconds: float, unit_name: str) -> str:
    """Formats a duration per unit as Keras does: whole seconds, else ms, else us (``' 4ms/step'``).

    >>> format_time_per_unit(0.0042, "step"), format_time_per_unit(1.5, "epoch")
    (' 4ms/step', ' 2s/epoch')
    """
    # Units are chosen after rounding so that 0.9999 ms reads "1ms", not Keras' "1000us".
    if seconds == 0 or seconds >= 0.9995:
        return f" {seconds:.0f}s/{unit_name}"
    if seconds >= 0.0009995:
        return f" {seconds * 1e3:.0f}ms/{unit_name}"
    return f" {seconds * 1e6:.0f}us/{unit_name}"


def _format_eta(seconds: float) -> str:
    if seconds > 3600:
        return "%d:%02d:%02d" % (seconds // 3600, (seconds % 3600) // 60, seconds % 60)
    if seconds > 60:
        return "%d:%02d" % (seconds // 60, seconds % 60)
    return "%ds" % seconds


def _stream_is_interactive(stream: IO[str]) -> bool:
    # Notebooks render '\r' as an in-place update even though their streams are not TTYs.
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # closed or detached stream
        return False


def _to_scalar(name: str, value: object) -> float:
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"Expected a number (or array of numbers) for progress value {name!r}, "
            f"got {type(value).__name__}: {value!r}"
        ) from None
    # Keras shows the mean of a non-scalar metric; an empty array has no mean worth showing.
    if arr.size == 0:
        raise ValueError(f"Expected a non-empty value for progress value {name!r}, got an empty array")
    return float(arr.mean())


def _check_int(name: str, value: object, minimum: int) -> int:
    if not is_int(value):
        raise TypeError(f"Expected an integer {name} >= {minimum}, got {type(value).__name__}: {value!r}")
    if value < minimum:
        raise ValueError(f"Expected an integer {name} >= {minimum}, got {value}")
    return int(value)


class Progbar:
    """A Keras-style progress bar.

    Args:
        target: total number of steps, or ``None`` if unknown (the bar then shows ``   17/Unknown``).
        width: width of the ``[===>...]`` bar in characters.
        verbose: 0 silent, 1 a live bar (one line per epoch when not on a terminal), 2 one line at the end.
        interval: minimum seconds between two redraws of a live bar (Keras' 0.05 s, i.e. 20 Hz).
        stateful_metrics: names whose values are shown as given; any other value is averaged over the
            steps seen so far, weighted by the steps each update covers.
        unit_name: what a step is called in the timing (``4ms/step``).
        stream: where to write; ``None`` means ``sys.stdout`` at the time of each write.
        dynamic: redraw in place with ``'\\r'``; ``None`` detects a terminal or a notebook.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = Progbar(4, stream=out, dynamic=False)
        >>> for step in range(1, 5):
        ...     bar.update(step, [("loss", 1.0 / step)])
        >>> out.getvalue().startswith("4/4 [==============================] - 0s ")
        True
        >>> out.getvalue().rstrip().endswith("- loss: 0.5208")
        True
    """

    def __init__(
        self,
        target: Optional[int],
        width: int = 30,
        verbose: int = 1,
        interval: float = 0.05,
        stateful_metrics: Optional[Iterable[str]] = None,
        unit_name: str = "step",
        stream: Optional[IO[str]] = None,
        dynamic: Optional[bool] = None,
    ) -> None:
        self.target = None if target is None else _check_int("target", target, 0)
        self.width = _check_int("width", width, 1)
        if isinstance(verbose, bool) or verbose not in (0, 1, 2):
            raise ValueError(f"Expected verbose to be 0, 1 or 2, got {verbose!r}")
        self.verbose = int(verbose)
        if not is_real(interval) or not interval >= 0:
            raise ValueError(f"Expected interval to be a number of seconds >= 0, got {interval!r}")
        self.interval = float(interval)
        if isinstance(stateful_metrics, str):
            raise TypeError(f"Expected stateful_metrics to be an iterable of names, got the string {stateful_metrics!r}")
        self.stateful_metrics = set(stateful_metrics or ())
        if not isinstance(unit_name, str):
            raise TypeError(f"Expected unit_name to be a str, got {type(unit_name).__name__}")
        self.unit_name = unit_name
        self._stream = stream
        self.dynamic = _stream_is_interactive(self.stream) if dynamic is None else bool(dynamic)

        # name -> [weighted sum, weight]; insertion order is display order.
        self._values: dict = {}
        self._seen_so_far = 0
        self._start = time.monotonic()  # monotonic: a wall-clock jump must not produce a negative ETA
        self._last_update = -math.inf  # the first update always draws
        self._time_after_first_step: Optional[float] = None
        self._time_at_end: Optional[float] = None
        self._prev_width = 0  # characters of the line currently being redrawn

    @property
    def stream(self) -> IO[str]:
        # Looked up on each write so pytest's capture and contextlib.redirect_stdout see our output.
        return self._stream if self._stream is not None else sys.stdout

    def update(
        self,
        current: int,
        values: Optional[Sequence[Tuple[str, object]]] = None,
        finalize: Optional[bool] = None,
    ) -> None:
        """Records that ``current`` steps are done and redraws the bar if it is due.

        Args:
            current: steps completed so far (1-based; the bar shows ``current/target``).
            values: ``(name, value)`` pairs for the steps since the previous update.
            finalize: whether this is the last update; ``None`` means ``current >= target``.
        """
        current = _check_int("current", current, 0)
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.monotonic()
        if current == 1 and self._time_after_first_step is None:
            # Recorded even when this update is not drawn (throttled, or off a terminal).
            self._time_after_first_step = now
        self._accumulate(current, values or ())
        if self.target is not None and current == self.target:
            self._time_at_end = now
        if self.verbose == 1:
            self._draw_live(current, now, finalize)
        elif self.verbose == 2 and finalize:
            self._draw_summary(current, now)

    def add(self, n: int, values: Optional[Sequence[Tuple[str, object]]] = None) -> None:
        """Advances the bar by ``n`` steps."""
        self.update(self._seen_so_far + _check_int("n", n, 0), values)

    # -- internals ---------------------------------------------------------------------------------------

    def _accumulate(self, current: int, values: Iterable[Tuple[str, object]]) -> None:
        # An update that does not advance (e.g. a finalize repeating the last step) still counts once, so a
        # value is never divided by a zero weight.
        weight = max(current - self._seen_so_far, 1)
        for item in values:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise TypeError(f"Expected values as (name, number) pairs, got {item!r}")
            name, raw = item
            value = _to_scalar(name, raw)
            if name in self.stateful_metrics:
                self._values[name] = [value, 1]
            elif name in self._values:
                self._values[name][0] += value * weight
                self._values[name][1] += weight
            else:
                self._values[name] = [value * weight, weight]
        self._seen_so_far = current

    def _metrics_text(self) -> str:
        return "".join(f" - {name}: {format_value(total / max(count, 1))}"
                       for name, (total, count) in self._values.items())

    def _time_per_step(self, current: int, now: float) -> float:
        # The first step includes warm-up (allocation, first BLAS call), so once there is a second step
        # the estimate leaves it out, as Keras does.
        if current == 0:
            return 0.0
        if self._time_after_first_step is not None and current > 1:
            return (now - self._time_after_first_step) / (current - 1)
        return (now - self._start) / current

    def _count_width(self) -> int:
        return int(math.log10(self.target)) + 1 if self.target else 1

    def _bar_text(self, current: int) -> str:
        if self.target is None:
            return "%7d/Unknown" % current
        text = "%*d/%d [" % (self._count_width(), current, self.target)
        filled = int(self.width * (current / self.target if self.target else 1.0))
        filled = min(filled, self.width)
        if filled > 0:
            text += "=" * (filled - 1) + (">" if current < self.target else "=")
        return text + "." * (self.width - filled) + "]"

    def _draw_live(self, current: int, now: float, finalize: bool) -> None:
        if not finalize:
            # Off a terminal only the final line is worth keeping; on one, redraw at most every `interval`.
            if not self.dynamic or now - self._last_update < self.interval:
                return
        line = self._bar_text(current)
        per_step = self._time_per_step(current, now)
        if self.target is None or finalize:
            line += f" - {now - self._start:.0f}s" + format_time_per_unit(per_step, self.unit_name)
        else:
            line += " - ETA: " + _format_eta(per_step * (self.target - current))
        line += self._metrics_text()
        out = line
        if self.dynamic:
            # '\r' returns to the start of the line being redrawn (a no-op when a callback has printed a
            # message ending in a newline, so the bar then starts cleanly on a fresh line); trailing spaces
            # blank what is left of a longer previous line.
            out = "\r" + line + " " * max(self._prev_width - len(line), 0)
        self._prev_width = 0 if finalize else len(line)
        if finalize:
            out += "\n"
        self._write(out)
        self._last_update = now

    def _draw_summary(self, current: int, now: float) -> None:
        target = self.target if self.target is not None else current
        line = "%*d/%d" % (int(math.log10(target)) + 1 if target else 1, current, target)
        line += f" - {now - self._start:.0f}s" + self._metrics_text()
        end = self._time_at_end if self._time_at_end is not None else now
        elapsed = end - self._start
        line += " -" + format_time_per_unit(elapsed, "epoch")
        line += " -" + format_time_per_unit(elapsed / max(target, 1), self.unit_name)
        self._write(line + "\n")
        self._last_update = now

    def _write(self, text: str) -> None:
        stream = self.stream
        stream.write(text)
        flush = getattr(stream, "flush", None)
        if callable(flush):
            flush()
