"""Normalization, embedding and pooling layers against tf_keras 2.21 on the same inputs and
weights: outputs in training and inference mode, gradients (GradientTape), moving statistics after
a training call, ``Normalization.adapt``, and .h5 / TF-checkpoint files in both directions.
Everything to 1e-5. Skipped locally without tf_keras (CI requires it).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from interop.conftest import require

from fastckpt import keras

TOL = 1e-5


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _pair(ours, theirs, x):
    """Build both layers on ``x`` and give ours tf_keras' (random) weights."""
    theirs(x)
    ours(np.asarray(x))
    ours.set_weights(theirs.get_weights())


def _grads(tf, layer, x, r, training, mask=None):
    """tf_keras: d sum(layer(x) * r) / d (x, trainable weights)."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        kw = {"mask": tf.constant(mask)} if mask is not None else {}
        y = layer(xt, training=training, **kw)
        loss = tf.reduce_sum(y * r)
    gs = tape.gradient(loss, [xt] + layer.trainable_weights)
    return y.numpy(), [tf.convert_to_tensor(g).numpy() for g in gs]


def _our_grads(layer, x, r, training, mask=None):
    kw = {"mask": mask} if mask is not None else {}
    y = layer.forward_train(x, training, **kw).copy()
    dx = layer.backward(np.ascontiguousarray(r, np.float32))
    return y, [dx] + [g.copy() for g in layer._grad_buffers()]


@pytest.mark.parametrize("shape,masked,axis", [
    ((32, 5), False, -1), ((4, 6, 3), False, -1), ((4, 6, 3), True, -1), ((3, 4, 4, 2), False, -1),
    ((4, 6, 3), False, 1), ((3, 2, 4, 4), False, 1), ((3, 2, 4, 4), False, 2)])
def test_batchnorm_matches_tf_keras(tfk, tf, rng, shape, masked, axis):
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    theirs = tfk.layers.BatchNormalization(axis=axis, momentum=0.8)
    ours = keras.layers.BatchNormalization(axis=axis, momentum=0.8)
    _pair(ours, theirs, x)
    # non-trivial gamma/beta/moving statistics
    w = [(rng.random(shape[axis]) + 0.5).astype(np.float32) for _ in range(4)]
    w[1] -= 1.0
    theirs.set_weights(w)
    ours.set_weights(w)
    mask = (rng.random(shape[:-1]) > 0.3) if masked else None
    if mask is not None:
        mask.reshape(-1)[0] = True
    r = rng.standard_normal(shape).astype(np.float32)
    # inference mode: moving statistics, nothing moves
    y_t, g_t = _grads(tf, theirs, x, r, False, mask)
    y_o, g_o = _our_grads(ours, x, r, False, mask)
    _close(y_o, y_t)
    for a, b in zip(g_o, g_t):
        _close(a, b, 1e-4)
    # training mode: batch statistics, moving statistics updated once
    y_t, g_t = _grads(tf, theirs, x, r, True, mask)
    y_o, g_o = _our_grads(ours, x, r, True, mask)
    _close(y_o, y_t)
    for a, b in zip(g_o, g_t):
        _close(a, b, 1e-4)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        _close(a, b)
    # the layer call path too
    _close(ours(x, training=True), theirs(x, training=True))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        _close(a, b)


@pytest.mark.parametrize("shape,axis", [((16, 7), -1), ((3, 4, 5), -1), ((3, 4, 5), [1, 2]),
                                        ((3, 4, 5), 1), ((2, 3, 4, 5), [1, 3]),
                                        ((2, 3, 4, 5), [3, 1]), ((3, 4, 5), [2, 1])])
def test_layernorm_matches_tf_keras(tfk, tf, rng, shape, axis):
    x = (rng.standard_normal(shape) * 3 - 1).astype(np.float32)
    theirs = tfk.layers.LayerNormalization(axis=axis)
    ours = keras.layers.LayerNormalization(axis=axis)
    _pair(ours, theirs, x)
    w = [rng.standard_normal(v.shape).astype(np.float32) for v in theirs.weights]
    theirs.set_weights(w)
    ours.set_weights(w)
    r = rng.standard_normal(shape).astype(np.float32)
    y_t, g_t = _grads(tf, theirs, x, r, True)
    y_o, g_o = _our_grads(ours, x, r, True)
    _close(y_o, y_t)
    for a, b in zip(g_o, g_t):
        _close(a, b, 1e-4)
    assert ours.get_config()["axis"] == list(theirs.get_config()["axis"])


@pytest.mark.parametrize("axis", [-1, None, (1, 2), 1])
@pytest.mark.parametrize("invert", [False, True])
def test_normalization_adapt_matches_tf_keras(tfk, rng, axis, invert):
    data = (rng.standard_normal((150, 3, 4)) * [1, 2, 3, 4] + 2).astype(np.float32)
    theirs = tfk.layers.Normalization(axis=axis, invert=invert)
    ours = keras.layers.Normalization(axis=axis, invert=invert)
    theirs.adapt(data, batch_size=16)
    ours.adapt(data, batch_size=16)
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    assert [w.dtype.name for w in ours.weights] == ["float32", "float32", "int64"]
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        _close(a, b)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    _close(ours(x), theirs(x))
    fixed_t = tfk.layers.Normalization(axis=axis, mean=1.5, variance=0.25, invert=invert)
    fixed_o = keras.layers.Normalization(axis=axis, mean=1.5, variance=0.25, invert=invert)
    _close(fixed_o(x), fixed_t(x))


@pytest.mark.parametrize("mask_zero", [False, True])
def test_embedding_and_pooling_match_tf_keras(tfk, tf, rng, mask_zero):
    ids = rng.integers(0, 12, size=(6, 5))
    ids[:, 3:] = 0
    ids[:, 0] = rng.integers(1, 12, size=6)
    theirs = tfk.Sequential([tfk.layers.Embedding(12, 4, mask_zero=mask_zero),
                             tfk.layers.GlobalAveragePooling1D()])
    ours = keras.Sequential([keras.layers.Embedding(12, 4, mask_zero=mask_zero),
                             keras.layers.GlobalAveragePooling1D()])
    theirs(ids)
    ours(ids)
    ours.set_weights(theirs.get_weights())
    r = rng.standard_normal((6, 4)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(theirs(ids, training=True) * r)
    g_t = tf.convert_to_tensor(tape.gradient(loss, theirs.trainable_weights[0])).numpy()
    y_o = ours._forward_train([ids.astype(np.float32)], True)[0]
    ours._backward([r])
    _close(y_o, theirs(ids))
    _close(ours.layers[0]._grad_buffers()[0], g_t)
    # max pooling
    seq = rng.standard_normal((3, 5, 4)).astype(np.float32)
    _close(keras.layers.GlobalMaxPooling1D(keepdims=True)(seq),
           tfk.layers.GlobalMaxPooling1D(keepdims=True)(seq))
    _close(keras.layers.GlobalMaxPooling1D(data_format="channels_first")(seq),
           tfk.layers.GlobalMaxPooling1D(data_format="channels_first")(seq))


def _tab(lib, emb=True):
    """A Sequential with BatchNormalization (and Embedding + pooling) in fastckpt or tf_keras."""
    L = lib.layers
    if emb:
        layers = [L.Embedding(20, 6, mask_zero=True, input_length=5), L.GlobalAveragePooling1D(),
                  L.BatchNormalization(), L.Dense(3, activation="softmax")]
    else:
        layers = [L.Dense(8, activation="relu", input_shape=(4,)), L.BatchNormalization(),
                  L.LayerNormalization(), L.Dense(3, activation="softmax")]
    model = lib.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _xy(rng, emb):
    if emb:
        x = rng.integers(0, 20, size=(64, 5))
        x[:, 0] = rng.integers(1, 20, size=64)
    else:
        x = rng.standard_normal((64, 4)).astype(np.float32)
    return x, rng.integers(0, 3, size=64)


@pytest.mark.parametrize("emb", [True, False])
def test_tf_keras_loads_our_h5_and_we_load_theirs(tfk, rng, tmp_path, emb):
    x, y = _xy(rng, emb)
    ours = _tab(keras, emb)
    ours.fit(x, y, epochs=2, verbose=0)
    path = str(tmp_path / "ours.h5")
    ours.save(path)
    theirs = tfk.models.load_model(path)
    _close(theirs.predict(x, verbose=0), ours.predict(x, verbose=0))
    bn = [la for la in theirs.layers if "batch_normalization" in la.name][0]
    ours_bn = [la for la in ours.layers if isinstance(la, keras.layers.BatchNormalization)][0]
    _close(bn.moving_mean.numpy(), ours_bn.moving_mean.numpy())
    # theirs -> ours
    tmodel = _tab(tfk, emb)
    tmodel.fit(x, y, epochs=2, verbose=0)
    tpath = str(tmp_path / "theirs.h5")
    tmodel.save(tpath)
    loaded = keras.models.load_model(tpath)
    _close(loaded.predict(x, verbose=0), tmodel.predict(x, verbose=0))
    # weights-only files, both directions
    wpath = str(tmp_path / "w.h5")
    ours.save_weights(wpath)
    fresh = _tab(tfk, emb)
    fresh(x[:1])
    fresh.load_weights(wpath)
    _close(fresh.predict(x, verbose=0), ours.predict(x, verbose=0))


@pytest.mark.parametrize("emb", [True, False])
def test_tf_checkpoint_keys_match_tf_keras(tfk, tf, rng, tmp_path, emb):
    x, y = _xy(rng, emb)
    ours = _tab(keras, emb)
    ours.fit(x, y, epochs=1, verbose=0)
    prefix = str(tmp_path / "ckpt")
    ours.save_weights(prefix)
    theirs = _tab(tfk, emb)
    theirs.fit(x, y, epochs=1, verbose=0)
    tprefix = str(tmp_path / "tckpt")
    theirs.save_weights(tprefix)
    keys = lambda p: {k for k, _ in tf.train.list_variables(p) if "OPTIMIZER_SLOT" not in k
                      and not k.startswith("optimizer") and not k.startswith("_")}
    assert keys(prefix) == keys(tprefix)
    fresh = _tab(tfk, emb)
    fresh(x[:1])
    fresh.load_weights(prefix).expect_partial()
    _close(fresh.predict(x, verbose=0), ours.predict(x, verbose=0))
    mine = _tab(keras, emb)
    mine.load_weights(tprefix).expect_partial()
    _close(mine.predict(x, verbose=0), theirs.predict(x, verbose=0))


def test_keras3_loads_our_keras_file_and_we_load_theirs(rng, tmp_path):
    k3 = require("keras")
    x = rng.integers(1, 20, size=(32, 5))
    y = rng.integers(0, 3, size=32)
    L = keras.layers
    ours = keras.Sequential([L.Embedding(20, 4, mask_zero=True, input_length=5),
                             L.GlobalAveragePooling1D(), L.BatchNormalization(),
                             L.LayerNormalization(), L.Dense(3, activation="softmax")])
    ours.compile("adam", "sparse_categorical_crossentropy")
    ours.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "ours.keras")
    ours.save(path)
    _close(k3.models.load_model(path).predict(x, verbose=0), ours.predict(x, verbose=0))
    K = k3.layers
    norm = K.Normalization()
    norm.adapt(rng.random((50, 5)).astype("float32"))
    theirs = k3.Sequential([k3.Input((5,)), K.Embedding(20, 4, mask_zero=True),
                            K.GlobalMaxPooling1D(), K.BatchNormalization(), K.LayerNormalization(),
                            K.Dense(3, activation="softmax")])
    theirs.compile("adam", "sparse_categorical_crossentropy")
    theirs.fit(x, y, epochs=1, verbose=0)
    tpath = str(tmp_path / "theirs.keras")
    theirs.save(tpath)
    _close(keras.models.load_model(tpath).predict(x, verbose=0), theirs.predict(x, verbose=0))
    tn = k3.Sequential([k3.Input((5,)), norm, K.Dense(2)])
    npath = str(tmp_path / "norm.keras")
    tn.save(npath)
    xf = rng.random((4, 5)).astype("float32")
    _close(keras.models.load_model(npath).predict(xf, verbose=0), tn.predict(xf, verbose=0))


def _train_model(lib, emb):
    L = lib.layers
    if emb:
        layers = [L.Embedding(40, 8, mask_zero=True, input_length=6), L.GlobalAveragePooling1D(),
                  L.BatchNormalization(), L.Dense(4, activation="softmax")]
    else:
        layers = [L.Dense(12, activation="relu", input_shape=(5,)), L.BatchNormalization(),
                  L.LayerNormalization(), L.Dense(4, activation="softmax")]
    return lib.Sequential(layers)


@pytest.mark.parametrize("emb", [True, False])
@pytest.mark.parametrize("opt", ["adam", "sgd_momentum"])
def test_fit_matches_tf_keras(tfk, rng, emb, opt):
    """Three epochs from the same weights and batches (shuffle=False): every weight, moving
    statistics included, and the loss agree. With an Embedding only some rows are used per batch:
    the dense gradient (zero rows) gives tf.keras' semantics for Adam and SGD with momentum
    (moments of unused rows decay and move them)."""
    if emb:
        x = rng.integers(1, 30, size=(150, 6))  # ids 30..39 never used
        x[rng.random((150, 6)) < 0.3] = 0
        x[:, 0] = rng.integers(1, 30, size=150)
    else:
        x = (rng.standard_normal((150, 5)) * 2 + 1).astype(np.float32)
    y = rng.integers(0, 4, size=150)
    ours, theirs = _train_model(keras, emb), _train_model(tfk, emb)
    theirs(x[:1])
    ours(x[:1])
    ours.set_weights(theirs.get_weights())
    for lib, model in ((keras, ours), (tfk, theirs)):
        o = lib.optimizers.Adam(1e-2) if opt == "adam" else lib.optimizers.SGD(0.1, momentum=0.9)
        model.compile(optimizer=o, loss="sparse_categorical_crossentropy")
    h_o = ours.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    h_t = theirs.fit(x, y, epochs=3, batch_size=32, shuffle=False, verbose=0)
    np.testing.assert_allclose(h_o.history["loss"], h_t.history["loss"], rtol=1e-4)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
