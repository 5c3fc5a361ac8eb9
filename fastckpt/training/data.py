"""Input preparation and batching for the training loop: argument checks, ``x``/``y``/
``sample_weight`` (arrays, lists, dicts) to checked arrays in the model's input/output order,
class weights, the validation split, the per-pass shuffle order, and the batch sources (arrays,
Python generators, ``keras.utils.Sequence``).

Everything a ``fit``/``evaluate`` call is given as arrays is checked here once, before the first
step, so that bad data raises before any weight changes. Batches from generators and sequences
are checked one by one, before the step that would use them.
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence as Seq, Tuple

import numpy as np

from fastckpt import backend
from fastckpt.checks import is_int
from fastckpt.utils.data_adapter import PyDataset, Sequence
from fastckpt.variables import aligned_empty

__all__ = ["check_batch_size", "reject_unknown", "verbosity", "input_names", "output_names",
           "input_shapes", "output_shapes", "prepare_inputs", "model_inputs", "prepare_targets",
           "prepare_sample_weights", "apply_class_weight", "ArrayData", "IterData",
           "epoch_order", "is_iterable_source", "split_validation", "unpack_batch",
           "n_samples"]

_INT_KINDS = ("i", "u")


def check_batch_size(batch_size) -> int:
    if batch_size is None:
        return 32
    if not is_int(batch_size):
        raise TypeError(f"Expected an integer batch_size, got {batch_size!r}")
    if batch_size <= 0:
        raise ValueError(f"Expected batch_size > 0, got {batch_size}")
    return int(batch_size)


def check_steps(value, what: str) -> Optional[int]:
    if value is None:
        return None
    if not is_int(value) or value <= 0:
        raise ValueError(f"Expected {what} to be a positive integer or None, got {value!r}")
    return int(value)


def reject_unknown(what: str, kwargs: dict) -> None:
    """Keras' data-pipeline knobs do nothing here and are accepted; anything else is a typo."""
    for k in ("max_queue_size", "workers", "use_multiprocessing"):
        kwargs.pop(k, None)
    if kwargs:
        raise TypeError(f"{what}: unexpected keyword argument(s) {sorted(kwargs)}")


def verbosity(verbose) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"Expected verbose in 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


# --- the model's inputs and outputs ----------------------------------------------------------

def input_names(model) -> List[str]:
    names = list(model.input_names)
    return names or ["input_1"]


def output_names(model) -> List[str]:
    names = list(model.output_names)
    return names or ["output_1"]


def input_shapes(model) -> List[tuple]:
    shape = model.input_shape
    return [tuple(s) for s in shape] if len(input_names(model)) > 1 else [tuple(shape)]


def output_shapes(model) -> List[tuple]:
    shape = model.output_shape
    return [tuple(s) for s in shape] if len(output_names(model)) > 1 else [tuple(shape)]


def _input_dtypes(model, n: int) -> List[Optional[str]]:
    """Declared dtypes of the model's inputs (``keras.Input(dtype=...)``), None if unknown."""
    try:
        inputs = getattr(model, "inputs", None)
    except (AttributeError, ValueError):
        inputs = None
    if isinstance(inputs, (list, tuple)) and len(inputs) == n:
        return [getattr(t, "dtype", None) for t in inputs]
    layer = getattr(model, "_input_layer", None)
    if n == 1 and layer is not None:
        return [getattr(layer, "dtype", None)]
    return [None] * n


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float, bool, str, bytes, np.generic)) or (
        isinstance(v, np.ndarray) and v.ndim == 0)


def _is_nested_scalars(v) -> bool:
    """A (nested) Python list of numbers: one array, as Keras reads it."""
    if _is_scalar(v):
        return True
    return isinstance(v, (list, tuple)) and (len(v) == 0 or _is_nested_scalars(v[0]))


