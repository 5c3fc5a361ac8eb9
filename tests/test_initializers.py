"""keras.initializers: distributions, scales, seeds, names and configs (tf_keras comparisons are in
tests/interop/test_regularizers_interop.py)."""

import math

import numpy as np
import pytest

from fastckpt import backend, initializers as inits
from fastckpt import keras

RANDOM = [inits.GlorotUniform, inits.GlorotNormal, inits.HeUniform, inits.HeNormal,
          inits.LecunUniform, inits.LecunNormal, inits.RandomNormal, inits.RandomUniform,
          inits.TruncatedNormal, inits.VarianceScaling, inits.Orthogonal]

# (class, variance as a function of (fan_in, fan_out), uniform?)
SCALED = [
    (inits.GlorotUniform, lambda i, o: 2.0 / (i + o), True),
    (inits.GlorotNormal, lambda i, o: 2.0 / (i + o), False),
    (inits.HeUniform, lambda i, o: 2.0 / i, True),
    (inits.HeNormal, lambda i, o: 2.0 / i, False),
    (inits.LecunUniform, lambda i, o: 1.0 / i, True),
    (inits.LecunNormal, lambda i, o: 1.0 / i, False),
]


@pytest.mark.parametrize("cls", RANDOM)
def test_same_seed_same_values_other_seed_other_values(cls):
    a = cls(seed=7)((40, 30))
    assert a.dtype == np.float32 and a.shape == (40, 30)
    np.testing.assert_array_equal(a, cls(seed=7)((40, 30)))
    init = cls(seed=7)
    np.testing.assert_array_equal(init((40, 30)), init((40, 30)))  # stateless, as tf_keras
    assert not np.array_equal(a, cls(seed=8)((40, 30)))


@pytest.mark.parametrize("cls", RANDOM)
def test_unseeded_draws_follow_the_global_seed(cls):
    backend.set_random_seed(5)
    a, b = cls()((20, 10)), cls()((20, 10))
    assert not np.array_equal(a, b)  # each call draws a fresh seed
    backend.set_random_seed(5)
    np.testing.assert_array_equal(a, cls()((20, 10)))


@pytest.mark.parametrize("cls,variance,uniform", SCALED)
def test_variance_scaling_presets_have_keras_statistics(cls, variance, uniform):
    shape = (300, 200)
    x = cls(seed=1)(shape).astype(np.float64)
    want = variance(*shape)
    assert abs(x.mean()) < 0.01 * math.sqrt(want) * 10
    assert x.var() == pytest.approx(want, rel=0.02)
    if uniform:
        assert np.abs(x).max() <= math.sqrt(3 * want) + 1e-7
    else:  # truncated at two (uncorrected) standard deviations
        assert np.abs(x).max() <= 2 * math.sqrt(want) / inits.TRUNCATED_STDDEV + 1e-6


def test_truncated_normal_redraws_instead_of_clipping():
    x = inits.TruncatedNormal(mean=1.0, stddev=0.5, seed=3)((400, 250)).astype(np.float64)
    assert x.min() >= 0.0 and x.max() <= 2.0
    # Clipping would pile ~4500 values up on the bounds; redrawing leaves none there.
    assert np.sum(np.abs(x - 1.0) > 1.0 - 1e-6) < 3
    assert x.std() == pytest.approx(0.5 * inits.TRUNCATED_STDDEV, rel=0.01)
    assert x.mean() == pytest.approx(1.0, abs=0.005)


def test_variance_scaling_distributions_and_modes():
    shape = (3, 3, 40, 50)  # a conv kernel: receptive field 9
    fan_in, fan_out = 9 * 40, 9 * 50
    for mode, n in (("fan_in", fan_in), ("fan_out", fan_out), ("fan_avg", (fan_in + fan_out) / 2)):
        for dist in ("truncated_normal", "untruncated_normal", "uniform"):
            x = inits.VarianceScaling(2.0, mode, dist, seed=2)(shape).astype(np.float64)
            assert x.var() == pytest.approx(2.0 / n, rel=0.03), (mode, dist)
    untrunc = inits.VarianceScaling(1.0, distribution="untruncated_normal", seed=4)((500, 400))
    assert np.abs(untrunc).max() > 2.5 * math.sqrt(1 / 500)  # tails are kept
    assert inits.VarianceScaling(distribution="normal").distribution == "truncated_normal"
    with pytest.raises(ValueError, match="scale"):
        inits.VarianceScaling(scale=0)
    with pytest.raises(ValueError, match="mode"):
        inits.VarianceScaling(mode="fan_sum")
    with pytest.raises(ValueError, match="distribution"):
        inits.VarianceScaling(distribution="cauchy")


