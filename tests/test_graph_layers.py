"""More built-in layers inside the native graph trainer (fastckpt/training/graph_fused.py,
kernels/graph_trainer.cpp): Normalization, Rescaling, Dense on rank > 2, Concatenate along a
middle axis, channels-first global pooling, BatchNormalization on a non-last axis, and
Embedding(mask_zero) masks through BatchNormalization, LayerNormalization, Normalization and
the merges. Each model trains, resumes from a saved file, evaluates and predicts natively, bit
for bit as the layer-by-layer path (FASTCKPT_FUSED=0)."""

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.training import graph_fused

L = keras.layers


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _run(monkeypatch, tmp_path, fused, make, x, y, loss, metrics, batch_size):
    monkeypatch.setenv("FASTCKPT_FUSED", fused)
    keras.utils.set_random_seed(3)
    model = make()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss, metrics=list(metrics))
    h1 = model.fit(x, y, batch_size=batch_size, epochs=2, verbose=0, validation_split=0.2)
    first = model._trainer._fused
    path = tmp_path / f"m{fused}.keras"
    model.save(path)
    resumed = keras.models.load_model(path)
    h2 = resumed.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, validation_split=0.2)
    xs = x if isinstance(x, list) else [x]
    return {"weights": resumed.get_weights(),
            "opt": [v.numpy() for v in resumed.optimizer.variables],
            "hist": (h1.history, h2.history),
            "eval": resumed.evaluate(x, y, batch_size=batch_size, verbose=0),
            "pred": resumed.predict(x, verbose=0),
            "fused": (first, resumed._trainer._fused),
            "forward": graph_fused.build_graph_forward(resumed, xs)}


def check_same(monkeypatch, tmp_path, make, x, y, loss="sparse_categorical_crossentropy",
               metrics=("accuracy",), batch_size=32, resumed_native=True):
    """Trains, resumes, evaluates and predicts natively and layer by layer: equal bit for bit,
    the native trainer and forward really used (``resumed_native=False``: the first fit only)."""
    nat = _run(monkeypatch, tmp_path, "1", make, x, y, loss, metrics, batch_size)
    ref = _run(monkeypatch, tmp_path, "0", make, x, y, loss, metrics, batch_size)
    native = nat["fused"] if resumed_native else nat["fused"][:1]
    assert all(isinstance(f, graph_fused.GraphFusedTrainer) for f in native)
    assert ref["fused"] == (None, None) and ref["forward"] is None
    assert isinstance(nat["forward"], graph_fused.GraphForward) or not resumed_native
    assert len(nat["weights"]) == len(ref["weights"])
    for a, b in zip(nat["weights"], ref["weights"]):
        assert np.array_equal(a, b)
    for a, b in zip(nat["opt"], ref["opt"]):
        assert np.array_equal(a, b)
    assert nat["hist"] == ref["hist"] and nat["eval"] == ref["eval"]
    assert np.array_equal(nat["pred"], ref["pred"])
    return nat


def _features(rng, n, shape):
    return (rng.standard_normal((n,) + shape) * np.linspace(0.5, 4.0, shape[-1]) + 2.0
            ).astype(np.float32)


# --- Normalization ----------------------------------------------------------------------------
def test_basic_regression_adapted_normalization(rng, monkeypatch, tmp_path):
    """TF's "Basic regression" tutorial: adapt(), then Dense layers, MSE; no input gradient."""
    x = _features(rng, 160, (9,))
    y = (x[:, :1] * 0.3 - x[:, 1:2]).astype(np.float32)

    def make():
        norm = L.Normalization(axis=-1)
        norm.adapt(x)
        inp = keras.Input(shape=(9,))
        h = L.Dense(16, activation="relu")(norm(inp))
        return keras.Model(inp, L.Dense(1)(h))

    check_same(monkeypatch, tmp_path, make, x, y, loss="mse", metrics=())


def test_basic_regression_tutorial_sequential(rng, monkeypatch, tmp_path):
    """The tutorial's own form: Sequential([normalizer, Dense, Dense, Dense(1)]), MAE."""
    x = _features(rng, 160, (9,)) * 10.0
    y = (x[:, :1] * 0.03 - x[:, 1:2] * 0.1).astype(np.float32)

    def make():
        norm = L.Normalization(axis=-1)
        norm.adapt(x)
        return keras.Sequential([norm, L.Dense(32, activation="relu"),
                                 L.Dense(32, activation="relu"), L.Dense(1)])

    check_same(monkeypatch, tmp_path, make, x, y, loss="mean_absolute_error", metrics=())


@pytest.mark.parametrize("axis, shape", [(-1, (4, 3)), ((1, 2), (4, 3)), (None, (4, 3)),
                                         (1, (4, 3)), (2, (2, 3, 2))])
