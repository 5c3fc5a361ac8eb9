"""``BatchNormalization``, ``LayerNormalization`` and ``Normalization`` over the feature axis,
with fused native kernels (statistics and normalization in one call, the backward in one pass)."""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from fastckpt import initializers, ops
from fastckpt.checks import is_int, is_real
from fastckpt.layers.base import Layer

__all__ = ["BatchNormalization", "LayerNormalization", "Normalization"]

#: ``keras.backend.epsilon()``: the floor of Normalization's standard deviation.
_BACKEND_EPSILON = 1e-7


def _validate_axis(layer: Layer, axis, input_shape) -> list:
    """``axis`` (int or ints) as sorted non-negative ints for an input of this rank."""
    ndim = len(input_shape)
    axes = [axis] if is_int(axis) else list(axis)
    out = []
    for a in axes:
        if not is_int(a) or not -ndim <= a < ndim:
            raise ValueError(f"Layer {layer.name!r}: invalid axis {axis!r} for an input of rank "
                             f"{ndim} (shape {tuple(input_shape)}); expected axes in "
                             f"[-{ndim}, {ndim})")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"Layer {layer.name!r}: duplicate axis in {axis!r}")
    return out


def _no_extras(cls_name: str, kwargs: dict, names) -> None:
    """Regularizers and constraints are accepted as None only (as Dense does)."""
    for k in names:
        if kwargs.get(k) is not None:
            raise NotImplementedError(f"{cls_name}: {k} is not supported yet")
        kwargs.pop(k, None)