def test_uniform_and_normal_parameters():
    x = inits.RandomUniform(minval=2.0, maxval=3.0, seed=1)((1000,))
    assert x.min() >= 2.0 and x.max() < 3.0 and x.mean() == pytest.approx(2.5, abs=0.03)
    x = inits.RandomNormal(mean=-1.0, stddev=0.1, seed=1)((5000,)).astype(np.float64)
    assert x.mean() == pytest.approx(-1.0, abs=0.01) and x.std() == pytest.approx(0.1, rel=0.05)
    assert inits.RandomUniform(0, 5, seed=1)((10,), dtype="int32").dtype == np.int32


def test_orthogonal_identity_constant_zeros_ones():
    for shape in ((6, 4), (4, 6), (2, 3, 5)):
        q = inits.Orthogonal(gain=2.0, seed=1)(shape).astype(np.float64)
        flat = q.reshape(-1, shape[-1])
        gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
        np.testing.assert_allclose(gram, 4.0 * np.eye(gram.shape[0]), atol=1e-5)
    with pytest.raises(ValueError, match="two-dimensional"):
        inits.Orthogonal()((3,))
    np.testing.assert_array_equal(inits.Identity(gain=3.0)((2, 3)), [[3, 0, 0], [0, 3, 0]])
    with pytest.raises(ValueError, match="2D"):
        inits.Identity()((2, 2, 2))
    np.testing.assert_array_equal(inits.Constant(0.5)((2, 2)), np.full((2, 2), 0.5, np.float32))
    np.testing.assert_array_equal(inits.Constant([1, 2, 3, 4])((2, 2)), [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="do not fill"):
        inits.Constant([1, 2, 3])((2, 2))
    with pytest.raises(TypeError, match="number"):
        inits.Constant("a")
    assert inits.Zeros()((2,), "int64").dtype == np.int64
    np.testing.assert_array_equal(inits.Ones()((3,)), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="floating point"):
        inits.GlorotUniform()((2, 2), dtype="int32")


ALL_NAMES = ["zeros", "ones", "constant", "identity", "random_normal", "random_uniform",
             "truncated_normal", "variance_scaling", "orthogonal", "glorot_uniform",
             "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
             "normal", "uniform", "one", "zero", "OrthogonalInitializer", "IdentityInitializer"]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_names_resolve_and_configs_round_trip(name):
    init = inits.get(name)
    config = inits.serialize(init)
    back = inits.deserialize(config)
    assert type(back) is type(init) and back.get_config() == init.get_config()
    keras3 = {"module": "keras.initializers", "registered_name": None, **config}
    assert type(inits.get(keras3)) is type(init)


def test_config_keys_are_tf_keras():
    assert inits.GlorotUniform(seed=3).get_config() == {"seed": 3}
    assert inits.VarianceScaling(2.0, "fan_out", "uniform", 1).get_config() == {
        "scale": 2.0, "mode": "fan_out", "distribution": "uniform", "seed": 1}
    assert inits.RandomUniform().get_config() == {"minval": -0.05, "maxval": 0.05, "seed": None}
    assert inits.TruncatedNormal().get_config() == {"mean": 0.0, "stddev": 0.05, "seed": None}
    assert inits.Orthogonal().get_config() == {"gain": 1.0, "seed": None}
    assert inits.Identity().get_config() == {"gain": 1.0}
    assert inits.Constant(2).get_config() == {"value": 2}
    # Keras 3 extras at their defaults, and tf_keras' 'dtype', are accepted.
    assert inits.get({"class_name": "GlorotUniform",
                      "config": {"seed": None, "input_axes": None, "output_axes": None}})
    assert inits.get({"class_name": "Zeros", "config": {"dtype": "float32"}})
    assert inits.Constant.from_config({"value": {"class_name": "__numpy__",
                                                 "config": {"value": [1.0, 2.0],
                                                            "dtype": "float32"}}}).value == [1.0, 2.0]


def test_unknown_names_and_bad_configs():
    with pytest.raises(ValueError, match="Unknown initializer 'glorot'.*'glorot_uniform'"):
        inits.get("glorot")
    with pytest.raises(TypeError, match="seed"):
        inits.GlorotUniform(seed="1")
    with pytest.raises(TypeError, match="mean"):
        inits.RandomNormal(mean=None)
    with pytest.raises(TypeError):
        inits.get({"class_name": "HeNormal", "config": {"scale": 3}})
    assert inits.get(None) is None


def test_callable_initializers_and_layer_defaults():
    fn = lambda shape, dtype=None: np.full(shape, 7, dtype)  # noqa: E731
    assert inits.get(fn) is fn
    layer = keras.layers.Dense(2, kernel_initializer=fn, bias_initializer="ones")
    layer(np.zeros((1, 3), np.float32))
    np.testing.assert_array_equal(layer.kernel.numpy(), np.full((3, 2), 7, np.float32))
    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(2, np.float32))
    # A seeded kernel initializer gives the same layer in every run.
    a = keras.layers.Dense(4, kernel_initializer=keras.initializers.LecunNormal(seed=9))
    b = keras.layers.Dense(4, kernel_initializer="lecun_normal")
    a(np.zeros((1, 3), np.float32))
    b(np.zeros((1, 3), np.float32))
    np.testing.assert_array_equal(a.kernel.numpy(), inits.LecunNormal(seed=9)((3, 4)))
    assert keras.initializers.he_normal is inits.HeNormal