def flatten(value, names: List[str], what: str, kind: str, broadcast: bool) -> List[Any]:
    """``value`` (one array, a list or a dict) as a list in ``names`` order. Inputs must all be
    given; a missing output (target, weight) is None; one array for several outputs applies to
    each (``broadcast``), as tf.keras conforms targets and sample weights."""
    n = len(names)
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what}: unknown {kind} name(s) {unknown}; the model's {kind}s are "
                             f"{names}")
        missing = [k for k in names if k not in value]
        if missing and kind == "input":
            raise ValueError(f"{what}: no data for input(s) {missing}; the model expects inputs "
                             f"{names}")
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)) and not _is_nested_scalars(value):
        if len(value) != n:
            raise ValueError(f"{what}: the model expects {n} {kind}(s) {names}, got a list of "
                             f"{len(value)} arrays")
        return list(value)
    if n != 1 and not broadcast:
        raise ValueError(f"{what}: the model expects {n} {kind}s {names} (a list or a dict keyed "
                         f"by name), got a single array")
    return [value] * n


def _numeric(value, what: str, kind: str = "numeric") -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"Expected {what} to be a {kind} array, got dtype {arr.dtype}")
    return arr


def _sub(base: str, names: List[str], k: int) -> str:
    return base if len(names) == 1 else f"{base}[{names[k]!r}]"


def prepare_inputs(model, x, what: str = "x", build: bool = False) -> List[np.ndarray]:
    """``x`` as one checked array per model input: float32 C-contiguous (zero-copy when it
    already is), integer arrays kept as they are for an input declared with an integer dtype.
    With ``build``, an unbuilt model is built from the data's shapes first."""
    if x is None:
        raise ValueError(f"Expected input data {what}, got None")
    names = input_names(model)
    parts = flatten(x, names, what, "input", broadcast=False)
    arrays = []
    for k, v in enumerate(parts):
        sub = _sub(what, names, k)
        arr = _numeric(v, sub)
        if arr.ndim < 1:
            raise ValueError(f"Expected {sub} of rank >= 1 (samples first), got a scalar")
        arrays.append(arr)
    if build and not model.built:
        shapes = [(None,) + a.shape[1:] for a in arrays]
        for sub, a in zip((_sub(what, names, k) for k in range(len(arrays))), arrays):
            if a.ndim < 2:
                raise ValueError(f"Expected {sub} of rank >= 2 (samples, features...), got shape "
                                 f"{a.shape}")
        model._ensure_built(shapes[0] if len(shapes) == 1 else shapes)
    dtypes = _input_dtypes(model, len(arrays))
    out = []
    want_shapes = input_shapes(model) if model.built else [None] * len(arrays)
    for k, (arr, want, dtype) in enumerate(zip(arrays, want_shapes, dtypes)):
        sub = _sub(what, names, k)
        if want is None:
            if arr.ndim < 2:
                raise ValueError(f"Expected {sub} of rank >= 2 (samples, features...), got shape "
                                 f"{arr.shape}")
        else:
            if arr.ndim != len(want):
                raise ValueError(f"Model {model.name!r} expects input {names[k]!r} of rank "
                                 f"{len(want)} (shape {want}), got {sub} of shape {arr.shape}")
            for got, exp in zip(arr.shape[1:], want[1:]):
                if exp is not None and got != exp:
                    raise ValueError(f"Model {model.name!r} expects {sub} with shape "
                                     f"{tuple(want)}, got {arr.shape}: feature count {got} != "
                                     f"{exp}")
        if dtype is not None and np.dtype(dtype).kind in _INT_KINDS and arr.dtype.kind in _INT_KINDS:
            out.append(np.ascontiguousarray(arr))
        else:
            out.append(np.ascontiguousarray(arr, dtype=np.float32))
    n = out[0].shape[0]
    for k, a in enumerate(out[1:], 1):
        if a.shape[0] != n:
            raise ValueError(f"Data cardinality is ambiguous: {_sub(what, names, 0)} has {n} "
                             f"samples but {_sub(what, names, k)} has {a.shape[0]} samples. Make "
                             f"sure all arrays contain the same number of samples.")
    return out


