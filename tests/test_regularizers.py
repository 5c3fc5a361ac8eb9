"""keras.regularizers and keras.constraints: penalties, gradients, projections, configs, and their
use by Dense (tf_keras comparisons are in tests/interop/test_regularizers_interop.py)."""

import os

import numpy as np
import pytest

from fastckpt import keras
from fastckpt import constraints, regularizers


def _numeric_grad(f, x, h=1e-6):
    x = x.astype(np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


# --- penalties ----------------------------------------------------------------------------------
def test_penalties_follow_keras_formulas(rng):
    x = rng.normal(size=(5, 4)).astype(np.float32)
    ref = x.astype(np.float64)
    assert regularizers.L1(0.3)(x) == pytest.approx(np.float32(0.3) * np.abs(ref).sum(), rel=1e-6)
    assert regularizers.L2(0.2)(x) == pytest.approx(np.float32(0.2) * (ref ** 2).sum(), rel=1e-6)
    both = regularizers.L1L2(l1=0.1, l2=0.05)(x)
    assert both == pytest.approx(np.float32(0.1) * np.abs(ref).sum()
                                 + np.float32(0.05) * (ref ** 2).sum(), rel=1e-6)
    # Keras' docstring example: L2(2.) on ones(5, 5) is 50.
    assert regularizers.L2(2.0)(np.ones((5, 5), np.float32)) == pytest.approx(50.0)


def test_defaults_and_string_names():
    assert regularizers.L1().l1 == pytest.approx(0.01) and regularizers.L2().l2 == pytest.approx(0.01)
    assert regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}
    # 'l1_l2' (string and function) means 0.01 each, unlike the class defaults.
    for reg in (regularizers.get("l1_l2"), regularizers.l1_l2()):
        assert isinstance(reg, regularizers.L1L2)
        assert reg.l1 == pytest.approx(0.01) and reg.l2 == pytest.approx(0.01)
    assert type(regularizers.get("l2")) is regularizers.L2
    assert type(regularizers.get("L1")) is regularizers.L1
    assert type(regularizers.get("orthogonal_regularizer")) is regularizers.OrthogonalRegularizer
    assert regularizers.get(None) is None
    reg = regularizers.L2(0.5)
    assert regularizers.get(reg) is reg
    # Config values are stored as float32, so configs carry tf_keras' exact numbers.
    assert regularizers.L2(0.01).get_config() == {"l2": float(np.float32(0.01))}
    assert regularizers.L1(l=0.2).l1 == pytest.approx(0.2)  # the old keyword


@pytest.mark.parametrize("reg", [regularizers.L1(0.3), regularizers.L2(0.2),
                                 regularizers.L1L2(0.1, 0.05),
                                 regularizers.OrthogonalRegularizer(0.5, "rows"),
                                 regularizers.OrthogonalRegularizer(0.5, "columns")])
def test_gradient_matches_finite_differences(reg, rng):
    x = rng.normal(size=(4, 3)).astype(np.float64)
    x[np.abs(x) < 0.05] = 0.3  # away from |x|'s kink
    grad = np.zeros_like(x)
    reg.add_gradient(x, grad)
    np.testing.assert_allclose(grad, _numeric_grad(reg, x), rtol=1e-5, atol=1e-7)
    # In place and additive: a second call doubles it.
    before = grad.copy()
    reg.add_gradient(x, grad)
    np.testing.assert_allclose(grad, 2 * before, rtol=1e-12)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 1000, (1 << 15) * 3 + 5])