def _one_draw_reference(name, kwargs, shape, dtype):
    """What the initializer gave when it drew the whole shape in float64 at once, then cast."""
    init = getattr(inits, name)(seed=11, **kwargs)
    rng = np.random.default_rng(11)
    if name == "RandomNormal":
        x = rng.normal(init.mean, init.stddev, size=shape)
    elif name == "RandomUniform":
        x = rng.uniform(init.minval, init.maxval, size=shape)
    elif name == "TruncatedNormal":
        x = rng.standard_normal(size=shape)
        bad = np.abs(x) > 2.0
        while bad.any():
            x[bad] = rng.standard_normal(size=int(bad.sum()))
            bad = np.abs(x) > 2.0
        x = x * init.stddev + init.mean
    else:
        fan_in, fan_out = shape[0], shape[1]
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        x = rng.uniform(-limit, limit, size=shape)
    return x.astype(dtype)


@pytest.mark.parametrize("name,kwargs", [("GlorotUniform", {}), ("RandomUniform", {"minval": -0.3, "maxval": 0.8}),
                                         ("RandomNormal", {"mean": 0.2, "stddev": 1.5}),
                                         ("TruncatedNormal", {"mean": -0.1, "stddev": 0.9})])
def test_chunked_draws_equal_one_draw_bit_for_bit(name, kwargs):
    # The draws are made in chunks (memory); the values are those of one draw of the whole shape.
    shape = (inits._CHUNK + 123, 3)
    for dtype in ("float32", "float64"):
        got = getattr(inits, name)(seed=11, **kwargs)(shape, dtype)
        want = _one_draw_reference(name, kwargs, shape, dtype)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal", "random_normal", "lecun_uniform"])
def test_random_initializers_take_no_full_size_float64_transient(init):
    # Building the tutorial's 784x512 kernel once drew 3.2 MB of float64 next to the 1.6 MB result:
    # the peak RSS of model building. Now the float64 draws exist one chunk at a time.
    import tracemalloc

    fn = inits.get(init)
    fn((8, 8), "float32")
    tracemalloc.start()
    try:
        out = fn((784, 512), "float32")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes == 784 * 512 * 4
    # Beyond the result: a bool per element (truncated normal's redraw mask) and a few chunks.
    assert peak < out.nbytes + out.size + 4 * 8 * inits._CHUNK + 64 * 1024, peak