def _f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def _leading_mask(layer: Layer, mask, x: np.ndarray) -> Optional[np.ndarray]:
    """A mask over every axis but the last, as uint8 (None stays None)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != x.shape[:-1]:
        raise ValueError(f"Layer {layer.name!r}: expected a mask of shape {x.shape[:-1]} for "
                         f"inputs of shape {x.shape}, got {m.shape}")
    return np.ascontiguousarray(m != 0, dtype=np.uint8)


def _check_features(layer: Layer, x: np.ndarray, want) -> None:
    if x.ndim != len(layer._built_shape) or tuple(x.shape[-len(want):]) != tuple(want):
        raise ValueError(f"Input 0 of layer {layer.name!r} is incompatible with the layer: "
                         f"expected shape {tuple(layer._built_shape)}, but received input with "
                         f"shape {x.shape}")


class BatchNormalization(Layer):
    """Normalizes each feature with the batch's statistics in training and with moving averages
    of them in inference, as ``tf.keras.layers.BatchNormalization`` (one feature axis, ``-1`` by
    default; ``axis=1`` for channels-first data).

    Training (``fit``, or ``training=True``) uses the batch mean and biased variance and moves
    ``moving_mean``/``moving_variance`` by ``moving -= (moving - batch) * (1 - momentum)``; a
    frozen layer (``trainable=False``) always runs in inference mode, as in tf.keras. A mask
    (from ``Embedding(mask_zero=True)``) restricts the statistics to the unmasked steps.

    Example:
        >>> import numpy as np
        >>> bn = BatchNormalization()
        >>> y = bn(np.array([[0.0], [2.0]], np.float32), training=True)
        >>> print(y.ravel(), bn.moving_mean.numpy())
        [-0.9995004  0.9995004] [0.01]
    """

    def __init__(self, axis=-1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones", **kwargs):
        _no_extras("BatchNormalization", kwargs, ("beta_regularizer", "gamma_regularizer",
                                                  "beta_constraint", "gamma_constraint",
                                                  "virtual_batch_size", "adjustment",
                                                  "renorm_clipping"))
        for k, ok in (("renorm", False), ("synchronized", False)):
            if kwargs.pop(k, ok):
                raise NotImplementedError(f"BatchNormalization: {k}=True is not supported")
        kwargs.pop("renorm_momentum", None)
        kwargs.pop("fused", None)  # an implementation choice in tf.keras; the results are the same
        super().__init__(**kwargs)
        if not (is_int(axis) or (isinstance(axis, (list, tuple)) and axis
                                 and all(is_int(a) for a in axis))):
            raise TypeError(f"BatchNormalization: expected an int or a list of ints for axis, got "
                            f"{axis!r}")
        if not is_real(momentum):
            raise TypeError(f"BatchNormalization: expected a float momentum, got {momentum!r}")
        if not is_real(epsilon) or not epsilon > 0:
            raise ValueError(f"BatchNormalization: expected a positive float epsilon, got {epsilon!r}")
        self.axis = int(axis) if is_int(axis) else [int(a) for a in axis]
        self._config_axis = self.axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.supports_masking = True
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None

    def build(self, input_shape) -> None:
        axes = _validate_axis(self, self.axis, input_shape)
        ndim = len(input_shape)
        if ndim < 2:
            raise ValueError(f"BatchNormalization {self.name!r}: expected an input of rank >= 2, "
                             f"got shape {tuple(input_shape)}")
        if len(axes) != 1 or axes[0] == 0:
            raise NotImplementedError(f"BatchNormalization {self.name!r}: one feature axis other "
                                      f"than the batch axis can be normalized, got "
                                      f"axis={self.axis!r} for input shape {tuple(input_shape)}")
        self._ax = axes[0]
        self._last = self._ax == ndim - 1
        n = input_shape[self._ax]
        if n is None:
            raise ValueError(f"BatchNormalization {self.name!r}: input has undefined axis "
                             f"dimension; received input shape {tuple(input_shape)}")
        self.axis = axes  # tf.keras keeps the validated list (and saves it)
        self._built_shape = tuple(input_shape)
        if self.scale:
            self.gamma = self.add_weight("gamma", (n,), initializer=self.gamma_initializer)
        if self.center:
            self.beta = self.add_weight("beta", (n,), initializer=self.beta_initializer)
        self.moving_mean = self.add_weight("moving_mean", (n,), trainable=False,
                                           initializer=self.moving_mean_initializer)
        self.moving_variance = self.add_weight("moving_variance", (n,), trainable=False,
                                               initializer=self.moving_variance_initializer)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def _var_correction(self, x: np.ndarray, mask) -> float:
        # tf.keras runs rank-4/5 inputs normalized over axis 1 or the last axis through TF's fused
        # kernel, whose moving variance takes the sample (Bessel-corrected) variance; every other
        # case takes the biased one.
        rows = x.size // x.shape[-1] if x.shape[-1] else 0
        fused = x.ndim in (4, 5) and self._ax in (1, x.ndim - 1)
        return rows / (rows - 1) if fused and mask is None and rows > 1 else 1.0

    def _to_last(self, x: np.ndarray) -> np.ndarray:
        """The feature axis moved last (a copy; the kernels normalize the last axis)."""
        return x if self._last else np.ascontiguousarray(np.moveaxis(x, self._ax, -1))

    def _from_last(self, y: np.ndarray) -> np.ndarray:
        return y if self._last else np.ascontiguousarray(np.moveaxis(y, -1, self._ax))

    def _check(self, x: np.ndarray, mask) -> None:
        if x.ndim != len(self._built_shape) or x.shape[self._ax] != self._built_shape[self._ax]:
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                             f"expected shape {tuple(self._built_shape)}, but received input with "
                             f"shape {x.shape}")
        if mask is not None and not self._last:
            raise NotImplementedError(f"BatchNormalization {self.name!r}: a mask needs the "
                                      f"feature axis last (axis=-1)")

    def _forward(self, x: np.ndarray, y: np.ndarray, training: bool, mask) -> None:
        gamma = self.gamma.value if self.scale else None
        beta = self.beta.value if self.center else None
        n = x.shape[-1]
        self._mean = self._ws("mean", (n,))
        self._inv = self._ws("inv", (n,))
        self._batch_stats = bool(training) and self.trainable
        if self._batch_stats:
            ops.batchnorm_forward_train(x, gamma, beta, self.epsilon, y, self._mean, self._inv,
                                        self.moving_mean.value, self.moving_variance.value,
                                        self.momentum, self._var_correction(x, mask), row_mask=mask)
        else:
            self._mean[...] = self.moving_mean.value
            ops.batchnorm_forward_infer(x, self.moving_mean.value, self.moving_variance.value,
                                        gamma, beta, self.epsilon, y, self._inv)

    def call(self, inputs, training=None, mask=None):
        x = _f32(inputs)
        self._check(x, mask)
        x = self._to_last(x)
        y = np.empty_like(x)
        self._forward(x, y, bool(training), _leading_mask(self, mask, x))
        return self._from_last(y)

    # --- training protocol ----------------------------------------------------------------
    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = _f32(x)
        self._check(x, mask)
        x = self._to_last(x)
        self._mask = _leading_mask(self, mask, x)
        y = self._ws("y", x.shape)
        self._forward(x, y, training, self._mask)
        self._last_input = x
        return self._from_last(y)

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        x = self._last_input
        g = self._to_last(_f32(grad_output))
        dx = self._ws("dx", x.shape) if need_input_grad else None
        grads = self._grad_buffers()
        dgamma = dbeta = None
        if self.trainable:
            dgamma = grads[0] if self.scale else None
            dbeta = grads[-1] if self.center else None
        ops.batchnorm_backward(x, g, self._mean, self._inv,
                               self.gamma.value if self.scale else None, self._batch_stats,
                               dx, dgamma, dbeta, row_mask=self._mask if self._batch_stats else None)
        return None if dx is None else self._from_last(dx)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            # As given (tf.keras saves the validated list, [1]; Keras 3 reads only an int):
            # both read an int, and -1 does not depend on the input's rank.
            "axis": self._config_axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": None, "gamma_regularizer": None,
            "beta_constraint": None, "gamma_constraint": None,
        })
        return config


class LayerNormalization(Layer):
    """Normalizes each sample over ``axis`` (the last axis by default; any non-batch axes), then
    scales by ``gamma`` and shifts by ``beta``, as ``tf.keras.layers.LayerNormalization``.

    Example:
        >>> import numpy as np
        >>> ln = LayerNormalization()
        >>> print(ln(np.array([[1.0, 3.0]], np.float32)))
        [[-0.9995004  0.9995004]]
    """

    def __init__(self, axis=-1, epsilon: float = 1e-3, center: bool = True, scale: bool = True,
                 beta_initializer="zeros", gamma_initializer="ones", **kwargs):
        _no_extras("LayerNormalization", kwargs, ("beta_regularizer", "gamma_regularizer",
                                                  "beta_constraint", "gamma_constraint"))
        if kwargs.pop("rms_scaling", False):  # Keras 3
            raise NotImplementedError("LayerNormalization: rms_scaling=True is not supported")
        super().__init__(**kwargs)
        if not (is_int(axis) or (isinstance(axis, (list, tuple)) and axis
                                 and all(is_int(a) for a in axis))):
            raise TypeError(f"Expected an int or a list/tuple of ints for the argument 'axis', but "
                            f"received: {axis!r}")
        if not is_real(epsilon) or not epsilon > 0:
            raise ValueError(f"LayerNormalization: expected a positive float epsilon, got {epsilon!r}")
        self.axis = int(axis) if is_int(axis) else [int(a) for a in axis]
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.supports_masking = True
        self.gamma = self.beta = None

    def build(self, input_shape) -> None:
        axes = _validate_axis(self, self.axis, input_shape)
        ndim = len(input_shape)
        if 0 in axes:
            raise NotImplementedError(f"LayerNormalization {self.name!r}: the batch axis cannot be "
                                      f"normalized, got axis={self.axis!r} for input shape "
                                      f"{tuple(input_shape)}")
        # The kernels normalize trailing columns: other axes are moved last (sorted, the order in
        # which tf.keras lays gamma/beta over them, whatever order ``axis`` lists them in).
        ordered = sorted(axes)
        rest = [a for a in range(ndim) if a not in ordered]
        self._perm = None if ordered == list(range(ndim - len(axes), ndim)) else rest + ordered
        self._inv_perm = None if self._perm is None else list(np.argsort(self._perm))
        self._cols_shape = tuple(input_shape[a] for a in ordered)
        shape = tuple(input_shape[a] for a in axes)
        if any(d is None for d in shape):
            raise ValueError(f"LayerNormalization {self.name!r}: the normalized axes {axes} must "
                             f"have known sizes, got input shape {tuple(input_shape)}")
        self.axis = axes
        self._param_shape = shape
        self._built_shape = tuple(input_shape)
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, initializer=self.gamma_initializer)
        if self.center:
            self.beta = self.add_weight("beta", shape, initializer=self.beta_initializer)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """``x`` as rows of the normalized values (a transposed copy for non-trailing axes)."""
        cols = int(np.prod(self._param_shape))
        if self._perm is None:
            _check_features(self, x, self._cols_shape)
            return x.reshape(-1, cols)
        if x.ndim != len(self._built_shape) or any(
                x.shape[a] != self._built_shape[a] for a in self.axis):
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                             f"expected shape {tuple(self._built_shape)}, but received input with "
                             f"shape {x.shape}")
        return np.ascontiguousarray(x.transpose(self._perm)).reshape(-1, cols)

    def _unrows(self, y2: np.ndarray, shape) -> np.ndarray:
        """Rows back to the input's layout (the inverse of ``_rows``)."""
        if self._perm is None:
            return y2.reshape(shape)
        moved = tuple(shape[a] for a in self._perm)
        return np.ascontiguousarray(y2.reshape(moved).transpose(self._inv_perm))

    def _forward(self, x2: np.ndarray, y2: np.ndarray, mean: np.ndarray, inv: np.ndarray) -> None:
        ops.layernorm_forward(x2, self.gamma.value.reshape(-1) if self.scale else None,
                              self.beta.value.reshape(-1) if self.center else None,
                              self.epsilon, y2, mean, inv)

    def call(self, inputs, training=None, mask=None):
        x = _f32(inputs)
        x2 = self._rows(x)
        y2 = np.empty_like(x2)
        rows = x2.shape[0]
        self._forward(x2, y2, np.empty(rows, np.float32), np.empty(rows, np.float32))
        return self._unrows(y2, x.shape)

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = _f32(x)
        x2 = self._rows(x)
        rows = x2.shape[0]
        self._mean = self._ws("mean", (rows,))
        self._inv = self._ws("inv", (rows,))
        self._last_input = x2
        if self._perm is not None:
            y2 = np.empty_like(x2)
            self._forward(x2, y2, self._mean, self._inv)
            return self._unrows(y2, x.shape)
        y = self._ws("y", x.shape)
        self._forward(x2, y.reshape(x2.shape), self._mean, self._inv)
        return y

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        x2 = self._last_input
        g = _f32(grad_output)
        shape = g.shape
        if self._perm is not None:
            g = self._rows(g)
        dx = self._ws("dx", g.shape) if need_input_grad else None
        grads = self._grad_buffers()
        dgamma = dbeta = None
        if self.trainable:
            dgamma = grads[0].reshape(-1) if self.scale else None
            dbeta = grads[-1].reshape(-1) if self.center else None
        ops.layernorm_backward(x2, g.reshape(x2.shape), self._mean, self._inv,
                               self.gamma.value.reshape(-1) if self.scale else None,
                               dx.reshape(x2.shape) if dx is not None else None, dgamma, dbeta)
        return dx if dx is None or self._perm is None else self._unrows(dx, shape)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": None, "gamma_regularizer": None,
            "beta_constraint": None, "gamma_constraint": None,
        })
        return config