def test_native_l1l2_kernels_match_numpy(n, rng):
    from fastckpt import ops
    x = rng.normal(size=n).astype(np.float32)
    x[: n // 10] = 0.0
    ref = x.astype(np.float64)
    # float32 partial sums over runs of 1024 (then double): float32 accuracy, as tf_keras sums.
    assert ops.l1l2_penalty(x, 0.3, 0.2) == pytest.approx(
        0.3 * np.abs(ref).sum() + 0.2 * (ref ** 2).sum(), rel=1e-6, abs=1e-12)
    grad = rng.normal(size=n).astype(np.float32)
    # The kernel's float32 rounding, step for step: bit for bit on any CPU.
    want = grad + (np.float32(0.3) * np.sign(x) + np.float32(2) * np.float32(0.2) * x)
    ops.l1l2_add_gradient(x, grad, 0.3, 0.2)
    np.testing.assert_array_equal(grad, want)


def test_native_penalty_does_not_depend_on_the_thread_count(rng):
    from fastckpt import get_num_threads, ops, set_num_threads
    x = rng.normal(size=(1 << 15) * 5 + 3).astype(np.float32)
    before = get_num_threads()
    try:
        set_num_threads(1)
        one = ops.l1l2_penalty(x, 0.1, 0.7)
        set_num_threads(2)
        two = ops.l1l2_penalty(x, 0.1, 0.7)
    finally:
        set_num_threads(before)
    assert one == two


def test_native_gradient_matches_finite_differences(rng):
    """float32 weights take the kernel path: its penalty's central differences (exact for a
    quadratic away from |x|'s kink) match its gradient."""
    reg = regularizers.L1L2(0.3, 0.2)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    x[np.abs(x) < 0.1] = 0.5
    grad = np.zeros_like(x)
    reg.add_gradient(x, grad)
    h = np.float32(0.03)
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fd[i] = (reg(xp) - reg(xm)) / (float(xp[i]) - float(xm[i]))
    np.testing.assert_allclose(grad, fd, rtol=1e-4)


def test_native_kernels_refuse_bad_buffers():
    from fastckpt import ops
    x = np.ones((4, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        ops.l1l2_penalty(x.astype(np.float64), 0.1, 0.1)
    with pytest.raises(TypeError, match="contiguous"):
        ops.l1l2_add_gradient(x[:, ::2], np.zeros((4, 2), np.float32), 0.1, 0.1)
    with pytest.raises(ValueError, match="shape"):
        ops.l1l2_add_gradient(x, np.zeros(16, np.float32), 0.1, 0.1)
    with pytest.raises(ValueError, match="overlap"):
        ops.l1l2_add_gradient(x, x, 0.1, 0.1)
    # The regularizer itself falls back to NumPy for what the kernel does not take.
    grad = np.zeros((4, 2), np.float32)
    regularizers.L2(0.5).add_gradient(x[:, ::2], grad)
    np.testing.assert_array_equal(grad, np.ones((4, 2), np.float32))


def test_l1_gradient_is_zero_at_zero():
    grad = np.zeros(3, np.float32)
    regularizers.L1(1.0).add_gradient(np.array([0.0, 2.0, -1.0], np.float32), grad)
    assert grad.tolist() == [0.0, 1.0, -1.0]


def test_orthogonal_regularizer_value_and_rank_check():
    # Orthogonal rows: no penalty; two equal rows: factor * 0.5 * 2 / 1.
    assert regularizers.OrthogonalRegularizer(1.0)(np.eye(3, dtype=np.float32)) == pytest.approx(0.0)
    assert regularizers.OrthogonalRegularizer(1.0)(np.ones((2, 3), np.float32)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rank 2"):
        regularizers.OrthogonalRegularizer()(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="mode"):
        regularizers.OrthogonalRegularizer(mode="diagonal")


def test_bad_regularizer_arguments():
    for bad in (float("nan"), float("inf"), "0.1", [0.1]):
        with pytest.raises(ValueError, match="penalty number"):
            regularizers.L2(bad)
    with pytest.raises(TypeError, match="not recognized"):
        regularizers.L1(0.1, l2=0.3)
    with pytest.raises(ValueError, match="Unknown regularizer 'l3'.*'l1'"):
        regularizers.get("l3")
    with pytest.raises(ValueError, match="Unknown regularizer 'Nope'"):
        regularizers.get({"class_name": "Nope", "config": {}})
    # A plain function cannot be trained without its gradient: refused with the way out.
    with pytest.raises(TypeError, match="add_gradient"):
        regularizers.get(lambda w: 0.01 * np.abs(w).sum())
    with pytest.raises(ValueError, match="Could not interpret"):
        regularizers.get(3)
    with pytest.raises(ValueError, match="shape"):
        regularizers.L2().add_gradient(np.ones(3, np.float32), np.zeros(4, np.float32))


def test_regularizer_configs_round_trip_in_both_dialects():
    for reg in (regularizers.L1(0.2), regularizers.L2(0.3), regularizers.L1L2(0.1, 0.4),
                regularizers.OrthogonalRegularizer(0.2, "columns")):
        config = regularizers.serialize(reg)
        assert config["class_name"] == type(reg).__name__
        back = regularizers.deserialize(config)
        assert type(back) is type(reg) and back.get_config() == reg.get_config()
        keras3 = {"module": "keras.regularizers", "registered_name": None, **config}
        assert regularizers.get(keras3).get_config() == reg.get_config()
    assert regularizers.serialize(None) is None


def test_custom_regularizer_through_custom_objects():
    class Half(regularizers.Regularizer):
        def __call__(self, x):
            return 0.5 * float(np.sum(x))

        def add_gradient(self, x, grad):
            grad += 0.5

        def get_config(self):
            return {}

    back = regularizers.deserialize({"class_name": "Custom>Half", "config": {}},
                                    custom_objects={"Half": Half})
    assert isinstance(back, Half) and regularizers.get(back) is back


# --- constraints --------------------------------------------------------------------------------
def test_constraints_follow_keras_formulas(rng):
    w = rng.normal(size=(4, 3)).astype(np.float32) * 3
    norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=0, keepdims=True))
    out = constraints.MaxNorm(2.0)(w)
    np.testing.assert_allclose(out, w * (np.clip(norms, 0, 2.0) / (1e-7 + norms)), rtol=1e-6)
    assert np.all(np.linalg.norm(out, axis=0) <= 2.0 + 1e-5)
    out = constraints.UnitNorm()(w)
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), 1.0, rtol=1e-5)
    out = constraints.MinMaxNorm(min_value=1.0, max_value=1.5, rate=0.5, axis=0)(w)
    desired = 0.5 * np.clip(norms, 1.0, 1.5) + 0.5 * norms
    np.testing.assert_allclose(out, w * desired / (1e-7 + norms), rtol=1e-6)
    out = constraints.NonNeg()(w)
    assert out.dtype == np.float32 and np.all(out >= 0)
    np.testing.assert_array_equal(out, np.where(w >= 0, w, 0))
    # axis as a list (a conv kernel's per-filter norm)
    k = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
    out = constraints.UnitNorm(axis=[0, 1, 2])(k)
    np.testing.assert_allclose(np.sqrt((out ** 2).sum(axis=(0, 1, 2))), 1.0, rtol=1e-5)


