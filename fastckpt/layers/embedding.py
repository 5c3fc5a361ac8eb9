"""``Embedding``: integer ids to dense vectors, a native gather forward and scatter-add backward."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from fastckpt import backend, initializers, ops
from fastckpt.checks import is_int
from fastckpt.layers.base import Layer

__all__ = ["Embedding"]

_INT32_MAX = 2**31 - 1


class _RandomUniform(initializers.Initializer):
    """``RandomUniform(minval, maxval, seed)``, Embedding's default ('uniform'), used until
    ``fastckpt.initializers`` provides its own."""

    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype="float32"):
        rng = np.random.default_rng(self.seed if self.seed is not None else backend.next_seed())
        return rng.uniform(self.minval, self.maxval, size=shape).astype(dtype)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


_RandomUniform.__name__ = "RandomUniform"
_UNIFORM_NAMES = ("uniform", "random_uniform", "RandomUniform")


def _initializer(identifier):
    native = getattr(initializers, "RandomUniform", None)
    if native is None:
        if isinstance(identifier, str) and identifier in _UNIFORM_NAMES:
            return _RandomUniform()
        if isinstance(identifier, dict) and identifier.get("class_name") in _UNIFORM_NAMES:
            return _RandomUniform(**identifier.get("config", {}))
    return initializers.get(identifier)


class Embedding(Layer):
    """Turns integer ids of any shape ``(batch, ...)`` into vectors: ``(batch, ..., output_dim)``,
    as ``tf.keras.layers.Embedding``. Weight: ``embeddings`` of shape ``(input_dim, output_dim)``.

    Ids may arrive as integers or as integral floats (a model's inputs are float32 arrays); a
    non-integral id, or one outside ``[0, input_dim)``, is a ``ValueError`` naming the value and
    its position (the kernel checks every id again before it reads a row). With
    ``mask_zero=True``, id 0 is padding: ``compute_mask`` marks it and masking layers downstream
    (``GlobalAveragePooling1D``, ``BatchNormalization``) leave those steps out.

    The gradient is dense, as tf.keras' on CPU: the rows a batch does not use get a zero gradient,
    so plain SGD leaves them unchanged, while Adam (or SGD with momentum) still decays their
    moments and moves them by the momentum left over (tf.keras' dense semantics, not a lazy
    per-row Adam).

    Example:
        >>> import numpy as np
        >>> emb = Embedding(10, 3)
        >>> emb(np.array([[1, 2, 0]])).shape
        (1, 3, 3)
    """

    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer="uniform",
                 mask_zero: bool = False, input_length=None, **kwargs):
        for k in ("embeddings_regularizer", "activity_regularizer", "embeddings_constraint"):
            if kwargs.get(k) is not None:
                raise NotImplementedError(f"Embedding: {k} is not supported yet")
            kwargs.pop(k, None)
        if kwargs.pop("sparse", False):
            raise NotImplementedError("Embedding: sparse=True is not supported")
        kwargs.pop("use_one_hot_matmul", None)
        for k in ("lora_rank", "quantization_config"):  # Keras 3: accepted when off
            if kwargs.pop(k, None) is not None:
                raise NotImplementedError(f"Embedding: {k} is not supported")
        kwargs.pop("lora_alpha", None)
        for what, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not is_int(v):
                raise TypeError(f"Embedding: expected a positive integer {what}, got {v!r}")
        if input_dim <= 0 or output_dim <= 0:
            raise ValueError(f"Both `input_dim` and `output_dim` should be positive, Received "
                             f"input_dim = {input_dim} and output_dim = {output_dim}")
        if input_dim > _INT32_MAX:
            raise ValueError(f"Embedding: input_dim must be at most {_INT32_MAX}, got {input_dim}")
        if "input_shape" not in kwargs and "batch_input_shape" not in kwargs:
            if input_length:
                kwargs["input_shape"] = tuple(input_length) if isinstance(
                    input_length, (list, tuple)) else (input_length,)
            else:
                kwargs["input_shape"] = (None,)
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = _initializer(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.input_length = input_length
        self.embeddings = None

    def build(self, input_shape=None) -> None:
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          initializer=self.embeddings_initializer)
        self.built = True

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.input_length is None:
            return input_shape + (self.output_dim,)
        lens = list(self.input_length) if isinstance(self.input_length, (list, tuple)) \
            else [self.input_length]
        if len(lens) != len(input_shape) - 1:
            raise ValueError(f'"input_length" is {self.input_length}, but received input has shape '
                             f"{input_shape}")
        for i, (s1, s2) in enumerate(zip(lens, input_shape[1:])):
            if s1 is not None and s2 is not None and s1 != s2:
                raise ValueError(f'"input_length" is {self.input_length}, but received input has '
                                 f"shape {input_shape}")
            if s1 is None:
                lens[i] = s2
        return (input_shape[0],) + tuple(lens) + (self.output_dim,)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        return np.asarray(inputs) != 0

    # --- ids --------------------------------------------------------------------------------
    def _ids(self, inputs) -> np.ndarray:
        """The inputs as int32 ids, each checked: integral and in ``[0, input_dim)``."""
        x = np.asarray(inputs)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"Input 0 of layer {self.name!r}: expected integer ids, got dtype "
                            f"{x.dtype}")
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            bad = (x < 0) | (x >= self.input_dim)
            if bad.any():
                idx = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"Input 0 of layer {self.name!r}: id {int(x[idx])} at index {idx} "
                                 f"is out of range [0, {self.input_dim})")
            return np.ascontiguousarray(x, dtype=np.int32)
        if np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"Input 0 of layer {self.name!r}: expected integer ids, got dtype "
                            f"{x.dtype}")
        with np.errstate(invalid="ignore"):
            nonint = ~np.isfinite(x) | (x != np.floor(x))
        if nonint.any():
            idx = tuple(int(i) for i in np.argwhere(nonint)[0])
            raise ValueError(f"Input 0 of layer {self.name!r}: expected integer ids, got "
                             f"{float(x[idx])!r} at index {idx}")
        bad = (x < 0) | (x >= self.input_dim)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"Input 0 of layer {self.name!r}: id {int(x[idx])} at index {idx} is "
                             f"out of range [0, {self.input_dim})")
        return np.ascontiguousarray(x, dtype=np.int32)

    def call(self, inputs, training=None):
        ids = self._ids(inputs)
        out = np.empty(ids.shape + (self.output_dim,), np.float32)
        return ops.embedding_gather(ids, self.embeddings.value, out)

    # --- training protocol ----------------------------------------------------------------
    def forward_train(self, x, training: bool, mask=None) -> np.ndarray:
        ids = self._ids(x)
        out = self._ws("y", ids.shape + (self.output_dim,))
        ops.embedding_gather(ids, self.embeddings.value, out)
        self._last_ids = ids
        return out

    def backward(self, grad_output: np.ndarray, need_input_grad: bool = True):
        """Scatter-adds the gradient into ``embeddings``' (dense) gradient buffer; ids have no
        gradient: returns None."""
        if self.trainable:
            g = np.ascontiguousarray(grad_output, dtype=np.float32)
            ops.embedding_scatter_add(self._last_ids, g, self._grad_buffers()[0])
        return None

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update({
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": None,
            "activity_regularizer": None,
            "embeddings_constraint": None,
            "mask_zero": self.mask_zero,
            "input_length": self.input_length,
        })
        return config
