"""Activations and the elementwise / shape / merge / noise layers: NumPy references, finite-
difference gradients, configs, training and saving in a Sequential model."""

import math

import numpy as np
import pytest

from fastckpt import activations, keras, ops

L = keras.layers

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_erf = np.vectorize(math.erf)


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# float64 references of every named activation (tf.keras 2.x definitions).
REFERENCES = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "relu6": lambda x: np.clip(x, 0, 6),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "selu": lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu_approximate": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "softplus": _softplus,
    "softsign": lambda x: x / (1 + np.abs(x)),
    "log_softmax": lambda x: x - x.max(-1, keepdims=True) - np.log(
        np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)),
    "exponential": np.exp,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "hard_silu": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "hard_swish": lambda x: x * np.clip(x + 3, 0, 6) / 6,
    "log_sigmoid": lambda x: -_softplus(-x),
}

KINKS = {"relu": [0.0], "relu6": [0.0, 6.0], "leaky_relu": [0.0], "elu": [0.0], "selu": [0.0],
         "hard_sigmoid": [-2.5, 2.5], "hard_silu": [-3.0, 3.0], "hard_swish": [-3.0, 3.0]}


def away_from(x: np.ndarray, kinks, gap=0.05) -> np.ndarray:
    """Moves values off the non-differentiable points so finite differences are meaningful."""
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, gap, -gap) * 2
    return x


def sample(rng, shape, scale=3.0, kinks=()):
    return away_from((rng.standard_normal(shape) * scale).astype(np.float32), kinks)


def numeric_grad(f, x: np.ndarray, r: np.ndarray, eps=1e-4) -> np.ndarray:
    """d/dx of sum(f(x) * r), central differences in float64."""
    x = x.astype(np.float64)
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float((f(x) * r).sum())
        flat[i] = old - eps
        down = float((f(x) * r).sum())
        flat[i] = old
        gf[i] = (up - down) / (2 * eps)
    return g


