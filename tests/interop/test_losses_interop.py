"""Every fastckpt loss against tf_keras 2.21 on the same inputs.

Values for every reduction with and without sample weights (1e-5), the training gradient of the
fused kernels against ``tf.GradientTape`` (1e-5), and configs both ways. Skipped locally without
tf_keras; CI sets FASTCKPT_REQUIRE_INTEROP=1 so a missing peer fails instead.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from interop.conftest import require

from fastckpt import losses

RTOL = ATOL = 1e-5
pytestmark = [pytest.mark.filterwarnings("ignore::SyntaxWarning"),
              pytest.mark.filterwarnings("ignore:The `keras.losses.serialize")]
REDUCTIONS = ("auto", "sum_over_batch_size", "sum", "none")


@pytest.fixture(scope="module")
def tk():
    require("tensorflow")
    return require("tf_keras")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# data kinds: (y_true, y_pred) for a shape.
def _data(kind, rng, shape):
    f = np.float32
    if kind == "reg":
        return rng.normal(size=shape).astype(f), rng.normal(size=shape).astype(f)
    if kind == "mape":
        t = rng.normal(size=shape).astype(f)
        t.flat[0] = 0.0  # divides by epsilon
        return t, rng.normal(size=shape).astype(f)
    if kind == "pos":
        return rng.uniform(0, 3, shape).astype(f), rng.uniform(0.05, 3, shape).astype(f)
    if kind == "msle":
        return rng.uniform(-0.5, 3, shape).astype(f), rng.uniform(-0.5, 3, shape).astype(f)
    if kind == "bin":
        return (rng.random(shape) < 0.5).astype(f), rng.uniform(0.02, 0.98, shape).astype(f)
    if kind == "soft_bin":
        return rng.random(shape).astype(f), rng.uniform(0.02, 0.98, shape).astype(f)
    if kind == "bin_logits":
        return (rng.random(shape) < 0.5).astype(f), (3 * rng.normal(size=shape)).astype(f)
    if kind in ("onehot", "onehot_logits", "onehot_unnorm", "onehot_reg"):
        t = np.eye(shape[-1], dtype=f)[rng.integers(0, shape[-1], shape[:-1])]
        z = (2 * rng.normal(size=shape)).astype(f)
        if kind == "onehot":
            return t, _softmax(z).astype(f)
        if kind == "onehot_unnorm":
            return t, rng.uniform(0.05, 2, shape).astype(f)
        return t, z
    if kind == "dist":
        return _softmax(rng.normal(size=shape)).astype(f), _softmax(rng.normal(size=shape)).astype(f)
    if kind == "pm1":
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(f), rng.normal(size=shape).astype(f)
    raise AssertionError(kind)


# (class name, constructor kwargs, data kind, logits-capable: train with logits=True too)
SPECS = [
    ("MeanSquaredError", {}, "reg"),
    ("MeanAbsoluteError", {}, "reg"),
    ("MeanAbsolutePercentageError", {}, "mape"),
    ("MeanSquaredLogarithmicError", {}, "msle"),
    ("Huber", {}, "reg"),
    ("Huber", {"delta": 0.6}, "reg"),
    ("LogCosh", {}, "reg"),
    ("Poisson", {}, "pos"),
    ("KLDivergence", {}, "dist"),
    ("CosineSimilarity", {}, "reg"),
    ("CosineSimilarity", {"axis": 0}, "reg"),
    ("Hinge", {}, "pm1"),
    ("Hinge", {}, "bin_logits"),
    ("SquaredHinge", {}, "pm1"),
    ("SquaredHinge", {}, "bin_logits"),
    ("CategoricalHinge", {}, "onehot_reg"),
    ("BinaryCrossentropy", {}, "bin"),
    ("BinaryCrossentropy", {}, "soft_bin"),
    ("BinaryCrossentropy", {"label_smoothing": 0.2}, "bin"),
    ("BinaryCrossentropy", {"from_logits": True}, "bin_logits"),
    ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1}, "bin_logits"),
    ("BinaryCrossentropy", {"axis": 0}, "bin"),
    ("BinaryFocalCrossentropy", {}, "bin"),
    ("BinaryFocalCrossentropy", {"apply_class_balancing": True, "alpha": 0.3, "gamma": 1.5}, "bin"),
    ("BinaryFocalCrossentropy", {"from_logits": True, "gamma": 3.0, "label_smoothing": 0.1},
     "bin_logits"),
    ("BinaryFocalCrossentropy", {"from_logits": True, "apply_class_balancing": True}, "bin_logits"),
    ("CategoricalCrossentropy", {}, "onehot"),
    ("CategoricalCrossentropy", {}, "onehot_unnorm"),
    ("CategoricalCrossentropy", {"label_smoothing": 0.15}, "onehot"),
    ("CategoricalCrossentropy", {"from_logits": True}, "onehot_logits"),
    ("CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.2}, "onehot_logits"),
    ("CategoricalCrossentropy", {"axis": 0}, "onehot_unnorm"),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}-{kind}" for name, kw, kind in SPECS]


def _tf_value(tf, tk_loss, yt, yp, sw):
    args = (tf.constant(yt), tf.constant(yp))
    return tk_loss(*args, sample_weight=None if sw is None else tf.constant(sw)).numpy()


@pytest.mark.parametrize("name,kwargs,kind", SPECS, ids=IDS)
@pytest.mark.parametrize("shape", [(6, 5), (6, 1), (3, 4, 5)])
def test_values_match_tf_keras_for_every_reduction(tk, name, kwargs, kind, shape):
    import tensorflow as tf
    rng = np.random.default_rng(11)
    yt, yp = _data(kind, rng, shape)
    weights = [None, rng.uniform(0, 2, shape[0]).astype(np.float32)]
    if len(shape) == 3:
        weights.append(rng.uniform(0, 2, shape[:2]).astype(np.float32))  # one per time step
    for reduction in REDUCTIONS:
        ours = getattr(losses, name)(reduction=reduction, **kwargs)
        theirs = getattr(tk.losses, name)(reduction=reduction, **kwargs)
        for sw in weights:
            if sw is not None and kwargs.get("axis") == 0:
                continue  # the weights would have to follow the reduced axis
            got = ours(yt, yp, sample_weight=sw)
            want = _tf_value(tf, theirs, yt, yp, sw)
            assert np.shape(got) == np.shape(want), (reduction, sw is not None)
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                       err_msg=f"{name} {kwargs} {reduction} sw={sw is not None}")


FUNCTIONS = ["mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
             "mean_squared_logarithmic_error", "huber", "log_cosh", "poisson", "kl_divergence",
             "cosine_similarity", "hinge", "squared_hinge", "categorical_hinge", "binary_crossentropy",
             "binary_focal_crossentropy", "categorical_crossentropy", "mse", "mae", "mape", "msle",
             "kld", "logcosh", "huber_loss", "bce", "MSE", "KLD", "kullback_leibler_divergence"]


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_per_sample_functions_match_tf_keras(tk, fn):
    rng = np.random.default_rng(5)
    yt, yp = _data("dist", rng, (4, 3, 6))
    theirs = tk.losses.get(fn)  # the aliases live in tf_keras' module, not all in its API
    np.testing.assert_allclose(getattr(losses, fn)(yt, yp), theirs(yt, yp).numpy(), rtol=RTOL, atol=ATOL)
    # y_true broadcast against y_pred, as TensorFlow does for plain arrays.
    yt1 = yt[..., :1]
    if fn not in ("categorical_crossentropy",):
        np.testing.assert_allclose(getattr(losses, fn)(yt1, yp), theirs(yt1, yp).numpy(),
                                   rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ignore_class", [None, 2, -1])
@pytest.mark.parametrize("shape", [(7, 4), (3, 5, 4)])
def test_sparse_categorical_crossentropy_matches_tf_keras(tk, from_logits, ignore_class, shape):
    import tensorflow as tf
    rng = np.random.default_rng(2)
    labels = rng.integers(0, shape[-1], shape[:-1])
    if ignore_class is not None:
        labels.flat[::3] = ignore_class
    z = (2 * rng.normal(size=shape)).astype(np.float32)
    pred = z if from_logits else _softmax(z).astype(np.float32)
    sw = rng.uniform(0, 2, shape[0]).astype(np.float32)
    for reduction in REDUCTIONS:
        kw = dict(from_logits=from_logits, ignore_class=ignore_class, reduction=reduction)
        ours, theirs = losses.SparseCategoricalCrossentropy(**kw), tk.losses.SparseCategoricalCrossentropy(**kw)
        for w in (None, sw):
            want = _tf_value(tf, theirs, labels, pred, w)
            np.testing.assert_allclose(ours(labels, pred, sample_weight=w), want, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(ours(labels[..., None], pred, sample_weight=w), want,
                                       rtol=RTOL, atol=ATOL)


def test_clipping_at_extreme_probabilities_matches_tf_keras(tk):
    import tensorflow as tf
    t = np.array([[1, 0, 1, 0, 1, 0]], np.float32)
    p = np.array([[0.0, 1.0, 1.0, 0.0, 1e-7, 1 - 1e-7]], np.float32)
    for name in ("BinaryCrossentropy", "BinaryFocalCrossentropy", "KLDivergence", "Poisson",
                 "MeanSquaredLogarithmicError", "CategoricalCrossentropy"):
        ours, theirs = getattr(losses, name)(), getattr(tk.losses, name)()
        np.testing.assert_allclose(ours(t, p), _tf_value(tf, theirs, t, p, None), rtol=RTOL, atol=ATOL,
                                   err_msg=name)


# --- gradients --------------------------------------------------------------------------------

def _tape_grad(tf, tk_loss, yt, yp, sw):
    v = tf.Variable(yp)
    with tf.GradientTape() as tape:
        value = tk_loss(tf.constant(yt), v, sample_weight=None if sw is None else tf.constant(sw))
    return value.numpy(), tape.gradient(value, v).numpy()


def _our_grad(loss, yt, yp, sw, logits=False, shape=None):
    n = yp.shape[0]
    prepared = loss._prepare_targets(yt, n, (None,) + yp.shape[1:] if shape is None else shape)
    grad = np.full(yp.shape, np.nan, np.float32)
    total = loss._fwd_bwd(prepared, yp, sw, grad, 1.0 / n, logits)
    return total / n, grad


GRAD_SPECS = [s for s in SPECS if s[1].get("axis", -1) == -1]


@pytest.mark.parametrize("name,kwargs,kind", GRAD_SPECS, ids=[i for s, i in zip(SPECS, IDS) if s in GRAD_SPECS])
@pytest.mark.parametrize("shape", [(6, 5), (6, 1), (3, 4, 5)])
@pytest.mark.parametrize("weighted", [False, True])
def test_training_gradients_match_gradient_tape(tk, name, kwargs, kind, shape, weighted):
    import tensorflow as tf
    rng = np.random.default_rng(17)
    yt, yp = _data(kind, rng, shape)
    sw = rng.uniform(0, 2, shape[0]).astype(np.float32) if weighted else None
    value, want = _tape_grad(tf, getattr(tk.losses, name)(**kwargs), yt, yp, sw)
    got_value, got = _our_grad(getattr(losses, name)(**kwargs), yt, yp, sw)
    np.testing.assert_allclose(got_value, value, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name,kwargs", [
    ("BinaryCrossentropy", {}), ("BinaryCrossentropy", {"label_smoothing": 0.1}),
    ("BinaryFocalCrossentropy", {"gamma": 2.5}), ("CategoricalCrossentropy", {}),
    ("CategoricalCrossentropy", {"label_smoothing": 0.1}), ("SparseCategoricalCrossentropy", {}),
])
def test_folded_activation_gradients_match_from_logits(tk, name, kwargs):
    """logits=True (the model's sigmoid/softmax folded into the loss) is tf_keras' from_logits."""
    import tensorflow as tf
    rng = np.random.default_rng(4)
    z = (3 * rng.normal(size=(8, 5))).astype(np.float32)
    if name == "SparseCategoricalCrossentropy":
        yt = rng.integers(0, 5, 8)
    elif name == "CategoricalCrossentropy":
        yt = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 8)]
    else:
        yt = (rng.random((8, 5)) < 0.5).astype(np.float32)
    ours = getattr(losses, name)(**kwargs)
    assert ours.foldable_activation == ("sigmoid" if "Binary" in name else "softmax")
    sw = rng.uniform(0, 2, 8).astype(np.float32)
    value, want = _tape_grad(tf, getattr(tk.losses, name)(from_logits=True, **kwargs), yt, z, sw)
    got_value, got = _our_grad(ours, yt, z, sw, logits=True)
    np.testing.assert_allclose(got_value, value, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("ignore_class", [None, 1])
@pytest.mark.parametrize("shape", [(9, 4), (3, 5, 4)])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_gradients_match_gradient_tape(tk, from_logits, ignore_class, shape, weighted):
    import tensorflow as tf
    rng = np.random.default_rng(8)
    labels = rng.integers(0, shape[-1], shape[:-1])
    z = (2 * rng.normal(size=shape)).astype(np.float32)
    pred = z if from_logits else _softmax(z).astype(np.float32)
    sw = rng.uniform(0, 2, shape[0]).astype(np.float32) if weighted else None
    kw = dict(from_logits=from_logits, ignore_class=ignore_class)
    value, want = _tape_grad(tf, tk.losses.SparseCategoricalCrossentropy(**kw), labels, pred, sw)
    got_value, got = _our_grad(losses.SparseCategoricalCrossentropy(**kw), labels, pred, sw)
    np.testing.assert_allclose(got_value, value, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_gradients_at_the_clip_bounds_match_gradient_tape(tk):
    """Zero where a probability is clipped, passed through on the bound itself (as TF)."""
    import tensorflow as tf
    t = np.array([[1, 0, 1, 0, 1, 0]], np.float32)
    p = np.array([[0.0, 1.0, 1.0, 0.0, 1e-7, 1 - 1e-7]], np.float32)
    for name in ("BinaryCrossentropy", "BinaryFocalCrossentropy", "KLDivergence",
                 "MeanSquaredLogarithmicError"):
        _, want = _tape_grad(tf, getattr(tk.losses, name)(), t, p, None)
        _, got = _our_grad(getattr(losses, name)(), t, p, None)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)


# --- configs ----------------------------------------------------------------------------------

CONFIG_CASES = [(name, kw) for name, kw, _ in SPECS] + [
    ("SparseCategoricalCrossentropy", {"from_logits": True, "ignore_class": 3}),
    ("MeanSquaredError", {"reduction": "sum", "name": "my_mse"}),
    ("Huber", {"delta": 2.5, "reduction": "none"}),
]


@pytest.mark.parametrize("name,kwargs", CONFIG_CASES)
def test_configs_round_trip_with_tf_keras(tk, name, kwargs):
    ours = getattr(losses, name)(**kwargs)
    theirs = tk.losses.deserialize(losses.serialize(ours))
    assert type(theirs).__name__ == name
    want = getattr(tk.losses, name)(**kwargs).get_config()
    assert {k: v for k, v in theirs.get_config().items() if k != "fn"} == \
        {k: v for k, v in want.items() if k != "fn"}
    # ... and back: tf_keras' serialization (with its 'fn' entry) is read here.
    back = losses.deserialize(tk.losses.serialize(theirs))
    assert type(back) is type(ours) and back.get_config() == ours.get_config()
    legacy = tk.losses.serialize(theirs, use_legacy_format=True)
    assert losses.deserialize(legacy).get_config() == ours.get_config()


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) | {"sparse_categorical_crossentropy"}))
def test_names_resolve_as_in_tf_keras(tk, name):
    """Every function name and alias tf_keras' ``get`` knows gives the same loss here."""
    theirs = tk.losses.get(name)
    ours = losses.get(name)
    assert isinstance(ours, losses.Loss)
    assert ours.fn.__name__ == theirs.__name__
    assert losses.deserialize(tk.losses.serialize(theirs)) is getattr(losses, theirs.__name__)


# --- compiled models: the loss crosses over in every format -------------------------------------

COMPILED = [
    ("Huber", {"delta": 2.0}), ("BinaryFocalCrossentropy", {"gamma": 3.0, "from_logits": True}),
    ("CategoricalCrossentropy", {"label_smoothing": 0.1}), ("CosineSimilarity", {"axis": -1}),
    ("SparseCategoricalCrossentropy", {"ignore_class": 0}), ("MeanSquaredLogarithmicError", {}),
    ("KLDivergence", {}), ("LogCosh", {}),
]


def _their_settings(loss):
    config = loss.get_config()
    return {k: v for k, v in config.items() if k not in ("fn", "name", "reduction", "dtype")}


@pytest.mark.parametrize("name,kwargs", COMPILED)
@pytest.mark.parametrize("fmt", ["h5", "keras"])
def test_compiled_losses_cross_over_with_tf_keras_and_keras3(tk, name, kwargs, fmt, tmp_path):
    from fastckpt import keras
    k3 = require("keras")
    model = keras.Sequential([keras.layers.Dense(3, input_shape=(4,))])
    model.compile(optimizer="adam", loss=getattr(losses, name)(**kwargs))
    path = str(tmp_path / f"ours.{fmt}")
    model.save(path)
    want = {k: v for k, v in model.loss.get_config().items() if k not in ("name", "reduction")}
    for lib in ((tk, k3) if fmt == "h5" else (k3,)):
        theirs = lib.models.load_model(path)
        loss = theirs.loss
        if not hasattr(loss, "get_config"):  # Keras 3 keeps the compile config until it is built
            loss = lib.losses.deserialize(theirs._compile_config.config["loss"])
        assert type(loss).__name__ == name
        got = _their_settings(loss)
        assert {k: v for k, v in want.items() if k in got} == got, lib.__name__
    # ... and theirs load here.
    for lib in ((tk, k3) if fmt == "h5" else (k3,)):
        theirs = lib.Sequential([lib.layers.Dense(3, input_shape=(4,))])
        theirs.compile(optimizer="adam", loss=getattr(lib.losses, name)(**kwargs))
        their_path = str(tmp_path / f"theirs_{lib.__name__}.{fmt}")
        theirs.save(their_path)
        back = keras.models.load_model(their_path)
        assert type(back.loss) is type(model.loss)
        # Compared with what they wrote (Keras 3 leaves Huber's delta and CosineSimilarity's
        # axis out of its configs, so those come back at their defaults there).
        written = _their_settings(theirs.loss)
        assert {k: v for k, v in back.loss.get_config().items() if k in written} == written
