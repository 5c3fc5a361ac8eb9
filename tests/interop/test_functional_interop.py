"""Functional models across libraries: tf_keras 2.21 reads our .h5 files and TF checkpoints of a
two-input, two-output graph (a shared layer, a nested model, a custom merge layer) and we read
its; Keras 3 reads our .keras and .weights.h5 files and we read its. Predictions agree within
1e-5 and the layer order (which names checkpoint keys) is the same."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from interop.conftest import require

from fastckpt import keras

TOL = 1e-5


class AddPair(keras.layers.Layer):
    """Our test-local merge layer: the sum of two inputs, trainable inside fit."""

    _multi_input = True

    def call(self, inputs):
        return np.asarray(inputs[0], np.float32) + np.asarray(inputs[1], np.float32)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def forward_train(self, x, training):
        return x[0] + x[1]

    def backward(self, grad_output, need_input_grad=True):
        return [grad_output, grad_output] if need_input_grad else None


def peer_add_pair(lib):
    class PeerAddPair(lib.layers.Layer):
        def call(self, inputs):
            return inputs[0] + inputs[1]

    PeerAddPair.__name__ = "AddPair"
    return PeerAddPair


def two_heads(lib, add_pair):
    """The same graph in fastckpt, tf_keras or Keras 3."""
    a = lib.Input(shape=(6,), name="a")
    b = lib.Input(shape=(4,), name="b")
    pa = lib.layers.Dense(5, activation="relu", name="pa")(a)
    pb = lib.layers.Dense(5, activation="tanh", name="pb")(b)
    shared = lib.layers.Dense(5, activation="relu", name="shared")
    sa, sb = shared(pa), shared(pb)
    ii = lib.Input(shape=(5,), name="inner_in")
    inner = lib.Model(ii, lib.layers.Dense(5, activation="sigmoid", name="in_d")(ii), name="inner")
    merged = add_pair(name="add")([inner(sa), sb])
    o1 = lib.layers.Dense(3, activation="softmax", name="o1")(merged)
    o2 = lib.layers.Dense(1, name="o2")(lib.layers.Dropout(0.2, name="drop")(sb))
    return lib.Model({"a": a, "b": b}, [o1, o2], name="two_heads")


@pytest.fixture
def data():
    rng = np.random.default_rng(5)
    return {"a": rng.standard_normal((64, 6)).astype(np.float32),
            "b": rng.standard_normal((64, 4)).astype(np.float32)}


@pytest.fixture
def ours():
    model = two_heads(keras, AddPair)
    rng = np.random.default_rng(11)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in model.get_weights()])
    return model


def predict(model, data):
    out = model.predict(data, verbose=0) if not isinstance(model, keras.Model) else model(data)
    return [np.asarray(o) for o in out]


def assert_close(a, b):
    assert len(a) == len(b) == 2
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert float(np.max(np.abs(x - y))) <= TOL


def test_layer_order_and_names_match_tf_keras(tfk, ours):
    theirs = two_heads(tfk, peer_add_pair(tfk))
    assert [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    assert ours.input_names == theirs.input_names
    assert ours.output_names == theirs.output_names
    assert ours.count_params() == theirs.count_params()
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in theirs.get_weights()]


def test_checkpoint_keys_match_tf_keras(tfk, ours, tmp_path):
    import tensorflow as tf
    theirs = two_heads(tfk, peer_add_pair(tfk))
    ours.save_weights(str(tmp_path / "ours"))
    theirs.save_weights(str(tmp_path / "theirs"))
    keys = lambda p: sorted((k, tuple(s)) for k, s in tf.train.list_variables(p))
    assert keys(str(tmp_path / "ours")) == keys(str(tmp_path / "theirs"))


def test_tf_keras_loads_our_h5(tfk, ours, data, tmp_path):
    path = str(tmp_path / "m.h5")
    ours.save(path)
    theirs = tfk.models.load_model(path, custom_objects={"AddPair": peer_add_pair(tfk)})
    assert [l.name for l in theirs.layers] == [l.name for l in ours.layers]
    assert_close(predict(theirs, data), predict(ours, data))


def test_tf_keras_loads_our_checkpoint(tfk, ours, data, tmp_path):
    prefix = str(tmp_path / "ckpt")
    ours.save_weights(prefix)
    theirs = two_heads(tfk, peer_add_pair(tfk))
    theirs.load_weights(prefix).assert_existing_objects_matched()
    assert_close(predict(theirs, data), predict(ours, data))


def test_we_load_tf_keras_h5_and_checkpoint(tfk, data, tmp_path):
    theirs = two_heads(tfk, peer_add_pair(tfk))
    path = str(tmp_path / "theirs.h5")
    theirs.save(path)
    mine = keras.models.load_model(path, custom_objects={"AddPair": AddPair})
    assert type(mine).__name__ == "Functional"
    assert_close(predict(mine, data), predict(theirs, data))
    prefix = str(tmp_path / "theirs_ckpt")
    theirs.save_weights(prefix)
    fresh = two_heads(keras, AddPair)
    fresh.load_weights(prefix).assert_existing_objects_matched()
    assert_close(predict(fresh, data), predict(theirs, data))
    h5w = str(tmp_path / "theirs_weights.h5")
    theirs.save_weights(h5w)
    fresh2 = two_heads(keras, AddPair)
    fresh2.load_weights(h5w)
    assert_close(predict(fresh2, data), predict(theirs, data))


def test_keras3_loads_our_keras_and_weights_h5(k3, ours, data, tmp_path):
    path = str(tmp_path / "m.keras")
    ours.save(path)
    theirs = k3.models.load_model(path, custom_objects={"AddPair": peer_add_pair(k3)})
    assert [l.name for l in theirs.layers] == [l.name for l in ours.layers]
    assert_close(predict(theirs, data), predict(ours, data))
    wpath = str(tmp_path / "m.weights.h5")
    ours.save_weights(wpath)
    other = two_heads(k3, peer_add_pair(k3))
    other.load_weights(wpath)
    assert_close(predict(other, data), predict(ours, data))


def test_we_load_keras3_files(k3, data, tmp_path):
    theirs = two_heads(k3, peer_add_pair(k3))
    path = str(tmp_path / "theirs.keras")
    theirs.save(path)
    mine = keras.models.load_model(path, custom_objects={"AddPair": AddPair})
    assert [l.name for l in mine.layers] == [l.name for l in theirs.layers]
    assert_close(predict(mine, data), predict(theirs, data))
    wpath = str(tmp_path / "theirs.weights.h5")
    theirs.save_weights(wpath)
    fresh = two_heads(keras, AddPair)
    fresh.load_weights(wpath)
    assert_close(predict(fresh, data), predict(theirs, data))


def test_tf_keras_file_with_unknown_layer_names_it(tfk, tmp_path):
    from fastckpt.errors import UnknownObjectError
    theirs = two_heads(tfk, peer_add_pair(tfk))
    path = str(tmp_path / "theirs.h5")
    theirs.save(path)
    with pytest.raises(UnknownObjectError, match="AddPair"):
        keras.models.load_model(path)


def shared_block(lib):
    """A Sequential used twice inside a Functional model (tf_keras numbers its nodes from 1)."""
    if lib is keras:
        first = [lib.layers.Dense(4, activation="relu", input_shape=(3,), name="b1")]
    else:
        first = [lib.Input(shape=(3,)), lib.layers.Dense(4, activation="relu", name="b1")]
    block = lib.Sequential(first + [lib.layers.Dense(3, name="b2")], name="block")
    inp = lib.Input(shape=(3,), name="s_in")
    return lib.Model(inp, lib.layers.Dense(2, name="s_head")(block(block(inp))), name="mid")


@pytest.mark.parametrize("peer", ["tf_keras", "keras"])
def test_nested_sequential_both_ways(peer, tmp_path):
    lib = require(peer)
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    ours = shared_block(keras)
    ext = ".h5" if peer == "tf_keras" else ".keras"
    path = str(tmp_path / f"ours{ext}")
    ours.save(path)
    theirs = lib.models.load_model(path)
    assert float(np.max(np.abs(np.asarray(theirs.predict(x, verbose=0)) - ours(x)))) <= TOL
    other = shared_block(lib)
    path2 = str(tmp_path / f"theirs{ext}")
    other.save(path2)
    mine = keras.models.load_model(path2)
    assert float(np.max(np.abs(np.asarray(other.predict(x, verbose=0)) - mine(x)))) <= TOL


def residual_classifier(lib):
    """One input, one output: a shared Dense used twice and a skip connection."""
    inp = lib.Input(shape=(6,), name="r_in")
    shared = lib.layers.Dense(6, activation="tanh", name="r_shared")
    h = shared(shared(inp))
    merged = (AddPair if lib is keras else peer_add_pair(lib))(name="r_add")([h, inp])
    out = lib.layers.Dense(3, activation="softmax", name="r_out")(merged)
    return lib.Model(inp, out, name="residual")


def test_tf_keras_resumes_our_trained_functional_h5(tfk, tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((96, 6)).astype(np.float32)
    y = x[:, :3].argmax(1)
    ours = residual_classifier(keras)
    ours.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ours.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = str(tmp_path / "res.h5")
    ours.save(path)
    theirs = tfk.models.load_model(path, custom_objects={"AddPair": peer_add_pair(tfk)})
    assert float(np.max(np.abs(theirs.predict(x, verbose=0) - ours.predict(x, verbose=0)))) <= TOL
    assert int(theirs.optimizer.iterations.numpy()) == 6
    mine = [v.value for v in ours.optimizer.variables[1:]]
    other = [np.asarray(v) for v in theirs.optimizer.variables[1:]]
    assert len(mine) == len(other) == 8
    for a, b in zip(mine, other):
        np.testing.assert_array_equal(a, b)
    # and back: their file, our model, same predictions and evaluation
    theirs.fit(x, y, epochs=1, batch_size=32, verbose=0)
    back = str(tmp_path / "back.h5")
    theirs.save(back)
    again = keras.models.load_model(back, custom_objects={"AddPair": AddPair})
    assert float(np.max(np.abs(theirs.predict(x, verbose=0) - again.predict(x, verbose=0)))) <= TOL
    assert int(again.optimizer.iterations.value) == 9


def sequence_pooler(lib, mask_zero):
    """Embedding over 6 positions → Dense on every position → Dropout → masked average → Dense:
    rank-3 Dense in training, and a mask carried through Dense and Dropout as Keras carries it."""
    ids = lib.Input(shape=(6,), dtype="int32", name="s_ids")
    h = lib.layers.Embedding(20, 4, mask_zero=mask_zero, name="s_emb")(ids)
    h = lib.layers.Dense(5, activation="relu", name="s_pos")(h)
    h = lib.layers.Dropout(0.0, name="s_drop")(h)
    h = lib.layers.GlobalAveragePooling1D(name="s_pool")(h)
    return lib.Model(ids, lib.layers.Dense(3, name="s_out")(h), name="pooler")


@pytest.mark.parametrize("mask_zero", [False, True])
def test_sequence_dense_and_mask_train_as_tf_keras(tfk, mask_zero):
    rng = np.random.default_rng(5)
    x = rng.integers(1, 20, (64, 6)).astype(np.int32)
    x[:, 4:] = 0  # padding the mask hides
    x[::3, 2:] = 0
    y = rng.integers(0, 3, 64).astype(np.int32)
    theirs, mine = sequence_pooler(tfk, mask_zero), sequence_pooler(keras, mask_zero)
    mine.set_weights(theirs.get_weights())
    np.testing.assert_allclose(mine.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=TOL)
    for m, lib in ((theirs, tfk), (mine, keras)):
        m.compile(optimizer=lib.optimizers.SGD(0.5),
                  loss=lib.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(theirs.get_weights(), mine.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mine.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=TOL)


def per_step_tagger(lib, seq: bool):
    """Ids → Embedding(mask_zero) → Dense per step: the output carries the mask."""
    if seq:
        return lib.Sequential([lib.Input((6,), dtype="int32"), lib.layers.Embedding(20, 4, mask_zero=True),
                               lib.layers.Dense(3)])
    ids = lib.Input((6,), dtype="int32")
    h = lib.layers.Embedding(20, 4, mask_zero=True)(ids)
    return lib.Model(ids, lib.layers.Dense(3)(lib.layers.Dense(5, activation="tanh")(h)))


@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("reduction,weights", [("sum_over_batch_size", False),
                                               ("sum_over_batch_size", True), ("sum", True)])
def test_output_mask_weights_loss_and_metrics_as_tf_keras(tfk, seq, reduction, weights):
    """A mask reaching a model output weighs its loss entries (the mean over unmasked steps for
    sum_over_batch_size) and its metrics, as tf.keras' compile containers do."""
    rng = np.random.default_rng(11)
    x = rng.integers(1, 20, (48, 6)).astype(np.int32)
    x[:, 4:] = 0
    x[::4, 1:] = 0
    y = rng.integers(0, 3, (48, 6)).astype(np.int32)
    sw = rng.uniform(0.5, 2.0, 48).astype(np.float32) if weights else None
    theirs, mine = per_step_tagger(tfk, seq), per_step_tagger(keras, seq)
    mine.set_weights(theirs.get_weights())
    hist = {}
    for m, lib in ((theirs, tfk), (mine, keras)):
        # 'sum' adds up to 96 entries per batch: a smaller step keeps the run well-conditioned.
        m.compile(optimizer=lib.optimizers.SGD(0.5 if reduction != "sum" else 0.02),
                  loss=lib.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction),
                  metrics=["sparse_categorical_accuracy"],
                  weighted_metrics=["sparse_categorical_accuracy"] if weights else None)
        hist[lib] = m.fit(x, y, sample_weight=sw, epochs=2, batch_size=16, shuffle=False,
                          verbose=0).history
        hist[lib]["eval"] = m.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0)
    assert sorted(hist[keras]) == sorted(hist[tfk])
    for key, want in hist[tfk].items():
        np.testing.assert_allclose(hist[keras][key], want, rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(theirs.get_weights(), mine.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
