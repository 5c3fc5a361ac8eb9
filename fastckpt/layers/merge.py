"""Merge layers: ``Add``, ``Subtract``, ``Multiply``, ``Average``, ``Maximum``, ``Minimum`` and
``Concatenate``, with their functional forms (``add([a, b])``, ...).

They take a list of inputs (``_multi_input``): ``call(list)``, ``forward_train(list, training)``,
``backward(g) -> one gradient per input``. Elementwise merges broadcast as tf.keras' ``_Merge``
does: the shapes without the batch axis are aligned on the right, dims of 1 stretch, and an input
of lower rank gets axes of 1 inserted after its batch axis. Broadcast inputs are expanded by a C++
kernel before the merge; their gradients are summed back over the stretched dims.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from fastckpt import ops
from fastckpt.checks import is_int
from fastckpt.layers.base import Layer

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
           "add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate"]


def _is_array_list(inputs) -> bool:
    return isinstance(inputs, (list, tuple)) and all(
        isinstance(t, (np.ndarray, np.generic, list, float, int)) for t in inputs)


class _Merge(Layer):
    """Base of the merge layers: checks the list of inputs, passes masks on as Keras does."""

    _multi_input = True
    supports_masking = True
    _min_inputs = 1

    def __call__(self, inputs, training=None, **kwargs):
        if not _is_array_list(inputs):
            return super().__call__(inputs, training=training, **kwargs)
        xs = [np.asarray(t, dtype=np.float32) for t in inputs]
        self._maybe_build([(None,) + tuple(x.shape[1:]) for x in xs])
        return self.call(xs, **kwargs)

    def _check_list(self, shapes) -> List[tuple]:
        if not isinstance(shapes, (list, tuple)) or not shapes or not all(
                isinstance(s, (list, tuple)) for s in shapes):
            raise ValueError(f"A merge layer should be called on a list of inputs. Received: "
                             f"input_shape={shapes} (not a list of shapes)")
        shapes = [tuple(s) for s in shapes]
        if len(shapes) < self._min_inputs:
            raise ValueError(f"A `{type(self).__name__}` layer should be called on a list of at "
                             f"least {self._min_inputs} inputs. Got {len(shapes)} inputs. Full "
                             f"input_shape received: {shapes}")
        return shapes

    def build(self, input_shape) -> None:
        shapes = self._check_list(input_shape)
        self._merged_shape(shapes)
        self.built = True

    @staticmethod
    def _pair_shape(s1: tuple, s2: tuple) -> tuple:
        """The broadcast of two sample shapes (no batch axis), aligned on the right."""
        if len(s1) < len(s2):
            s1, s2 = s2, s1
        if not s2:
            return tuple(s1)
        out = list(s1[:len(s1) - len(s2)])
        for i, j in zip(s1[len(s1) - len(s2):], s2):
            if i is None or j is None:
                out.append(None)
            elif i == 1:
                out.append(j)
            elif j == 1 or i == j:
                out.append(i)
            else:
                raise ValueError(f"Inputs have incompatible shapes. Received shapes {tuple(s1)} "
                                 f"and {tuple(s2)}")
        return tuple(out)

    def _merged_shape(self, shapes) -> tuple:
        batch = {s[0] for s in shapes if s} - {None}
        if len(batch) > 1:
            raise ValueError(f"Cannot merge tensors with different batch sizes. Got tensors with "
                             f"shapes {list(shapes)}")
        out = tuple(shapes[0][1:])
        for s in shapes[1:]:
            out = self._pair_shape(out, tuple(s[1:]))
        return (batch.pop() if batch else None,) + out

    def compute_output_shape(self, input_shape):
        return self._merged_shape(self._check_list(input_shape))

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)) or len(mask) != len(inputs):
            raise ValueError(f"Layer {self.name!r}: mask should be a list of {len(inputs)} masks "
                             f"(one per input), got {mask!r:.80}")
        masks = [np.asarray(m, bool) for m in mask if m is not None]
        if not masks:
            return None
        return np.logical_and.reduce(masks)

    def _inputs(self, inputs) -> List[np.ndarray]:
        xs = [np.ascontiguousarray(t, dtype=np.float32) for t in inputs]
        self._check_list([x.shape for x in xs])
        self._merged_shape([x.shape for x in xs])
        return xs


class _ElementwiseMerge(_Merge):
    _op = ""

    def _broadcast(self, xs, ws) -> List[np.ndarray]:
        """The inputs at the output's shape: lower ranks get axes of 1 after the batch axis (as
        tf.keras), then inputs with dims of 1 are expanded (a C++ gather; ``ws`` gives buffers,
        None for fresh arrays)."""
        shapes = [x.shape for x in xs]
        out = self._merged_shape(shapes)
        out = (xs[0].shape[0],) + tuple(out[1:])
        full = []
        for i, x in enumerate(xs):
            if x.shape == out:
                full.append(x)
                continue
            x = x.reshape((x.shape[0],) + (1,) * (len(out) - x.ndim) + x.shape[1:])
            y = np.empty(out, np.float32) if ws is None else ws(f"bx{i}", out)
            full.append(ops.broadcast_expand(x, out, y))
        return full

    def call(self, inputs, training=None, mask=None):
        xs = self._inputs(inputs)
        full = self._broadcast(xs, None)
        return ops.merge_forward(self._op, full, np.empty_like(full[0]))

    def forward_train(self, inputs, training: bool, mask=None) -> np.ndarray:
        xs = self._inputs(inputs)
        full = self._broadcast(xs, self._ws)
        self._last_inputs, self._in_shapes = full, [x.shape for x in xs]
        return ops.merge_forward(self._op, full, self._ws("y", full[0].shape))

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        xs = self._last_inputs
        if not need_input_grad:
            return [None] * len(xs)
        dfull = [self._ws(f"dx{i}", x.shape) for i, x in enumerate(xs)]
        ops.merge_backward(self._op, xs, np.ascontiguousarray(grad_output, dtype=np.float32), dfull)
        dxs = []
        for i, (d, shape) in enumerate(zip(dfull, self._in_shapes)):
            if d.shape == shape:
                dxs.append(d)
                continue
            dx = self._ws(f"rdx{i}", shape)  # summed over the dims the input was stretched on
            ops.broadcast_reduce(d, dx.reshape((shape[0],) + (1,) * (d.ndim - len(shape)) + shape[1:]))
            dxs.append(dx)
        return dxs


class Add(_ElementwiseMerge):
    """Sum of its inputs.

    Example:
        >>> import numpy as np
        >>> Add()([np.ones((1, 2), np.float32), np.ones((1, 2), np.float32)]).tolist()
        [[2.0, 2.0]]
    """
    _op = "add"


class Subtract(_ElementwiseMerge):
    """``inputs[0] - inputs[1]`` (exactly two inputs).

    Example:
        >>> import numpy as np
        >>> Subtract()([np.ones((1, 2), np.float32), np.ones((1, 2), np.float32)]).tolist()
        [[0.0, 0.0]]
    """
    _op = "subtract"

    def _check_list(self, shapes):
        shapes = super()._check_list(shapes)
        if len(shapes) != 2:
            raise ValueError(f"A `Subtract` layer should be called on exactly 2 inputs. Received: "
                             f"input_shape={shapes}")
        return shapes


class Multiply(_ElementwiseMerge):
    """Elementwise product of its inputs."""
    _op = "multiply"


class Average(_ElementwiseMerge):
    """Elementwise mean of its inputs."""
    _op = "average"


class Maximum(_ElementwiseMerge):
    """Elementwise maximum of its inputs (gradient to the first input holding it)."""
    _op = "maximum"


class Minimum(_ElementwiseMerge):
    """Elementwise minimum of its inputs (gradient to the first input holding it)."""
    _op = "minimum"


class Concatenate(_Merge):
    """Concatenates its inputs along ``axis`` (equal in every other dimension).

    Example:
        >>> import numpy as np
        >>> Concatenate()([np.zeros((2, 3), np.float32), np.ones((2, 1), np.float32)]).shape
        (2, 4)
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not is_int(axis):
            raise TypeError(f"Concatenate: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def _mismatch(self, shapes) -> ValueError:
        return ValueError(f"A `Concatenate` layer requires inputs with matching shapes except for "
                          f"the concatenation axis. Received: input_shape={[tuple(s) for s in shapes]}")

    def _merged_shape(self, shapes) -> tuple:
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or not -rank <= self.axis < rank:
            raise self._mismatch(shapes)
        axis = self.axis % rank
        out = list(shapes[0])
        for s in shapes[1:]:
            for i, (a, b) in enumerate(zip(out, s)):
                if i == axis:
                    continue
                if a is None:
                    out[i] = b
                elif b is not None and a != b:
                    raise self._mismatch(shapes)
        dims = [s[axis] for s in shapes]
        out[axis] = None if any(d is None for d in dims) else int(sum(dims))
        return tuple(out)

    def call(self, inputs, training=None, mask=None):
        xs = self._inputs(inputs)
        y = np.empty(self._merged_shape([x.shape for x in xs]), np.float32)
        return ops.concat_forward(xs, self.axis, y)

    def forward_train(self, inputs, training: bool, mask=None) -> np.ndarray:
        xs = self._inputs(inputs)
        self._in_shapes = [x.shape for x in xs]
        y = self._ws("y", self._merged_shape(self._in_shapes))
        return ops.concat_forward(xs, self.axis, y)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return [None] * len(self._in_shapes)
        dxs = [self._ws(f"dx{i}", s) for i, s in enumerate(self._in_shapes)]
        ops.concat_backward(np.ascontiguousarray(grad_output, dtype=np.float32), self.axis, dxs)
        return dxs

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        if len(mask) != len(inputs):
            raise ValueError(f"Layer {self.name!r}: mask should be a list of {len(inputs)} masks")
        # As Keras: a missing mask is all-true; masks take the inputs' rank, are concatenated
        # along the axis and reduced over the last axis.
        full = []
        for x, m in zip(inputs, mask):
            shape = np.shape(x)
            if m is None:
                m = np.ones(shape, bool)
            m = np.asarray(m, bool)
            while m.ndim < len(shape):
                m = np.broadcast_to(m[..., None], m.shape + (shape[m.ndim],))
            full.append(m)
        return np.all(np.concatenate(full, axis=self.axis), axis=-1)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config["axis"] = self.axis
        return config


def _functional(cls, inputs, **kwargs):
    return cls(**kwargs)(inputs)


def add(inputs, **kwargs):
    """Functional form of ``Add``."""
    return _functional(Add, inputs, **kwargs)


def subtract(inputs, **kwargs):
    """Functional form of ``Subtract``."""
    return _functional(Subtract, inputs, **kwargs)


def multiply(inputs, **kwargs):
    """Functional form of ``Multiply``."""
    return _functional(Multiply, inputs, **kwargs)


def average(inputs, **kwargs):
    """Functional form of ``Average``."""
    return _functional(Average, inputs, **kwargs)


def maximum(inputs, **kwargs):
    """Functional form of ``Maximum``."""
    return _functional(Maximum, inputs, **kwargs)


def minimum(inputs, **kwargs):
    """Functional form of ``Minimum``."""
    return _functional(Minimum, inputs, **kwargs)


def concatenate(inputs, axis=-1, **kwargs):
    """Functional form of ``Concatenate``."""
    return _functional(Concatenate, inputs, axis=axis, **kwargs)