@pytest.mark.parametrize("invert", [False, True])
def test_normalization_axes_inside_the_graph(rng, monkeypatch, tmp_path, axis, shape, invert):
    """After a Dense (the input gradient goes through it), adapted or given as constants."""
    x = _features(rng, 128, shape)
    y = rng.integers(0, 3, 128).astype(np.int32)
    keep = [] if axis is None else [a % (len(shape) + 1) for a in np.atleast_1d(axis)]
    stat_shape = tuple(((1,) + shape)[a] for a in keep)

    def make():
        inp = keras.Input(shape=shape)
        h = L.Dense(shape[-1])(inp)
        if invert:  # constants in the constructor
            norm = L.Normalization(axis=axis, mean=np.full(stat_shape, 0.5, np.float32),
                                   variance=np.linspace(0.5, 2.0, max(int(np.prod(stat_shape)), 1))
                                   .reshape(stat_shape), invert=True)
        else:
            norm = L.Normalization(axis=axis)
            norm.adapt(x * 1.5)
        h = L.Flatten()(norm(h))
        return keras.Model(inp, L.Dense(3, activation="softmax")(h))

    check_same(monkeypatch, tmp_path, make, x, y)


def test_adapt_again_is_seen_by_a_cached_native_forward(rng, monkeypatch):
    monkeypatch.setenv("FASTCKPT_FUSED", "1")
    x = _features(rng, 50, (5,))
    norm = L.Normalization()
    norm.adapt(x)
    inp = keras.Input(shape=(5,))
    model = keras.Model(inp, L.Dense(2)(norm(inp)))
    fwd = graph_fused.build_graph_forward(model, [x])
    assert fwd is not None
    first = model.predict(x, verbose=0)
    norm.adapt(x * 3.0 + 1.0)  # in place: the same buffers
    assert graph_fused.build_graph_forward(model, [x], cached=fwd) is fwd
    out = np.empty((50, 2), np.float32)
    fwd.run([x], [out])
    monkeypatch.setenv("FASTCKPT_FUSED", "0")
    want = model.predict(x, verbose=0)
    assert np.array_equal(out, want) and not np.array_equal(first, want)


# --- Rescaling --------------------------------------------------------------------------------
@pytest.mark.parametrize("scale, offset", [(1 / 255.0, 0.0), (0.5, -1.0),
                                           ([0.5, 2.0, -1.5], 0.25),
                                           (2.0, [0.1, -0.2, 0.3]),
                                           (np.array([[1.5], [0.5], [2.0], [0.25]]),
                                            [1.0, 0.0, -1.0])])
def test_rescaling_scalar_and_per_channel(rng, monkeypatch, tmp_path, scale, offset):
    x = _features(rng, 128, (4, 3)) * 20.0
    y = rng.integers(0, 3, 128).astype(np.int32)

    def make():
        inp = keras.Input(shape=(4, 3))
        h = L.Rescaling(scale, offset=offset)(inp)  # first: no input gradient
        h = L.Rescaling(scale, offset=offset)(L.Dense(3)(h))  # after a Dense: one
        return keras.Model(inp, L.Dense(3, activation="softmax")(L.Flatten()(h)))

    check_same(monkeypatch, tmp_path, make, x, y)


# --- Dense on rank > 2, Concatenate, channels-first pooling, BatchNormalization axis ------------
def _ids(rng, n=160, vocab=30, steps=6, pad=True):
    ids = rng.integers(1, vocab, (n, steps)).astype(np.int32)
    if pad:
        lengths = rng.integers(1, steps + 1, n)
        ids[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    y = (ids[:, 0] % 3).astype(np.int32)
    return ids, y


@pytest.mark.parametrize("act", ["relu", "gelu", "linear"])
def test_embedding_dense_average_pooling(rng, monkeypatch, tmp_path, act):
    ids, y = _ids(rng, pad=False)

    def make():
        inp = keras.Input(shape=(6,), dtype="int32")
        h = L.Dense(8, activation=act)(L.Embedding(30, 5)(inp))  # (batch, 6, 8)
        h = L.Dense(4, activation="tanh")(h)
        return keras.Model(inp, L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(h)))

    check_same(monkeypatch, tmp_path, make, ids, y)