def fd_layer_check(layer, x, rng, eps=2e-3, rtol=3e-2, atol=3e-3, weight=None):
    """Finite differences of sum(layer(x) * r) on our own float32 forward, against backward."""
    y = layer.forward_train(x.copy(), training=True)
    r = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(r.copy(), need_input_grad=True)

    def loss_at(xv):
        return float((layer.call(xv.astype(np.float32)).astype(np.float64) * r).sum())

    num = np.zeros(x.shape)
    xf = x.astype(np.float64)
    for i in np.ndindex(x.shape):
        old = xf[i]
        xf[i] = old + eps
        up = loss_at(xf)
        xf[i] = old - eps
        down = loss_at(xf)
        xf[i] = old
        num[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(dx, num, rtol=rtol, atol=atol)
    if weight is not None:
        var, grad = weight
        num_w = np.zeros(var.shape)
        for i in np.ndindex(var.shape):
            old = var.value[i]
            var.value[i] = old + eps
            up = loss_at(x)
            var.value[i] = old - eps
            down = loss_at(x)
            var.value[i] = old
            num_w[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(grad, num_w, rtol=rtol, atol=atol)
    return dx


# --- activations ----------------------------------------------------------------------------------
def test_every_kernel_activation_has_a_reference():
    assert set(ops.ACTIVATIONS) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_forward_matches_numpy(rng, name):
    x = sample(rng, (7, 9))
    want = REFERENCES[name](x.astype(np.float64))
    got = ops.activation_forward(name, x.copy())
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    # The out-of-place form (used in training) gives the same bits as the in-place one.
    out = np.empty_like(x)
    ops.activation_forward_out(name, x, out)
    assert np.array_equal(out, got)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_activation_gradient_matches_finite_differences(rng, name):
    x = sample(rng, (5, 6), kinks=KINKS.get(name, ()))
    y = ops.activation_forward(name, x.copy())
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dz = np.empty_like(x)
    z = x if name in ops.ACTIVATIONS_NEEDING_Z else None
    ops.activation_backward_z(name, z, y, dy, dz)
    num = numeric_grad(REFERENCES[name], x, dy.astype(np.float64))
    np.testing.assert_allclose(dz, num, rtol=1e-4, atol=1e-4)


def test_activations_needing_z_refuse_to_run_without_it(rng):
    x = sample(rng, (2, 3))
    for name in ops.ACTIVATIONS_NEEDING_Z:
        with pytest.raises(ValueError, match="pre-activation"):
            ops.activation_backward_z(name, None, x, x, np.empty_like(x))
        with pytest.raises(ValueError, match="needs the pre-activation"):
            ops.activation_backward(name, x, x, np.empty_like(x))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_dense_with_every_activation_matches_finite_differences(rng, name):
    layer = L.Dense(4, activation=name)
    x = sample(rng, (3, 5), scale=1.0)
    layer(x)
    layer.kernel.assign(rng.standard_normal((5, 4)).astype(np.float32))
    layer.bias.assign(rng.standard_normal(4).astype(np.float32) * 0.1)
    y = layer.forward_train(x, training=True)
    np.testing.assert_allclose(layer.call(x), y, rtol=1e-6, atol=1e-6)
    z = x.astype(np.float64) @ layer.kernel.numpy() + layer.bias.numpy()
    np.testing.assert_allclose(y, REFERENCES[name](z), rtol=1e-5, atol=1e-5)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(g, need_input_grad=True).copy()
    d_kernel = layer._grad_buffers()[0].copy()

    def f_x(xv):
        return REFERENCES[name](xv @ layer.kernel.numpy().astype(np.float64) + layer.bias.numpy())

    def f_w(wv):
        return REFERENCES[name](x.astype(np.float64) @ wv + layer.bias.numpy())
    if name not in KINKS:
        np.testing.assert_allclose(dx, numeric_grad(f_x, x, g), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(d_kernel, numeric_grad(f_w, layer.kernel.numpy(), g),
                                   rtol=1e-3, atol=1e-3)


def test_functions_and_parameters_match_numpy(rng):
    x = sample(rng, (4, 6), kinks=[0.0, 0.5, 1.0])
    xd = x.astype(np.float64)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)  # noqa: E731
    close(activations.relu(x), np.maximum(xd, 0))
    close(activations.relu(x, alpha=0.1), np.where(xd > 0, xd, 0.1 * xd))
    close(activations.relu(x, negative_slope=0.1), np.where(xd > 0, xd, 0.1 * xd))
    close(activations.relu(x, max_value=1.0), np.clip(xd, 0, 1))
    close(activations.relu(x, threshold=0.5), np.where(xd > 0.5, xd, 0))
    close(activations.relu(x, alpha=0.3, max_value=2.0, threshold=0.5),
          np.clip(np.where(xd > 0.5, xd, 0), 0, 2) - 0.3 * np.maximum(0.5 - xd, 0))
    close(activations.leaky_relu(x), np.where(xd > 0, xd, 0.2 * xd))
    close(activations.leaky_relu(x, alpha=0.5), np.where(xd > 0, xd, 0.5 * xd))
    close(activations.elu(x, alpha=2.0), np.where(xd > 0, xd, 2 * np.expm1(xd)))
    close(activations.gelu(x), REFERENCES["gelu"](xd))
    close(activations.gelu(x, approximate=True), REFERENCES["gelu_approximate"](xd))
    close(activations.softmax(x, axis=0), _softmax(xd, axis=0))
    close(activations.log_softmax(x, axis=0), np.log(_softmax(xd, axis=0)))
    x3 = sample(rng, (2, 3, 4))
    close(activations.softmax(x3, axis=1), _softmax(x3.astype(np.float64), axis=1))
    close(activations.hard_sigmoid(np.array([-3.0, -1.0, 0.0, 1.0, 3.0], np.float32)),
          [0.0, 0.3, 0.5, 0.7, 1.0])
    assert activations.sigmoid(np.float32(0.0)) == 0.5
    close(activations.swish(x), activations.silu(x))


def test_get_serialize_deserialize():
    for name in ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid",
                 "hard_sigmoid", "tanh", "softplus", "softsign", "softmax", "log_softmax",
                 "exponential", "linear", "mish", "hard_silu", "hard_swish", "log_sigmoid"):
        fn = activations.get(name)
        assert fn is getattr(activations, name) and activations.get(fn) is fn
        assert activations.serialize(fn) == name == activations.serialize(name)
        assert activations.deserialize(name) is fn
        assert activations.name_of(fn) == name
    assert activations.get(None) is activations.linear
    assert activations.get({"class_name": "function", "config": "gelu"}) is activations.gelu
    assert activations.deserialize("mine", custom_objects={"mine": abs}) is abs
    assert activations.get(abs) is abs  # any callable, as Keras
    assert keras.activations.gelu is activations.gelu
    with pytest.raises(ValueError, match=r"Unknown activation function 'nope'.*'gelu'.*'relu'"):
        activations.get("nope")
    with pytest.raises(ValueError, match="cannot be serialized"):
        activations.serialize(abs)
    with pytest.raises(TypeError):
        activations.get(3)
    with pytest.raises(ValueError, match="Unknown activation function 'nope'"):
        L.Dense(3, activation="nope")
    dense = L.Dense(3, activation=activations.gelu)
    assert dense.get_config()["activation"] == "gelu"


# --- elementwise activation layers ---------------------------------------------------------------
def _prelu_ref(x, alpha):
    return np.where(x > 0, x, alpha * x)


LAYER_CASES = [
    ("relu", lambda: L.ReLU(), lambda x: np.maximum(x, 0), [0.0]),
    ("relu_max", lambda: L.ReLU(max_value=1.5), lambda x: np.clip(x, 0, 1.5), [0.0, 1.5]),
    ("relu_all", lambda: L.ReLU(max_value=2.0, negative_slope=0.2, threshold=0.5),
     lambda x: np.clip(np.where(x > 0.5, x, 0), 0, 2) - 0.2 * np.maximum(0.5 - x, 0), [0.5, 2.0]),
    ("leaky", lambda: L.LeakyReLU(), lambda x: np.where(x > 0, x, 0.3 * x), [0.0]),
    ("leaky_k3", lambda: L.LeakyReLU(negative_slope=0.1), lambda x: np.where(x > 0, x, 0.1 * x), [0.0]),
    ("elu", lambda: L.ELU(alpha=0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(x)), [0.0]),
    ("softmax", lambda: L.Softmax(), _softmax, []),
    ("softmax_axis1", lambda: L.Softmax(axis=1), lambda x: _softmax(x, axis=1), []),
    ("activation_gelu", lambda: L.Activation("gelu"), REFERENCES["gelu"], []),
    ("activation_softplus", lambda: L.Activation(activations.softplus), _softplus, []),
    ("activation_log_softmax", lambda: L.Activation("log_softmax"), REFERENCES["log_softmax"], []),
    ("activation_relu6", lambda: L.Activation("relu6"), REFERENCES["relu6"], [0.0, 6.0]),
    ("rescaling", lambda: L.Rescaling(0.5, offset=-1.0), lambda x: x * 0.5 - 1.0, []),
    ("flatten", lambda: L.Flatten(), lambda x: x.reshape(x.shape[0], -1), []),
    ("flatten_cf", lambda: L.Flatten(data_format="channels_first"),
     lambda x: np.moveaxis(x, 1, -1).reshape(x.shape[0], -1), []),
    ("reshape", lambda: L.Reshape((-1, 2)), lambda x: x.reshape(x.shape[0], -1, 2), []),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_forward_and_finite_difference_gradient(rng, case):
    _, make, ref, kinks = case
    layer = make()
    x = sample(rng, (3, 4, 2), scale=2.0, kinks=kinks)
    y = layer(x)
    np.testing.assert_allclose(y, ref(x.astype(np.float64)), rtol=2e-6, atol=2e-6)
    assert tuple(layer.compute_output_shape((None,) + x.shape[1:])) == (None,) + y.shape[1:]
    fd_layer_check(layer, x, rng)


@pytest.mark.parametrize("shared_axes", [None, [1], [1, 2]])
def test_prelu_forward_and_gradients(rng, shared_axes):
    layer = L.PReLU(shared_axes=shared_axes)
    x = sample(rng, (4, 3, 2), kinks=[0.0])
    layer(x)
    want_shape = {None: (3, 2), (1,): (1, 2), (1, 2): (1, 1)}[tuple(shared_axes or ()) or None]
    assert layer.alpha.shape == want_shape
    layer.alpha.assign(rng.uniform(0.1, 0.5, want_shape).astype(np.float32))
    np.testing.assert_allclose(layer(x), _prelu_ref(x, layer.alpha.numpy()), rtol=1e-6)
    y = layer.forward_train(x, training=True)
    r = rng.standard_normal(y.shape).astype(np.float32)
    layer.backward(r, need_input_grad=True)
    d_alpha = layer._grad_buffers()[0].copy()
    # alpha's gradient: sum of dy * min(x, 0) over the batch and the shared axes
    want = (r * np.minimum(x, 0)).sum(axis=(0,) + tuple(shared_axes or ()), keepdims=True)[0]
    np.testing.assert_allclose(d_alpha, want.reshape(want_shape), rtol=1e-5, atol=1e-6)
    # and by finite differences
    layer2 = L.PReLU(shared_axes=shared_axes)
    layer2(x)
    layer2.alpha.assign(layer.alpha.numpy())
    y = layer2.forward_train(x, training=True)
    r = rng.standard_normal(y.shape).astype(np.float32)

    def loss(a):
        return float((_prelu_ref(x.astype(np.float64), a) * r).sum())
    layer2.backward(r)
    num = np.zeros(want_shape)
    a0 = layer2.alpha.numpy().astype(np.float64)
    for i in np.ndindex(want_shape):
        up, down = a0.copy(), a0.copy()
        up[i] += 1e-4
        down[i] -= 1e-4
        num[i] = (loss(up) - loss(down)) / 2e-4
    np.testing.assert_allclose(layer2._grad_buffers()[0], num, rtol=1e-4, atol=1e-4)
    fd_layer_check(layer2, x, rng)


def test_prelu_weights_and_errors(rng):
    layer = L.PReLU(name="p")
    layer(np.zeros((2, 5), np.float32))
    assert [w.name for w in layer.weights] == ["p/alpha:0"]
    assert layer.trainable_weights == layer.weights
    with pytest.raises(ValueError, match="incompatible"):
        layer(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="must be known"):
        L.PReLU().build((None, None, 3))
    L.PReLU(shared_axes=1).build((None, None, 3))


# --- merges ---------------------------------------------------------------------------------------
MERGES = [
    (L.Add, lambda xs: sum(xs)),
    (L.Subtract, lambda xs: xs[0] - xs[1]),
    (L.Multiply, lambda xs: np.prod(xs, axis=0)),
    (L.Average, lambda xs: sum(xs) / len(xs)),
    (L.Maximum, lambda xs: np.max(xs, axis=0)),
    (L.Minimum, lambda xs: np.min(xs, axis=0)),
]


@pytest.mark.parametrize("cls, ref", MERGES, ids=[c[0].__name__ for c in MERGES])
@pytest.mark.parametrize("k", [2, 3])
def test_merge_forward_and_gradients(rng, cls, ref, k):
    if cls is L.Subtract and k != 2:
        with pytest.raises(ValueError, match="exactly 2 inputs"):
            cls()([np.zeros((2, 3), np.float32)] * k)
        return
    xs = [sample(rng, (3, 2, 2)) for _ in range(k)]
    layer = cls()
    assert layer._multi_input
    y = layer(xs)
    np.testing.assert_allclose(y, ref([x.astype(np.float64) for x in xs]), rtol=1e-6, atol=1e-6)
    assert layer.compute_output_shape([(None, 2, 2)] * k) == (None, 2, 2)
    out = layer.forward_train(xs, training=True)
    np.testing.assert_array_equal(out, y)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dxs = layer.backward(g, need_input_grad=True)
    assert len(dxs) == k and all(d.shape == x.shape for d, x in zip(dxs, xs))
    for i in range(k):
        def f(xi, i=i):
            return ref([xi if j == i else xs[j].astype(np.float64) for j in range(k)])
        np.testing.assert_allclose(dxs[i], numeric_grad(f, xs[i], g), rtol=1e-4, atol=1e-4)
    assert layer.backward(g, need_input_grad=False) == [None] * k


def test_maximum_ties_go_to_the_first_input():
    a = np.array([[1.0, 2.0]], np.float32)
    layer = L.Maximum()
    layer.forward_train([a, a.copy()], training=True)
    da, db = layer.backward(np.ones_like(a))
    assert da.tolist() == [[1.0, 1.0]] and db.tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concatenate_forward_and_gradients(rng, axis):
    shapes = {-1: [(3, 2, 1), (3, 2, 4)], 1: [(3, 1, 2), (3, 3, 2)], 2: [(3, 2, 2), (3, 2, 3)]}[axis]
    xs = [sample(rng, s) for s in shapes]
    layer = L.Concatenate(axis=axis)
    y = layer(xs)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=axis))
    in_shapes = [(None,) + s[1:] for s in shapes]
    assert layer.compute_output_shape(in_shapes) == (None,) + y.shape[1:]
    layer.forward_train(xs, training=True)
    g = rng.standard_normal(y.shape).astype(np.float32)
    dxs = layer.backward(g)
    splits = np.split(g, np.cumsum([s[axis] for s in shapes])[:-1], axis=axis)
    for d, want in zip(dxs, splits):
        np.testing.assert_array_equal(d, want)
    assert L.concatenate(xs, axis=axis).shape == y.shape