def model_inputs(model, x, what: str = "x") -> np.ndarray:
    """Checked float32 input of a single-input model; an unbuilt model is built from its shape
    first (``Model.__call__``)."""
    return prepare_inputs(model, x, what, build=True)[0]


def prepare_targets(model, y, n: int, what: str = "y", x_what: str = "x",
                    optional: bool = False) -> Tuple[List[Optional[np.ndarray]], List[Any]]:
    """``(prepared, raw)``: per output, the targets as the output's loss takes them (checked
    once here, labels range-checked) or None where no target is given; ``raw`` keeps the given
    arrays (for class weights)."""
    names = output_names(model)
    if y is None:
        if optional:
            return [None] * len(names), [None] * len(names)
        raise ValueError(f"Expected targets {what}, got None")
    parts = flatten(y, names, what, "output", broadcast=True)
    losses = model._output_losses
    shapes = output_shapes(model)
    prepared, raw = [], []
    for k, v in enumerate(parts):
        if v is None:
            prepared.append(None)
            raw.append(None)
            continue
        sub = _sub(what, names, k)
        arr = _numeric(v, sub, "numeric (targets)")
        if arr.shape[:1] != (n,):
            got = f"{arr.shape[0]} samples" if arr.ndim else "no samples"
            raise ValueError(f"Data cardinality is ambiguous: {x_what} has {n} samples but {sub} "
                             f"has {got}. Make sure all arrays contain the same number of "
                             f"samples.")
        loss = losses[k] if k < len(losses) else None
        prepared.append(loss._prepare_targets(arr, n, shapes[k], sub) if loss is not None
                        else np.ascontiguousarray(arr))
        raw.append(arr)
    return prepared, raw


def prepare_sample_weights(model, sample_weight, n: int, what: str = "sample_weight",
                           x_what: str = "x") -> List[Optional[np.ndarray]]:
    """Per output, float32 weights of shape ``(n,)`` (``(n, 1)`` accepted) or None."""
    names = output_names(model)
    if sample_weight is None:
        return [None] * len(names)
    parts = flatten(sample_weight, names, what, "output", broadcast=True)
    out = []
    for k, v in enumerate(parts):
        if v is None:
            out.append(None)
            continue
        sub = _sub(what, names, k)
        arr = _numeric(v, sub)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"Expected {sub} of shape ({n},) (one weight per sample of {x_what}), "
                             f"got shape {arr.shape}")
        w = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.all(np.isfinite(w)):
            i = int(np.flatnonzero(~np.isfinite(w))[0])
            raise ValueError(f"Expected finite values in {sub}, got {w[i]} at index {i}")
        out.append(w)
    return out