def test_dense_on_rank_four_with_logits_loss(rng, monkeypatch, tmp_path):
    x = _features(rng, 96, (2, 3, 4))
    y = rng.integers(0, 3, 96).astype(np.int32)

    def make():
        inp = keras.Input(shape=(2, 3, 4))
        h = L.Flatten()(L.Dense(5, activation="elu")(inp))
        return keras.Model(inp, L.Dense(3)(h))

    check_same(monkeypatch, tmp_path, make, x, y,
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


@pytest.mark.parametrize("axis", [1, -2, 2])
def test_concatenate_on_a_middle_axis(rng, monkeypatch, tmp_path, axis):
    a = _features(rng, 128, (4, 3, 2))
    y = rng.integers(0, 3, 128).astype(np.int32)
    shape_b = {1: (1, 3, 2), -2: (4, 2, 2), 2: (4, 1, 2)}[axis]
    b = _features(rng, 128, shape_b)

    def make():
        ia = keras.Input(shape=(4, 3, 2))
        ib = keras.Input(shape=shape_b)
        h = L.Concatenate(axis=axis)([L.Dense(2)(ia), ib, L.Dense(2)(ib)])
        return keras.Model([ia, ib], L.Dense(3, activation="softmax")(L.Flatten()(h)))

    check_same(monkeypatch, tmp_path, make, [a, b], y)


def test_channels_first_global_pooling(rng, monkeypatch, tmp_path):
    x = _features(rng, 128, (4, 5))
    y = rng.integers(0, 3, 128).astype(np.int32)

    def make():
        inp = keras.Input(shape=(4, 5))
        h = L.Dense(6, activation="relu")(inp)  # (batch, channels 4, steps 6)
        p = L.GlobalAveragePooling1D(data_format="channels_first")(h)
        q = L.GlobalMaxPooling1D(data_format="channels_first", keepdims=True)(h)
        c = L.Concatenate()([p, L.Flatten()(q)])
        return keras.Model(inp, L.Dense(3, activation="softmax")(c))

    check_same(monkeypatch, tmp_path, make, x, y)


@pytest.mark.parametrize("shape, axis", [((3, 4), 1), ((2, 3, 4), 1), ((2, 3, 4), 2),
                                         ((2, 2, 3, 2), 1), ((2, 3, 4), -1)])
def test_batchnorm_on_any_feature_axis(rng, monkeypatch, tmp_path, shape, axis):
    x = _features(rng, 128, shape)
    y = rng.integers(0, 3, 128).astype(np.int32)

    def make():
        inp = keras.Input(shape=shape)
        h = L.BatchNormalization(axis=axis, momentum=0.9)(L.Dense(shape[-1])(inp))
        return keras.Model(inp, L.Dense(3, activation="softmax")(L.Flatten()(h)))

    nat = check_same(monkeypatch, tmp_path, make, x, y)
    moving_mean = nat["weights"][4]
    assert moving_mean.shape == (((None,) + shape)[axis],) and np.all(moving_mean != 0)


def test_frozen_batchnorm_on_a_middle_axis_and_under_a_mask(rng, monkeypatch, tmp_path):
    x = _features(rng, 128, (2, 3, 4))
    ids, y = _ids(rng, n=128)

    def make():
        a = keras.Input(shape=(2, 3, 4))
        b = keras.Input(shape=(6,), dtype="int32")
        bn = L.BatchNormalization(axis=1, moving_mean_initializer="ones")
        bn2 = L.BatchNormalization(moving_variance_initializer="zeros")
        bn.trainable = bn2.trainable = False  # inference statistics in fit too
        h = L.Flatten()(bn(L.Dense(4)(a)))
        e = L.GlobalAveragePooling1D()(bn2(L.Embedding(30, 4, mask_zero=True)(b)))
        return keras.Model([a, b], L.Dense(3, activation="softmax")(L.Concatenate()([h, e])))

    check_same(monkeypatch, tmp_path, make, [x, ids], y)


# --- masks ------------------------------------------------------------------------------------
def _masked_heads():
    return {
        "batchnorm": lambda e, e2: L.BatchNormalization(momentum=0.8)(e),
        "layernorm": lambda e, e2: L.LayerNormalization()(e),
        "normalization": lambda e, e2: L.Normalization(mean=0.1, variance=2.0)(e),
        "dense-batchnorm": lambda e, e2: L.BatchNormalization()(L.Dense(6, activation="relu")(e)),
        "add": lambda e, e2: L.Add()([e, e2]),
        "multiply-unmasked": lambda e, e2: L.Multiply()([e, L.Dense(4)(e2)]),
        "concatenate": lambda e, e2: L.Concatenate()([e, L.Dense(3)(e2)]),
        "average-of-three": lambda e, e2: L.Average()([e, e2, L.Activation("tanh")(e2)]),
    }


@pytest.mark.parametrize("head", sorted(_masked_heads()))
def test_masks_through_norms_and_merges(rng, monkeypatch, tmp_path, head):
    ids, y = _ids(rng)
    ids2, _ = _ids(np.random.default_rng(5))

    def make():
        a = keras.Input(shape=(6,), dtype="int32")
        b = keras.Input(shape=(6,), dtype="int32")
        e = L.Embedding(30, 4, mask_zero=True)(a)
        # The second sequence: masked or not (its own padding).
        e2 = L.Embedding(30, 4, mask_zero=head != "multiply-unmasked")(b)
        h = _masked_heads()[head](e, e2)
        h = L.GlobalAveragePooling1D()(h)  # the mask decides the mean
        return keras.Model([a, b], L.Dense(3, activation="softmax")(h))

    check_same(monkeypatch, tmp_path, make, [ids, ids2], y)


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_masks_in_a_sequential_model(rng, monkeypatch, tmp_path, norm):
    ids, y = _ids(rng)

    def make():
        return keras.Sequential([
            keras.Input(shape=(6,), dtype="int32"), L.Embedding(30, 5, mask_zero=True),
            L.Dense(6, activation="relu"),
            L.BatchNormalization() if norm == "batchnorm" else L.LayerNormalization(),
            L.GlobalAveragePooling1D(), L.Dense(3, activation="softmax")])

    # A Sequential model saves its Input as float32 (int32 given): the resumed one reads float
    # ids, which only the layer-by-layer Embedding converts.
    check_same(monkeypatch, tmp_path, make, ids, y, resumed_native=False)


def test_a_mask_at_an_output_predicts_natively(rng, monkeypatch):
    ids, _ = _ids(rng, n=40)
    inp = keras.Input(shape=(6,), dtype="int32")
    model = keras.Model(inp, L.Dense(3)(L.Embedding(30, 4, mask_zero=True)(inp)))
    monkeypatch.setenv("FASTCKPT_FUSED", "1")
    assert graph_fused.build_graph_forward(model, [ids]) is not None
    out = model.predict(ids, verbose=0)
    monkeypatch.setenv("FASTCKPT_FUSED", "0")
    assert np.array_equal(out, model.predict(ids, verbose=0))


def test_what_stays_layer_by_layer(rng):
    ids, y = _ids(rng, n=40)
    inp = keras.Input(shape=(6,), dtype="int32")
    e = L.Embedding(30, 4, mask_zero=True)(inp)
    # A mask concatenated along the steps axis.
    model = keras.Model(inp, L.Dense(3, activation="softmax")(
        L.GlobalAveragePooling1D()(L.Concatenate(axis=1)([e, e]))))
    assert graph_fused.build_graph_forward(model, [ids]) is None


# --- broadcasting merges ------------------------------------------------------------------------
@pytest.mark.parametrize("merge", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_broadcasting_merges(rng, monkeypatch, tmp_path, merge):
    """Inputs of (3, 5), (5,) (a lower rank: axes of 1 after the batch axis) and (3, 1) (a dim
    of 1): expanded as the layer does, gradients summed back over the stretched dims."""
    x = [_features(rng, 96, (3, 4)), _features(rng, 96, (4,))]
    y = rng.integers(0, 3, 96).astype(np.int32)

    def make():
        a, b = keras.Input(shape=(3, 4)), keras.Input(shape=(4,))
        ha = L.Dense(5, activation="tanh")(a)
        hb = L.Dense(5)(b)
        hc = L.Dense(1)(a)
        ins = [ha, hb] if merge == "Subtract" else [ha, hb, hc]
        h = getattr(L, merge)()(ins)
        return keras.Model([a, b], L.Dense(3)(L.Flatten()(h)))

    check_same(monkeypatch, tmp_path, make, x, y)


@pytest.mark.parametrize("bad", ["index", "size"])
def test_broadcast_index_is_checked_before_use(rng, monkeypatch, bad):
    """A wrong broadcast index (past its input, or of another size) is refused by the trainer
    before any step reads through it."""
    real = graph_fused._step_spec

    def corrupt(*args, **kwargs):
        spec = real(*args, **kwargs)
        if spec is not None and spec.get("bidx"):
            j = next(i for i, b in enumerate(spec["bidx"]) if b is not None)
            b = spec["bidx"][j].copy()
            if bad == "index":
                b[-1] = spec["b_in_n"][j]
            else:
                b = b[:-1]
            spec["bidx"][j] = b
        return spec

    monkeypatch.setattr(graph_fused, "_step_spec", corrupt)
    a, b = keras.Input(shape=(3, 4)), keras.Input(shape=(4,))
    model = keras.Model([a, b], L.Dense(2)(L.Flatten()(L.Add()([L.Dense(4)(a), b]))))
    model.compile(optimizer="adam", loss="mse")
    x = [_features(rng, 8, (3, 4)), _features(rng, 8, (4,))]
    with pytest.raises((IndexError, ValueError), match="broadcast index"):
        model.fit(x, np.zeros((8, 2), np.float32), epochs=1, verbose=0)