def test_merge_errors_and_masks():
    with pytest.raises(ValueError, match="incompatible shapes"):
        L.Add()([np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match="matching shapes except for the concatenation axis"):
        L.Concatenate()([np.zeros((2, 3, 1), np.float32), np.zeros((2, 4, 1), np.float32)])
    with pytest.raises(ValueError, match="list of inputs"):
        L.Add().build((None, 3))
    a = np.ones((2, 3), np.float32)
    m1 = np.array([[True, False, True], [True, True, True]])
    m2 = np.array([[True, True, False], [True, True, True]])
    assert L.Add().compute_mask([a, a], [m1, m2]).tolist() == (m1 & m2).tolist()
    assert L.Add().compute_mask([a, a], [None, None]) is None
    seq = np.ones((2, 3, 4), np.float32)
    mask = L.Concatenate(axis=1).compute_mask([seq, seq], [m1, None])
    assert mask.shape == (2, 6) and mask[0].tolist() == [True, False, True, True, True, True]
    assert L.add([a, a]).tolist() == (2 * a).tolist()


# --- shape and rescaling --------------------------------------------------------------------------
def test_reshape_and_flatten_shapes_and_errors():
    assert L.Reshape((3, -1)).compute_output_shape((None, 12)) == (None, 3, 4)
    assert L.Reshape((3, -1)).compute_output_shape((None, None)) == (None, 3, None)
    assert L.Flatten().compute_output_shape((None, 3, 4)) == (None, 12)
    assert L.Flatten().compute_output_shape((None, None, 4)) == (None, None)
    assert L.Flatten()(np.zeros((5,), np.float32)).shape == (5, 1)
    with pytest.raises(ValueError, match="total size of the new array must be unchanged"):
        L.Reshape((5, -1))(np.zeros((2, 12), np.float32))
    with pytest.raises(ValueError, match="total size"):
        L.Reshape((5, 2)).compute_output_shape((None, 12))
    with pytest.raises(ValueError, match="at most one unknown"):
        L.Reshape((-1, -1))
    with pytest.raises(ValueError, match="data_format"):
        L.Flatten(data_format="nchw")


def test_rescaling_with_per_channel_arrays(rng):
    x = sample(rng, (2, 3))
    layer = L.Rescaling([1.0, 2.0, 3.0], offset=[0.5, 0.0, -0.5])
    np.testing.assert_allclose(layer(x), x * [1, 2, 3] + [0.5, 0, -0.5], rtol=1e-6)
    layer.forward_train(x, training=True)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), np.ones_like(x) * [1, 2, 3])
    assert layer.get_config()["scale"] == [1.0, 2.0, 3.0]