def test_constraint_names_configs_and_errors():
    assert type(constraints.get("max_norm")) is constraints.MaxNorm
    assert type(constraints.get("NonNeg")) is constraints.NonNeg
    assert type(constraints.get("unitnorm")) is constraints.UnitNorm
    assert constraints.get(None) is None
    fn = lambda w: w  # noqa: E731  any callable is a constraint
    assert constraints.get(fn) is fn
    for c in (constraints.MaxNorm(3, axis=1), constraints.MinMaxNorm(0.5, 2.0, 0.3, [0, 1]),
              constraints.NonNeg(), constraints.UnitNorm(1)):
        back = constraints.deserialize(constraints.serialize(c))
        assert type(back) is type(c) and back.get_config() == c.get_config()
    assert constraints.MaxNorm().get_config() == {"max_value": 2, "axis": 0}
    with pytest.raises(ValueError, match="Unknown constraint 'clip'.*'max_norm'"):
        constraints.get("clip")
    with pytest.raises(TypeError, match="axis"):
        constraints.MaxNorm(axis="rows")
    with pytest.raises(TypeError, match="max_value"):
        constraints.MaxNorm(max_value="2")
    with pytest.raises(ValueError, match="out of range"):
        constraints.UnitNorm(axis=2)(np.ones((2, 2), np.float32))


# --- Dense and saving ---------------------------------------------------------------------------
def _regularized_model():
    return keras.Sequential([
        keras.layers.Dense(6, activation="relu", input_shape=(5,),
                           kernel_regularizer=keras.regularizers.L2(0.01),
                           bias_regularizer="l1", activity_regularizer=keras.regularizers.l1_l2(),
                           kernel_constraint=keras.constraints.MaxNorm(2.0),
                           bias_constraint="non_neg",
                           kernel_initializer=keras.initializers.HeNormal(seed=3),
                           bias_initializer=keras.initializers.Constant(0.1)),
        keras.layers.Dense(3, activation="softmax",
                           kernel_initializer=keras.initializers.Orthogonal(gain=0.5, seed=1)),
    ])