def check_class_weight(model, class_weight) -> Optional[np.ndarray]:
    """``class_weight`` as a float32 table indexed by class, as tf.keras checks it."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"Expected class_weight to be a dict {{class index: weight}}, got "
                        f"{type(class_weight).__name__}")
    if len(output_names(model)) > 1:
        raise ValueError("`class_weight` is only supported for Models with a single output.")
    try:
        ids = sorted(int(k) for k in class_weight)
    except (TypeError, ValueError):
        raise ValueError(f"Expected class_weight keys to be class indices, got "
                         f"{list(class_weight)}") from None
    if ids != list(range(len(ids))) or any(not is_int(k) for k in class_weight):
        raise ValueError(f"Expected `class_weight` to be a dict with keys from 0 to one less than "
                         f"the number of classes, found {class_weight}")
    table = np.asarray([float(class_weight[k]) for k in sorted(class_weight)], np.float32)
    return table


def apply_class_weight(table: Optional[np.ndarray], raw_y, sw: Optional[np.ndarray],
                       what: str = "y") -> Optional[np.ndarray]:
    """``sample_weight * class_weight[class of each row]`` (tf.keras: argmax of one-hot rows,
    rounded sparse labels)."""
    if table is None or raw_y is None:
        return sw
    y = np.asarray(raw_y)
    if y.ndim == 2 and y.shape[1] > 1:
        cls = np.argmax(y, axis=1)
    elif y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
        flat = y.reshape(-1).astype(np.float64)
        if not np.all(np.isfinite(flat)):
            i = int(np.flatnonzero(~np.isfinite(flat))[0])
            raise ValueError(f"class_weight: {what} holds the non-finite label {flat[i]} at "
                             f"index {i}")
        cls = np.round(flat).astype(np.int64)
    else:
        raise ValueError(f"class_weight: expected {what} of shape (n,), (n, 1) or (n, classes), "
                         f"got {y.shape}")
    bad = np.flatnonzero((cls < 0) | (cls >= table.shape[0]))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"class_weight has no weight for class {int(cls[i])} (index {i} of "
                         f"{what}); it covers classes 0..{table.shape[0] - 1}")
    cw = table[cls]
    return cw if sw is None else np.ascontiguousarray(sw * cw, dtype=np.float32)


# --- sources of batches -----------------------------------------------------------------------

def is_iterable_source(x) -> bool:
    """A ``Sequence``/``PyDataset`` or an iterator/generator (not an array, list or dict)."""
    if isinstance(x, Sequence):
        return True
    if isinstance(x, (np.ndarray, list, tuple, dict, str, bytes)) or x is None:
        return False
    return hasattr(x, "__next__")


def n_samples(xs: List[np.ndarray]) -> int:
    return int(xs[0].shape[0])


class ArrayData:
    """Arrays in memory: inputs, per-output targets and sample weights (None where absent)."""

    def __init__(self, xs, ys, sws, raw0=None):
        self.xs: List[np.ndarray] = xs
        self.ys: List[Optional[np.ndarray]] = ys
        self.sws: List[Optional[np.ndarray]] = sws
        self.raw0 = raw0  # the first output's targets as given (for class weights)
        self.n = n_samples(xs)
        self._bufs = {}

    def split(self, at: int) -> Tuple["ArrayData", "ArrayData"]:
        cut = lambda arrs, s: [None if a is None else a[s] for a in arrs]  # noqa: E731
        head = slice(None, at)
        tail = slice(at, None)
        raw = self.raw0
        return (ArrayData(cut(self.xs, head), cut(self.ys, head), cut(self.sws, head),
                          None if raw is None else raw[head]),
                ArrayData(cut(self.xs, tail), cut(self.ys, tail), cut(self.sws, tail),
                          None if raw is None else raw[tail]))

    def _take(self, key, a, idx, m):
        buf = self._bufs.get(key)
        if buf is None or buf.shape[0] < m or buf.shape[1:] != a.shape[1:] or buf.dtype != a.dtype:
            buf = aligned_empty((m,) + a.shape[1:], a.dtype)
            self._bufs[key] = buf
        return np.take(a, idx, axis=0, out=buf[:m])

    def batch(self, order: Optional[np.ndarray], lo: int, hi: int):
        """Rows ``lo:hi`` of a pass: views in order, or gathered into reusable buffers."""
        if order is None:
            s = slice(lo, hi)
            return ([a[s] for a in self.xs], [None if a is None else a[s] for a in self.ys],
                    [None if a is None else a[s] for a in self.sws])
        idx = order[lo:hi]
        m = hi - lo
        return ([self._take(("x", i), a, idx, m) for i, a in enumerate(self.xs)],
                [None if a is None else self._take(("y", i), a, idx, m)
                 for i, a in enumerate(self.ys)],
                [None if a is None else self._take(("w", i), a, idx, m)
                 for i, a in enumerate(self.sws)])


def split_validation(data: ArrayData, validation_split: float) -> Tuple[ArrayData, ArrayData]:
    """tf.keras' ``validation_split``: the last fraction of the samples, before any shuffle."""
    n = data.n
    at = int(math.floor(n * (1.0 - float(validation_split))))
    if at == 0 or at == n:
        raise ValueError(f"Training data contains {n} samples, which is not sufficient to split "
                         f"it into a validation and training set as specified by "
                         f"`validation_split={validation_split}`. Either provide more data, or a "
                         f"different value for the `validation_split` argument.")
    return data.split(at)