def test_parameter_errors_are_keras_worded():
    with pytest.raises(ValueError, match="max_value of a ReLU layer cannot be a negative value"):
        L.ReLU(max_value=-1)
    with pytest.raises(ValueError, match="negative_slope"):
        L.ReLU(negative_slope=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        L.ReLU(threshold=None)
    with pytest.raises(ValueError, match="alpha"):
        L.LeakyReLU(alpha=None)
    with pytest.raises(ValueError, match="rate"):
        L.AlphaDropout(1.5)
    with pytest.raises(ValueError, match="stddev"):
        L.GaussianNoise(-1.0)


# --- noise ----------------------------------------------------------------------------------------
def test_noise_layers_are_identity_in_inference(rng):
    x = sample(rng, (4, 5))
    for layer in (L.GaussianNoise(0.5), L.GaussianDropout(0.3), L.AlphaDropout(0.3)):
        assert np.array_equal(layer(x), x) and np.array_equal(layer(x, training=False), x)
        assert layer.rng_offset == 0


def test_normal_draws_are_standard_and_reproducible():
    a = ops.normal_fill(np.empty(200_000, np.float32), seed=7, offset=0)
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1) < 0.01
    assert abs(((a > 1.96) | (a < -1.96)).mean() - 0.05) < 0.003
    b = ops.normal_fill(np.empty(1000, np.float32), seed=7, offset=123)
    assert np.array_equal(b, a[123:1123])  # a position determines its draw, whatever the split
    assert not np.array_equal(ops.normal_fill(np.empty(1000, np.float32), seed=8, offset=123), b)