def test_dense_stores_regularizers_and_constraints_on_its_weights():
    model = _regularized_model()
    dense = model.layers[0]
    assert isinstance(dense.kernel.regularizer, regularizers.L2)
    assert isinstance(dense.bias.regularizer, regularizers.L1)
    assert isinstance(dense.activity_regularizer, regularizers.L1L2)
    assert isinstance(dense.kernel.constraint, constraints.MaxNorm)
    assert isinstance(dense.bias.constraint, constraints.NonNeg)
    assert model.layers[1].kernel.regularizer is None and model.layers[1].kernel.constraint is None
    np.testing.assert_array_equal(dense.bias.numpy(), np.full(6, 0.1, np.float32))
    config = dense.get_config()
    assert config["kernel_regularizer"] == {"class_name": "L2", "config": {"l2": float(np.float32(0.01))}}
    assert config["bias_constraint"] == {"class_name": "NonNeg", "config": {}}
    assert config["kernel_initializer"] == {"class_name": "HeNormal", "config": {"seed": 3}}
    clone = keras.layers.Dense.from_config(dict(config, name="clone"))
    assert clone.get_config() == dict(config, name="clone")


def test_fit_with_a_regularized_dense_runs(rng):
    model = _regularized_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "model_dir"])
def test_configs_with_regularizers_round_trip_through_model_save(tmp_path, name, rng):
    model = _regularized_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    path = os.path.join(tmp_path, name)
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(model.layers, loaded.layers):
        ca, cb = a.get_config(), b.get_config()
        ca.pop("batch_input_shape", None)
        cb.pop("batch_input_shape", None)
        assert ca == cb
        for wa, wb in zip(a.weights, b.weights):
            np.testing.assert_array_equal(wa.numpy(), wb.numpy())
            assert type(wa.regularizer) is type(wb.regularizer)
            assert type(wa.constraint) is type(wb.constraint)


def test_keras3_config_names_the_modules(tmp_path):
    from fastckpt.saving.model_config import model_to_keras3_config
    config = model_to_keras3_config(_regularized_model())
    dense = config["config"]["layers"][1]["config"]
    assert dense["kernel_regularizer"]["module"] == "keras.regularizers"
    assert dense["activity_regularizer"]["module"] == "keras.regularizers"
    assert dense["kernel_constraint"]["module"] == "keras.constraints"
    assert dense["kernel_initializer"]["module"] == "keras.initializers"


@pytest.mark.parametrize("key,kind", [("kernel_regularizer", "regularizer"),
                                      ("bias_constraint", "constraint"),
                                      ("kernel_initializer", "initializer")])
def test_a_config_naming_an_unknown_object_is_refused_by_name(key, kind):
    from fastckpt.errors import UnknownObjectError
    from fastckpt.saving.model_config import model_from_config, model_to_config
    config = model_to_config(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]))
    config["config"]["layers"][-1]["config"][key] = {
        "module": "my_package", "class_name": "Custom>Mystery", "config": {}, "registered_name": None}
    with pytest.raises(UnknownObjectError, match=f"(?i){kind}.*Custom>Mystery"):
        model_from_config(config)


def test_a_config_with_bad_values_is_a_corrupt_file():
    from fastckpt.errors import CorruptCheckpointError
    from fastckpt.saving.model_config import model_from_config, model_to_config
    config = model_to_config(keras.Sequential([keras.layers.Dense(2, input_shape=(3,))]))
    layer = config["config"]["layers"][-1]["config"]
    layer["kernel_regularizer"] = {"class_name": "L2", "config": {"l2": "much"}}
    with pytest.raises(CorruptCheckpointError, match="penalty number"):
        model_from_config(config)
    layer["kernel_regularizer"] = None
    layer["kernel_constraint"] = {"class_name": "MaxNorm", "config": {"axis": "rows"}}
    with pytest.raises(CorruptCheckpointError, match="axis"):
        model_from_config(config)