def unpack_batch(item, what: str, index: int, need_y: bool):
    """``(x, y, sample_weight)`` from one generator/Sequence item."""
    if isinstance(item, tuple):
        if len(item) == 1:
            x, y, sw = item[0], None, None
        elif len(item) == 2:
            x, y, sw = item[0], item[1], None
        elif len(item) == 3:
            x, y, sw = item
        else:
            raise ValueError(f"{what}: batch {index} has the wrong structure: expected x, (x, y) or "
                             f"(x, y, sample_weight), got a tuple of {len(item)} items")
    else:
        x, y, sw = item, None, None
    if need_y and y is None:
        raise ValueError(f"{what}: batch {index} has the wrong structure: expected (x, y) or "
                         f"(x, y, sample_weight), got {type(item).__name__}"
                         + (f" of {len(item)}" if isinstance(item, tuple) else ""))
    return x, y, sw


class IterData:
    """Batches from a Python iterator/generator or a ``Sequence``, fetched one at a time."""

    def __init__(self, source, what: str = "x"):
        self.source = source
        self.what = what
        self.is_sequence = isinstance(source, Sequence)
        self._iter = None if self.is_sequence else iter(source)
        self.exhausted = False
        self.pulled = 0

    def __len__(self) -> int:
        n = len(self.source)
        if not is_int(n) or n < 0:
            raise TypeError(f"{self.what}: len() of the {type(self.source).__name__} must be a "
                            f"non-negative integer, got {n!r}")
        return int(n)

    def describe(self) -> str:
        return f"the {type(self.source).__name__} passed as {self.what}"

    def epoch_begin(self) -> None:
        if isinstance(self.source, PyDataset):
            self.source.on_epoch_begin()

    def epoch_end(self) -> None:
        if self.is_sequence:
            self.source.on_epoch_end()

    def get(self, index: int):
        """Item ``index`` of a Sequence, or the next item of an iterator (``StopIteration``
        when it ends)."""
        if self.is_sequence:
            return self.source[int(index)]
        try:
            item = next(self._iter)
        except StopIteration:
            self.exhausted = True
            raise
        self.pulled += 1
        return item


def epoch_order(model, n: int, shuffle, batch_size: Optional[int] = None) -> Optional[np.ndarray]:
    """This pass's sample order, or ``None`` for the given order. The state (seed, passes
    drawn) is the model's, saved with it so that a resumed run draws the same orders.
    ``shuffle='batch'`` permutes batch-sized chunks and the rows inside each (tf.keras)."""
    if not shuffle:
        return None
    if model._shuffle_seed is None:
        model._shuffle_seed = backend.next_seed()
    # One generator per pass from (seed, pass index): resuming needs only these two ints.
    rng = np.random.default_rng([model._shuffle_seed, model._shuffle_epochs_drawn])
    model._shuffle_epochs_drawn += 1
    if isinstance(shuffle, str) and shuffle.lower() == "batch" and batch_size:
        starts = np.arange(0, n, batch_size)
        chunks = [np.arange(s, min(n, s + batch_size)) for s in rng.permutation(starts)]
        return np.concatenate([rng.permutation(c) for c in chunks]) if chunks else \
            np.arange(0, dtype=np.int64)
    return rng.permutation(n)


def check_shuffle(shuffle) -> Any:
    if isinstance(shuffle, str):
        if shuffle.lower() != "batch":
            raise ValueError(f"Expected shuffle to be a bool or 'batch', got {shuffle!r}")
        return "batch"
    if shuffle is None:
        return False
    if not isinstance(shuffle, (bool, np.bool_, int)):
        raise TypeError(f"Expected shuffle to be a bool or 'batch', got {shuffle!r}")
    return bool(shuffle)


def sequence_order(model, n: int, shuffle) -> Seq[int]:
    order = epoch_order(model, n, bool(shuffle))
    return range(n) if order is None else [int(i) for i in order]
