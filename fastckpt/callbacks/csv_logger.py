"""``CSVLogger``: one CSV row per epoch."""

from __future__ import annotations

import csv
import os
from typing import IO, Any, List, Optional, Union

import numpy as np

from fastckpt.callbacks.callback import Callback, Logs

__all__ = ["CSVLogger"]


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        return value
    arr = np.asarray(value)
    if arr.ndim == 0:
        return value  # csv writes str(value): numpy's short repr for float32 ('0.4266'), like print would
    # A vector metric (per-class values) goes in one cell, like Keras' "[a, b, c]".
    return "[" + ", ".join(str(v) for v in arr.ravel().tolist()) + "]"


class CSVLogger(Callback):
    """Writes each epoch's logs to a CSV file: column ``epoch`` first, then the log keys sorted.

    The columns are fixed by the first epoch. As in Keras, if that epoch has no ``val_*`` keys, a
    ``val_`` column is added for each key anyway (validation may run only every few epochs); a key
    missing from a row is written as ``NA``. The file is flushed after every epoch, so a crash loses at
    most the epoch in progress.

    Args:
        filename: path of the CSV file.
        separator: a one-character delimiter.
        append: keep the existing file and add rows (the header is written only if the file is empty).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "log.csv")
        >>> logger = CSVLogger(path)
        >>> logger.on_train_begin()
        >>> logger.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.75})
        >>> logger.on_train_end()
        >>> print(open(path).read().strip())
        epoch,loss,val_loss
        0,0.5,0.75
    """

    _chief_only = True  # one log per job, written by rank 0 under data parallelism

    def __init__(self, filename: Union[str, "os.PathLike[str]"], separator: str = ",", append: bool = False) -> None:
        super().__init__()
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"Expected filename to be a str or os.PathLike, got {type(filename).__name__}")
        if not isinstance(separator, str) or len(separator) != 1:
            raise ValueError(f"Expected separator to be a one-character string, got {separator!r}")
        self.filename = os.fspath(filename)
        self.sep = separator
        self.append = bool(append)
        self.keys: Optional[List[str]] = None
        self._file: Optional[IO[str]] = None
        self._writer: Any = None
        self._write_header = True

    def on_train_begin(self, logs: Logs = None) -> None:
        self._close()
        self.keys = None
        if self.append and os.path.exists(self.filename):
            with open(self.filename, "r", newline="") as f:
                self._write_header = not f.readline()
        else:
            self._write_header = True
        self._file = open(self.filename, "a" if self.append else "w", newline="")

    def on_epoch_end(self, epoch: int, logs: Logs = None) -> None:
        if self._file is None:
            raise RuntimeError(
                f"Expected on_train_begin before on_epoch_end: CSVLogger({self.filename!r}) has no open file"
            )
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if not any(k.startswith("val_") for k in self.keys):
                self.keys += ["val_" + k for k in self.keys]
        if self._writer is None:
            # The csv module's default '\r\n' line ends, as Keras writes them.
            self._writer = csv.writer(self._file, delimiter=self.sep)
            if self._write_header:
                self._writer.writerow(["epoch"] + self.keys)
        self._writer.writerow([epoch] + [_cell(logs[k]) if k in logs else "NA" for k in self.keys])
        self._file.flush()

    def on_train_end(self, logs: Logs = None) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None
        self._writer = None