def test_gaussian_noise_statistics_offset_and_gradient(rng):
    x = np.zeros((400, 250), np.float32)
    layer = L.GaussianNoise(0.5, seed=3)
    y = layer(x, training=True)
    assert abs(y.std() - 0.5) < 0.01 and abs(y.mean()) < 0.01
    assert layer.rng_offset == x.size
    again = L.GaussianNoise(0.5, seed=3)(x, training=True)
    assert np.array_equal(again, y)
    y2 = layer.forward_train(x, training=True)
    assert not np.array_equal(y2, y) and layer.rng_offset == 2 * x.size
    g = rng.standard_normal(x.shape).astype(np.float32)
    assert np.array_equal(layer.backward(g), g)


def test_gaussian_dropout_statistics_and_gradient(rng):
    x = np.ones((400, 250), np.float32)
    layer = L.GaussianDropout(0.2, seed=5)
    y = layer.forward_train(x, training=True)
    assert abs(y.mean() - 1) < 0.01 and abs(y.std() - math.sqrt(0.2 / 0.8)) < 0.01
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_array_equal(layer.backward(g), g * y)  # x = 1: y is the noise itself
    assert layer.forward_train(x, training=False) is not None and not layer._on


def test_alpha_dropout_keeps_selu_statistics(rng):
    # SELU outputs of standard normal inputs have mean 0, variance 1; AlphaDropout keeps both.
    x = activations.selu(rng.standard_normal((500, 400)).astype(np.float32))
    layer = L.AlphaDropout(0.2, seed=11)
    y = layer.forward_train(x, training=True)
    assert abs(y.mean() - x.mean()) < 0.01 and abs(y.var() - x.var()) < 0.02
    mask = layer._ws("mask", x.shape, np.uint8)
    assert abs(mask.mean() - 0.8) < 0.005
    alpha_p = -SELU_ALPHA * SELU_SCALE
    a = ((1 - 0.2) * (1 + 0.2 * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * 0.2
    np.testing.assert_allclose(y, a * np.where(mask == 1, x, alpha_p) + b, rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(x.shape).astype(np.float32)
    np.testing.assert_allclose(layer.backward(g), g * a * mask, rtol=1e-6)


# --- configs --------------------------------------------------------------------------------------
CONFIG_LAYERS = [
    lambda: L.Activation("gelu"), lambda: L.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.5),
    lambda: L.LeakyReLU(alpha=0.1), lambda: L.PReLU(alpha_initializer="ones", shared_axes=[1]),
    lambda: L.ELU(alpha=0.5), lambda: L.Softmax(axis=1), lambda: L.Flatten(),
    lambda: L.Reshape((2, -1)), lambda: L.Rescaling(1 / 255.0, offset=-1.0),
    lambda: L.Concatenate(axis=1), L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum,
    lambda: L.GaussianNoise(0.2, seed=4), lambda: L.GaussianDropout(0.3, seed=2),
    lambda: L.AlphaDropout(0.1, seed=1),
]


@pytest.mark.parametrize("make", CONFIG_LAYERS)
def test_config_round_trip(make):
    layer = make()
    config = layer.get_config()
    clone = type(layer).from_config(dict(config, name=config["name"] + "_2"))
    assert {k: v for k, v in clone.get_config().items() if k != "name"} == \
        {k: v for k, v in config.items() if k != "name"}
    from fastckpt.saving import serialization
    assert serialization.BUILTIN_LAYERS[type(layer).__name__] is type(layer)


def test_keras3_and_tf_keras_spellings():
    assert L.LeakyReLU.from_config({"negative_slope": 0.2}).alpha == pytest.approx(0.2)
    assert L.LeakyReLU().alpha == pytest.approx(0.3)
    assert L.ReLU().get_config()["max_value"] is None


# --- in a model -----------------------------------------------------------------------------------
def _model(mid, *more):
    return keras.Sequential([L.Dense(16, input_shape=(8,)), mid, *more,
                             L.Dense(3, activation="softmax")])


MODEL_MIDDLES = {
    "prelu": lambda: [L.PReLU()],
    "gelu": lambda: [L.Activation("gelu")],
    "relu_leaky_elu": lambda: [L.ReLU(max_value=3.0), L.Dense(8), L.LeakyReLU(), L.ELU()],
    "reshape_flatten_softmax": lambda: [L.Reshape((4, 4)), L.Softmax(axis=1), L.Flatten()],
    "noise": lambda: [L.GaussianNoise(0.1), L.GaussianDropout(0.1), L.Activation("selu"),
                      L.AlphaDropout(0.1), L.Rescaling(0.5, offset=0.1)],
}


@pytest.mark.parametrize("which", sorted(MODEL_MIDDLES))
def test_trains_and_saves_in_a_sequential_model(tmp_path, rng, which):
    x = rng.standard_normal((96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    model = _model(*MODEL_MIDDLES[which]())
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    loss = model.fit(x, y, epochs=6, batch_size=16, verbose=0).history["loss"]
    assert loss[-1] < loss[0]
    want = model.predict(x, verbose=0)
    if which == "prelu":
        assert np.any(model.layers[1].alpha.numpy() != 0)  # alpha learned

    model.save_weights(str(tmp_path / "ckpt"))
    other = _model(*MODEL_MIDDLES[which]())
    other.load_weights(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(other.predict(x, verbose=0), want)
    for name in ("m.h5", "m.keras"):
        model.save(str(tmp_path / name))
        back = keras.models.load_model(str(tmp_path / name))
        assert [type(a).__name__ for a in back.layers] == [type(a).__name__ for a in model.layers]
        np.testing.assert_array_equal(back.predict(x, verbose=0), want)


def test_gelu_mlp_fits_layer_by_layer_and_fused_alike(rng, monkeypatch):
    x = rng.standard_normal((120, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    results = []
    for fused in ("1", "0"):
        monkeypatch.setenv("FASTCKPT_FUSED", fused)
        keras.utils.set_random_seed(1)
        model = keras.Sequential([L.Dense(16, activation="gelu", input_shape=(8,)),
                                  L.Dense(8, activation="silu"), L.Dense(2)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=2, batch_size=32, verbose=0)
        results.append(model.get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("fmt", ["m.h5", "m.keras", "m_dir"])
def test_noise_layers_resume_bit_for_bit(tmp_path, rng, fmt):
    """rng_seed / rng_offset of every random layer are saved: 1 epoch + save + load + 1 epoch
    equals 2 epochs in one go."""
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)

    def make():
        keras.utils.set_random_seed(9)
        model = _model(*MODEL_MIDDLES["noise"]())
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model
    straight = make()
    straight.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
    first = make()
    first.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    assert [layer.rng_offset for layer in first.layers if hasattr(layer, "rng_offset")] == \
        [4 * 16 * 16] * 3
    first.save(str(tmp_path / fmt))
    resumed = keras.models.load_model(str(tmp_path / fmt))
    resumed.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_vectorized_activations_keep_relative_accuracy(name):
    """gelu and silu run on a branch-free exp/erfc (SIMD loops): relative error stays small for
    negative inputs too, where 1 + erf(x) would cancel."""
    z = np.linspace(-6, 6, 4001, dtype=np.float32).reshape(1, -1)
    zd = z.astype(np.float64)
    cdf = 0.5 * np.vectorize(math.erfc)(-zd / math.sqrt(2))
    if name == "gelu":
        want, dwant = zd * cdf, cdf + zd * np.exp(-zd * zd / 2) / math.sqrt(2 * math.pi)
    else:
        s = 1 / (1 + np.exp(-zd))
        want, dwant = zd * s, s * (1 + zd * (1 - s))
    y = np.empty_like(z)
    ops.activation_forward_out(name, z, y)
    nz = np.abs(want) > 1e-30
    assert (np.abs(y - want)[nz] / np.abs(want[nz])).max() < 1e-5
    dz = np.empty_like(z)
    ops.activation_backward_z(name, z, y, np.ones_like(z), dz)
    np.testing.assert_allclose(dz, dwant, rtol=1e-5, atol=1e-6)
