"""The ``checkpoint`` state file: which prefix in a directory is the latest, and which are kept.

A text-format ``CheckpointState`` proto, as TensorFlow writes it, with paths relative to the
directory so that the directory can be moved. It is replaced atomically and only after the
checkpoint it names is committed, so it never points at something incomplete.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fastckpt.checkpoint import locking
from fastckpt.checkpoint.bundle import atomic_write_file, bundle_exists, read_small_file
from fastckpt.errors import CorruptCheckpointError

__all__ = ["CheckpointState", "read_state", "write_state", "latest_checkpoint", "checkpoint_exists",
           "STATE_FILENAME"]

STATE_FILENAME = "checkpoint"

MAX_STATE_BYTES = 1 << 20

_LINE = re.compile(r'^\s*([A-Za-z_]+)\s*:\s*(?:"((?:[^"\\]|\\.)*)"|([-+0-9.eE]+|inf|nan))\s*$')
_UNESCAPE = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}

# What this process last wrote to each state file: (bytes, fsynced, (dev, ino, size, mtime_ns)).
# ModelCheckpoint saving to one prefix every epoch rewrites identical bytes; skipping that write
# saves an atomic replace (two fsyncs) per save.
_written: Dict[str, Tuple[bytes, bool, Tuple[int, int, int, int]]] = {}
_written_lock = threading.Lock()


def _stat_key(path: str) -> Optional[Tuple[int, int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass
class CheckpointState:
    model_checkpoint_path: str = ""
    all_model_checkpoint_paths: List[str] = field(default_factory=list)
    all_model_checkpoint_timestamps: List[float] = field(default_factory=list)
    last_preserved_timestamp: float = 0.0


def _escape(s: str) -> str:
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20:
            out.append("\\%03o" % ord(ch))
        elif "\udc80" <= ch <= "\udcff":  # a byte of a non-UTF-8 name, as os.listdir gives it
            out.append("\\%03o" % (ord(ch) - 0xdc00))
        else:
            out.append(ch)
    return "".join(out)


_SIMPLE_ESCAPES = {"n": 0x0A, "t": 0x09, "r": 0x0D, '"': 0x22, "'": 0x27, "\\": 0x5C, "a": 0x07,
                   "b": 0x08, "f": 0x0C, "v": 0x0B, "?": 0x3F}
_OCTAL = re.compile(r"[0-7]{1,3}")
_HEX = re.compile(r"[0-9A-Fa-f]{1,2}")


def _unescape(s: str, path: str, line: int) -> str:
    """A text-format string's C escapes (\\n, \\ooo, \\xHH ...) denote bytes, the rest is UTF-8;
    the bytes are decoded as the file system's names are (bytes that are not UTF-8 become
    surrogate escapes). Anything else is a ``CorruptCheckpointError`` naming the file."""
    out, i = bytearray(), 0
    while i < len(s):
        ch = s[i]
        if ch != "\\":
            j = s.find("\\", i)
            j = len(s) if j < 0 else j
            out += s[i:j].encode("utf-8", "surrogatepass")
            i = j
            continue
        nxt = s[i + 1] if i + 1 < len(s) else ""
        if nxt in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[nxt])
            i += 2
        elif nxt and nxt in "01234567" and (m := _OCTAL.match(s, i + 1)) and int(m.group(0), 8) < 256:
            out.append(int(m.group(0), 8))
            i = m.end()
        elif nxt in ("x", "X") and (m := _HEX.match(s, i + 2)):
            out.append(int(m.group(0), 16))
            i = m.end()
        else:
            bad = s[i:i + 4]
            raise CorruptCheckpointError(
                f"{path}: line {line}: bad escape sequence {bad!r} in a string (expected \\n, \\t, "
                f"\\r, \\\\, \\\", \\', an octal \\ooo below \\400 or a hex \\xHH)", path=path)
    text = out.decode("utf-8", "surrogateescape")
    if "\x00" in text:
        raise CorruptCheckpointError(f"{path}: line {line}: a checkpoint path holds a NUL byte: {text!r}",
                                     path=path)
    return text


def _number(value: str, key: str, path: str, line: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise CorruptCheckpointError(f"{path}: line {line}: {key} must be a number, got {value!r}",
                                     path=path) from None


def format_state(state: CheckpointState) -> str:
    lines = [f'model_checkpoint_path: "{_escape(state.model_checkpoint_path)}"']
    lines += [f'all_model_checkpoint_paths: "{_escape(p)}"' for p in state.all_model_checkpoint_paths]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in state.all_model_checkpoint_timestamps]
    if state.last_preserved_timestamp:
        lines.append(f"last_preserved_timestamp: {state.last_preserved_timestamp!r}")
    return "\n".join(lines) + "\n"


def parse_state(text: str, path: str = STATE_FILENAME) -> CheckpointState:
    state = CheckpointState()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise CorruptCheckpointError(f"{path}: line {n} is not 'key: value': {line[:80]!r}", path=path)
        key, sval, nval = m.group(1), m.group(2), m.group(3)
        if key == "model_checkpoint_path" and sval is not None:
            state.model_checkpoint_path = _unescape(sval, path, n)
        elif key == "all_model_checkpoint_paths" and sval is not None:
            state.all_model_checkpoint_paths.append(_unescape(sval, path, n))
        elif key == "all_model_checkpoint_timestamps" and nval is not None:
            state.all_model_checkpoint_timestamps.append(_number(nval, key, path, n))
        elif key == "last_preserved_timestamp" and nval is not None:
            state.last_preserved_timestamp = _number(nval, key, path, n)
        # Unknown fields are ignored, as a proto parser would keep them as unknown.
    return state


def read_state(directory: str, latest_filename: Optional[str] = None) -> Optional[CheckpointState]:
    path = os.path.join(directory, latest_filename or STATE_FILENAME)
    try:
        data = read_small_file(path, MAX_STATE_BYTES)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if len(data) > MAX_STATE_BYTES:
        raise CorruptCheckpointError(f"{path}: state file larger than {MAX_STATE_BYTES} bytes", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptCheckpointError(f"{path}: not UTF-8 text ({e})", path=path) from None
    return parse_state(text, path)


def _relative(directory: str, prefix: str) -> str:
    """Prefixes inside ``directory`` are stored relative to it (TensorFlow's save_relative_paths)."""
    if not os.path.isabs(prefix):
        rel = os.path.relpath(os.path.abspath(prefix), os.path.abspath(directory))
        return rel if not rel.startswith("..") else prefix
    rel = os.path.relpath(prefix, os.path.abspath(directory))
    return rel if not rel.startswith("..") else prefix


def write_state(directory: str, model_checkpoint_path: str, all_paths: Optional[List[str]] = None,
                timestamps: Optional[List[float]] = None, last_preserved_timestamp: Optional[float] = None,
                fsync: bool = True) -> None:
    """Atomically replace ``directory/checkpoint``. Without timestamps the file is the two lines
    tf.keras' ``save_weights`` writes; ``CheckpointManager`` passes them. Runs under the
    directory's writer lock, and removes the temps (``checkpoint.tmp-<16 hex>``) that killed
    writes of the state file left before it writes its own."""
    all_paths = list(all_paths) if all_paths is not None else [model_checkpoint_path]
    state = CheckpointState(
        model_checkpoint_path=_relative(directory, model_checkpoint_path),
        all_model_checkpoint_paths=[_relative(directory, p) for p in all_paths],
        all_model_checkpoint_timestamps=list(timestamps or []),
        last_preserved_timestamp=last_preserved_timestamp or 0.0,
    )
    path = os.path.abspath(os.path.join(directory or ".", STATE_FILENAME))
    data = format_state(state).encode("utf-8")
    with locking.writer_lock(path), _written_lock:
        last = _written.get(path)
        # Unchanged since this process wrote these bytes (as durably as now asked): nothing to do.
        if last is not None and last[0] == data and (last[1] or not fsync) and _stat_key(path) == last[2]:
            return
        locking.sweep_temps(path)  # with the lock held, every temp of the state file is dead
        atomic_write_file(path, data, fsync=fsync)
        key = _stat_key(path)
        if key is None:
            _written.pop(path, None)
        else:
            _written[path] = (data, fsync, key)


def resolve(directory: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(directory, path)


def checkpoint_exists(prefix: str) -> bool:
    """A V2 checkpoint is complete when its ``.index`` is in place (it is committed last)."""
    return bundle_exists(prefix)


def latest_checkpoint(checkpoint_dir: str, latest_filename: Optional[str] = None) -> Optional[str]:
    """The newest complete checkpoint prefix in ``checkpoint_dir``, or ``None`` (TensorFlow's rules)."""
    state = read_state(checkpoint_dir, latest_filename)
    if state is None or not state.model_checkpoint_path:
        return None
    prefix = resolve(checkpoint_dir, state.model_checkpoint_path)
    return prefix if checkpoint_exists(prefix) else None