def _listify(value):
    if value is None:
        return None
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()


class Normalization(Layer):
    """Shifts and scales inputs to zero mean and unit variance per position of ``axis``, with
    statistics given (``mean``, ``variance``) or computed by ``adapt(data)``, as
    ``tf.keras.layers.Normalization``: ``(x - mean) / max(sqrt(variance), 1e-7)``, and with
    ``invert=True`` the inverse map ``mean + x * max(sqrt(variance), 1e-7)``.

    ``axis`` are the axes kept (one statistic per position along them): ``-1`` per feature,
    ``None`` one statistic for everything. Adapted statistics are the non-trainable weights
    ``mean``, ``variance`` (shape: the sizes of the kept axes) and ``count`` (int64), saved with
    the model.

    Example:
        >>> import numpy as np
        >>> norm = Normalization()
        >>> norm.adapt(np.array([[0.0, 7.0], [2.0, 9.0]], np.float32))
        >>> norm(np.array([[0.0, 7.0]], np.float32)).tolist()
        [[-1.0, -1.0]]
    """

    def __init__(self, axis=-1, mean=None, variance=None, invert: bool = False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        elif is_int(axis):
            axis = (int(axis),)
        elif isinstance(axis, (list, tuple)) and all(is_int(a) for a in axis):
            axis = tuple(int(a) for a in axis)
        else:
            raise TypeError(f"Normalization: expected axis to be None, an int or a tuple of ints, "
                            f"got {axis!r}")
        self.axis = axis
        if (mean is None) != (variance is None):
            raise ValueError(f"When setting values directly, both `mean` and `variance` must be "
                             f"set. Got mean: {mean} and variance: {variance}")
        self.input_mean = mean
        self.input_variance = variance
        self.invert = bool(invert)
        self.supports_masking = True
        self.adapt_mean = self.adapt_variance = self.count = None

    def build(self, input_shape) -> None:
        input_shape = tuple(input_shape)
        ndim = len(input_shape)
        if any(not -ndim <= a < ndim for a in self.axis):
            raise ValueError(f"All `axis` values must be in the range [-ndim, ndim). Found ndim: "
                             f"`{ndim}`, axis: {self.axis}")
        keep = sorted(a % ndim for a in self.axis)
        for d in keep:
            if input_shape[d] is None:
                raise ValueError(f"All `axis` values to be kept must have known shape. Got axis: "
                                 f"{self.axis}, input shape: {list(input_shape)}, with unknown "
                                 f"axis at index: {d}")
        self._keep_axis = keep
        self._reduce_axis = [d for d in range(ndim) if d not in keep]
        self._built_shape = input_shape
        self._broadcast_shape = tuple(input_shape[d] if d in keep else 1 for d in range(ndim))
        shape = tuple(input_shape[d] for d in keep)
        if self.input_mean is None:
            self.adapt_mean = self.add_weight("mean", shape, initializer="zeros", trainable=False)
            self.adapt_variance = self.add_weight("variance", shape, initializer="ones",
                                                  trainable=False)
            self.count = self.add_weight("count", (), dtype=np.int64, initializer="zeros",
                                         trainable=False)
        else:
            try:
                self._const_mean = (np.asarray(self.input_mean, np.float32)
                                    * np.ones(shape, np.float32)).astype(np.float32)
                self._const_var = (np.asarray(self.input_variance, np.float32)
                                   * np.ones(shape, np.float32)).astype(np.float32)
            except ValueError:
                raise ValueError(f"Normalization {self.name!r}: mean/variance of shapes "
                                 f"{np.shape(self.input_mean)}/{np.shape(self.input_variance)} do "
                                 f"not broadcast to the kept axes' shape {shape}") from None
            if self._const_mean.shape != shape or self._const_var.shape != shape:
                raise ValueError(f"Normalization {self.name!r}: mean/variance of shapes "
                                 f"{np.shape(self.input_mean)}/{np.shape(self.input_variance)} do "
                                 f"not broadcast to the kept axes' shape {shape}")
        self.built = True

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.built and len(shape) == len(self._built_shape):
            for d in self._keep_axis:  # a kept axis has the size it was built with
                shape[d] = self._built_shape[d]
        return tuple(shape)

    def compute_mask(self, inputs, mask=None):
        return mask

    # --- statistics -------------------------------------------------------------------------
    def _stats(self):
        if self.input_mean is not None:
            return self._const_mean, self._const_var
        return self.adapt_mean.value, self.adapt_variance.value

    def _flat(self, x: np.ndarray):
        """``x`` as (rows, cols) and the statistics broadcast to ``cols``: the kept axes lie in
        the trailing block ``x.shape[k:]`` (k = the first kept axis, or the last axis when none
        is kept), so each statistic is repeated over the reduced axes inside that block."""
        mean, var = self._stats()
        if not self._keep_axis:
            # One statistic for everything (axis=None): any input shape, as TF broadcasts it.
            cols = x.shape[-1] if x.ndim and x.shape[-1] else 1
            m = self._ws("mean_b", (cols,))
            v = self._ws("var_b", (cols,))
            m[...] = mean.reshape(())
            v[...] = var.reshape(())
            return x.reshape(-1, cols), m, v
        ndim = len(self._built_shape)
        if x.ndim != ndim or any(x.shape[d] != self._built_shape[d] for d in self._keep_axis):
            raise ValueError(f"Input 0 of layer {self.name!r} is incompatible with the layer: "
                             f"expected shape {self._built_shape}, but received input with "
                             f"shape {x.shape}")
        k = self._keep_axis[0]
        block = tuple(x.shape[k:])
        bshape = self._broadcast_shape[k:]
        m = self._ws("mean_b", block)
        v = self._ws("var_b", block)
        # Refreshed at every call: adapt or load_weights may have changed the values in place.
        m[...] = mean.reshape(bshape)
        v[...] = var.reshape(bshape)
        cols = max(int(np.prod(block)), 1)
        return x.reshape(-1, cols), m.reshape(-1), v.reshape(-1)

    def _apply(self, x: np.ndarray, out: np.ndarray, with_mean: bool = True) -> np.ndarray:
        x2, m, v = self._flat(x)
        ops.normalize_forward(x2, m if with_mean else None, v, _BACKEND_EPSILON, self.invert,
                              out.reshape(x2.shape))
        return out

    def call(self, inputs, training=None, mask=None):
        x = _f32(inputs)
        return self._apply(x, np.empty_like(x))

    def forward_train(self, x: np.ndarray, training: bool, mask=None) -> np.ndarray:
        x = _f32(x)
        return self._apply(x, self._ws("y", x.shape))

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        if not need_input_grad:
            return None
        g = _f32(grad_output)
        # d/dx of (x - mean) / s is 1 / s and of mean + x * s is s: the map itself, mean zero.
        return self._apply(g, self._ws("dx", g.shape), with_mean=False)

    # --- adapt ------------------------------------------------------------------------------
    def adapt(self, data, batch_size: Optional[int] = None, steps: Optional[int] = None) -> None:
        """Compute ``mean``/``variance`` over ``data`` (an array, or an iterable of batches) in
        one streaming pass of ``batch_size`` rows (default 32) at a time, at most ``steps``
        batches, combined as tf.keras combines them. Starts from a reset state."""
        if self.input_mean is not None:
            raise ValueError(f"Cannot `adapt` a Normalization layer that is initialized with static "
                             f"`mean` and `variance`, you passed mean {self.input_mean} and "
                             f"variance {self.input_variance}.")
        if batch_size is not None and (not is_int(batch_size) or batch_size <= 0):
            raise ValueError(f"Normalization.adapt: expected a positive integer batch_size, got "
                             f"{batch_size!r}")
        if steps is not None and (not is_int(steps) or steps <= 0):
            raise ValueError(f"Normalization.adapt: expected a positive integer steps, got {steps!r}")
        if isinstance(data, (np.ndarray, list, tuple)) or hasattr(data, "__array__"):
            arr = np.asarray(data)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
                raise TypeError(f"Normalization.adapt: expected numeric data, got dtype {arr.dtype}")
            if arr.ndim == 0:
                raise ValueError("Normalization.adapt: expected an array with a batch axis, got a "
                                 "scalar")
            bs = 32 if batch_size is None else int(batch_size)
            batches = (arr[i:i + bs] for i in range(0, arr.shape[0], bs))
            first_shape = arr.shape
        else:
            it = iter(data)
            try:
                first = np.asarray(next(it))
            except StopIteration:
                raise ValueError("Normalization.adapt: the data yielded no batch") from None

            def chain():
                yield first
                yield from it
            batches = chain()
            first_shape = first.shape
        if not self.built:
            if self._batch_input_shape is None:
                # The data's feature shape (tf.keras records only the rank, which its own h5
                # loader then cannot build a per-feature Normalization from).
                self._batch_input_shape = (None,) + tuple(first_shape[1:])
            self._maybe_build((None,) + tuple(first_shape[1:]))
        self.reset_state()
        for i, b in enumerate(batches):
            if steps is not None and i >= steps:
                break
            self.update_state(b)

    def update_state(self, data) -> None:
        """Fold one batch into the adapted statistics (tf.keras' streaming combination)."""
        if not self.built:
            raise RuntimeError("`build` must be called before `update_state`.")
        x = np.asarray(data, np.float32)
        ndim = len(self._built_shape)
        if not self._keep_axis:
            x = x.reshape(-1)  # axis=None: every value counts once, whatever the shape
        elif x.ndim != ndim or any(x.shape[d] != self._built_shape[d] for d in self._keep_axis):
            raise ValueError(f"Normalization {self.name!r}: adapt data of shape {x.shape} does not "
                             f"match the layer's input shape {self._built_shape}")
        if self._keep_axis:
            kept = tuple(x.shape[d] for d in self._keep_axis)
            cols = int(np.prod(kept))
            order = self._reduce_axis + self._keep_axis
            x2 = np.ascontiguousarray(np.transpose(x, order)).reshape(-1, cols)
        else:
            cols = 1
            x2 = np.ascontiguousarray(x).reshape(-1, 1)
        batch_mean = np.empty(cols, np.float32)
        batch_var = np.empty(cols, np.float32)
        batch_count = ops.column_moments(x2, batch_mean, batch_var)
        if batch_count == 0:
            return
        count = int(self.count.value)
        total = batch_count + count
        w_batch = np.float32(batch_count) / np.float32(total)
        w_old = np.float32(1.0) - w_batch
        mean = self.adapt_mean.value.reshape(-1)
        var = self.adapt_variance.value.reshape(-1)
        total_mean = mean * w_old + batch_mean * w_batch
        total_var = ((var + (mean - total_mean) ** 2) * w_old
                     + (batch_var + (batch_mean - total_mean) ** 2) * w_batch)
        mean[...] = total_mean
        var[...] = total_var
        self.count.value[...] = total

    def reset_state(self) -> None:
        if self.input_mean is not None or not self.built:
            return
        self.adapt_mean.value[...] = 0
        self.adapt_variance.value[...] = 1
        self.count.value[...] = 0

    def finalize_state(self) -> None:
        """Nothing to do: the statistics are read from the weights at every call."""

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            "axis": list(self.axis),
            "invert": self.invert,
            "mean": _listify(self.input_mean),
            "variance": _listify(self.input_variance),
        })
        return config

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Normalization":
        config = dict(config)
        if isinstance(config.get("axis"), list):
            config["axis"] = tuple(config["axis"])
        return cls(**config)
