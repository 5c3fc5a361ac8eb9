"""The Functional API: symbolic tensors, keras.Model(inputs, outputs) over a graph, shared layers,
nested models, summary, configs, training through the graph protocol, custom layers, saving."""

import os

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.errors import UnknownObjectError
from fastckpt.models.functional import Functional
from fastckpt.saving.model_config import model_from_config, model_to_keras3_config


# --- test-local layers ---------------------------------------------------------------------------
class Concat(keras.layers.Layer):
    """A tiny Concatenate on the last axis (multi-input protocol)."""

    _multi_input = True

    def call(self, inputs):
        return np.concatenate([np.asarray(x, np.float32) for x in inputs], axis=-1)

    def compute_output_shape(self, input_shape):
        last = [s[-1] for s in input_shape]
        return tuple(input_shape[0][:-1]) + (None if None in last else sum(last),)

    def forward_train(self, x, training):
        self._widths = [a.shape[-1] for a in x]
        return np.concatenate(x, axis=-1)

    def backward(self, grad_output, need_input_grad=True):
        if not need_input_grad:
            return None
        return np.split(grad_output, np.cumsum(self._widths)[:-1], axis=-1)


class Scale(keras.layers.Layer):
    """A custom layer the Keras way: build + add_weight, call without training, get_config."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return np.asarray(inputs, np.float32) * self.w.value * self.factor

    def grad(self, inputs, outputs, grad_outputs):
        return grad_outputs * self.w.value * self.factor, [
            (grad_outputs * inputs * self.factor).sum(axis=0)]

    def get_config(self):
        config = super().get_config()
        config["factor"] = self.factor
        return config


class Halve(keras.layers.Layer):
    """No compute_output_shape: the shape is inferred by calling it. Takes training."""

    def call(self, inputs, training=None):
        x = np.asarray(inputs, np.float32)
        self.seen_training = training
        return x[..., : x.shape[-1] // 2]


class ZeroMask(keras.layers.Layer):
    """Produces a mask (rows of the input that are not all zero)."""

    def call(self, inputs):
        return np.asarray(inputs, np.float32)

    def compute_mask(self, inputs, mask=None):
        return np.any(np.asarray(inputs) != 0, axis=-1)


class MaskedSum(keras.layers.Layer):
    """Consumes a mask: sums the unmasked steps."""

    supports_masking = True

    def call(self, inputs, mask=None):
        x = np.asarray(inputs, np.float32)
        self.got_mask = mask
        if mask is not None:
            x = x * np.asarray(mask, np.float32)[..., None]
        return x.sum(axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def compute_mask(self, inputs, mask=None):
        return None


def two_in_two_out():
    a = keras.Input(shape=(3,), name="a")
    b = keras.Input(shape=(2,), name="b")
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    x1 = shared(keras.layers.Dense(4, name="pa")(a))
    x2 = shared(keras.layers.Dense(4, name="pb")(b))
    ii = keras.Input(shape=(4,), name="inner_in")
    inner = keras.Model(ii, keras.layers.Dense(4, activation="tanh", name="in_d")(ii), name="inner")
    m = Concat(name="cat")([inner(x1), inner(x2), x1])
    o1 = keras.layers.Dense(3, activation="softmax", name="o1")(m)
    o2 = keras.layers.Dense(1, name="o2")(keras.layers.Dropout(0.3, name="drop")(x2))
    return keras.Model({"a": a, "b": b}, [o1, o2], name="two")


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return {"a": rng.standard_normal((16, 3)).astype(np.float32),
            "b": rng.standard_normal((16, 2)).astype(np.float32)}


# --- symbolic tensors ------------------------------------------------------------------------------
def test_input_is_a_keras_tensor_with_shape_dtype_name_and_history():
    x = keras.Input(shape=(None, 5), name="seq", dtype="int32", batch_size=8)
    assert x.shape == (8, None, 5) and x.dtype == "int32" and x.name == "seq"
    layer, node, tensor = x._keras_history
    assert isinstance(layer, keras.layers.InputLayer) and (node, tensor) == (0, 0)
    assert keras.Input(batch_shape=(None, 7)).shape == (None, 7)
    auto = keras.Input(shape=(2,))
    assert auto.name.startswith("input_")
    with pytest.raises(ValueError, match="shape"):
        keras.Input()
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(x)


def test_layer_call_on_symbolic_tensor_records_a_node():
    x = keras.Input(shape=(3,))
    dense = keras.layers.Dense(4, name="d_node")
    y = dense(x)
    assert y.shape == (None, 4) and dense.built and dense.kernel.shape == (3, 4)
    assert y._keras_history == (dense, 0, 0)
    z = dense(keras.Input(shape=(3,)))
    assert z._keras_history == (dense, 1, 0) and len(dense._inbound_nodes) == 2


def test_dense_on_unknown_last_dimension_names_the_layer():
    x = keras.Input(shape=(None,))
    with pytest.raises(ValueError, match="dense_unknown.*last dimension of the input must be known"):
        keras.layers.Dense(2, name="dense_unknown")(x)


def test_shape_mismatch_names_layer_and_both_shapes():
    dense = keras.layers.Dense(2, name="built_on_3")
    dense(keras.Input(shape=(3,)))
    with pytest.raises(ValueError, match=r"built_on_3.*value 3.*\(None, 5\)"):
        dense(keras.Input(shape=(5,)))
    with pytest.raises(ValueError, match="expects 1 input"):
        keras.layers.Dense(2)([keras.Input(shape=(3,)), keras.Input(shape=(3,))])


def test_custom_layer_shape_is_inferred_without_compute_output_shape():
    x = keras.Input(shape=(None, 8))
    assert Halve()(x).shape == (None, None, 4)


def test_masks_propagate_symbolically_and_at_run_time():
    x = keras.Input(shape=(4, 3))
    masked = ZeroMask()(x)
    assert masked._keras_mask is not None and masked._keras_mask.shape == (None, 4)
    summer = MaskedSum()
    out = summer(masked)
    model = keras.Model(x, out)
    data = np.ones((2, 4, 3), np.float32)
    data[:, 2:] = 0
    data[1, 1] = 0
    np.testing.assert_allclose(model(data), [[2, 2, 2], [1, 1, 1]])
    np.testing.assert_array_equal(summer.got_mask, [[1, 1, 0, 0], [1, 0, 0, 0]])


# --- construction ----------------------------------------------------------------------------------
def test_model_constructor_builds_functional_over_a_dag():
    model = two_in_two_out()
    assert isinstance(model, Functional) and isinstance(model, keras.Model)
    # tf_keras 2.21 orders this graph the same way (checked against it)
    assert [l.name for l in model.layers] == ["a", "b", "pa", "pb", "shared", "inner", "cat",
                                              "drop", "o1", "o2"]
    assert model.input_names == ["a", "b"] and model.output_names == ["o1", "o2"]
    assert model.input_shape == [(None, 3), (None, 2)]
    assert model.output_shape == [(None, 3), (None, 1)]
    assert len(model.inputs) == 2 and len(model.outputs) == 2
    assert model.get_layer("shared") is model.get_layer(index=[l.name for l in model.layers]
                                                        .index("shared"))
    with pytest.raises(ValueError, match="No such layer: nope"):
        model.get_layer("nope")
    # a shared layer's weights appear once; the nested model's are included
    assert model.count_params() == sum(int(np.prod(w.shape)) for w in model.weights)
    assert len(model.weights) == len({id(w) for w in model.weights}) == 12


def test_layer_order_follows_tf_keras_depth_rule():
    a = keras.Input(shape=(2,), name="ia")
    h = keras.layers.Dense(2, name="h1")(a)
    b = keras.Input(shape=(2,), name="ib")
    out = Concat(name="c")([keras.layers.Dense(2, name="h2")(h), b])
    model = keras.Model([a, b], out)
    # deepest first: ia (3), h1 (2), then h2 and ib at depth 1 in discovery order
    assert [l.name for l in model.layers] == ["ia", "h1", "h2", "ib", "c"]


def test_graph_errors():
    a = keras.Input(shape=(3,))
    b = keras.Input(shape=(3,))
    out = Concat()([keras.layers.Dense(2)(a), keras.layers.Dense(2)(b)])
    with pytest.raises(ValueError, match="Graph disconnected"):
        keras.Model(a, out)
    with pytest.raises(ValueError, match="used 2 times"):
        keras.Model(a, keras.layers.Dense(1, name="same")(keras.layers.Dense(1, name="same")(a)))
    with pytest.raises(TypeError, match="symbolic"):
        keras.Model(a, np.ones(3))


def test_shared_layer_has_two_nodes_and_one_set_of_weights(xy):
    model = two_in_two_out()
    shared = model.get_layer("shared")
    assert len(shared._inbound_nodes) == 2
    before = model(xy)[1]
    shared.kernel.assign(shared.kernel.value * 2)
    assert not np.allclose(model(xy)[1], before)


def test_nested_models_share_weights_and_nest_in_sequential(xy):
    inp = keras.Input(shape=(3,))
    base = keras.Model(inp, keras.layers.Dense(2, name="base_d")(inp), name="base")
    seq = keras.Sequential([keras.layers.Dense(3, input_shape=(3,)), base])
    x = xy["a"]
    np.testing.assert_allclose(seq(x), base(seq.layers[0](x)), rtol=1e-6)
    outer_in = keras.Input(shape=(3,))
    outer = keras.Model(outer_in, keras.layers.Dense(1)(seq(outer_in)))
    assert base.weights[0] in outer.weights or any(w is base.weights[0] for w in outer.weights)
    base.trainable = False
    assert not any(w is base.weights[0] for w in outer.trainable_weights)
    base.trainable = True


# --- inference -----------------------------------------------------------------------------------
def test_call_and_predict_on_dict_and_list_inputs(xy):
    model = two_in_two_out()
    by_dict = model(xy)
    by_list = model([xy["a"], xy["b"]])
    assert isinstance(by_dict, list) and by_dict[0].shape == (16, 3) and by_dict[1].shape == (16, 1)
    for p, q in zip(by_dict, by_list):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match=r"missing data for input\(s\) \['b'\].*\['a', 'b'\]"):
        model({"a": xy["a"]})
    with pytest.raises(ValueError, match="expects 2 input"):
        model([xy["a"]])
    with pytest.raises(ValueError, match=r"expected shape \(None, 3\)"):
        model({"a": xy["b"], "b": xy["b"]})


def test_predict_multi_input_multi_output(xy):
    model = two_in_two_out()
    out = model.predict(xy, verbose=0)
    for p, q in zip(out, model(xy)):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-6)


def test_single_input_predict_equals_call(xy):
    inp = keras.Input(shape=(3,))
    h = keras.layers.Dense(5, activation="relu")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(Concat()([h, h])))
    np.testing.assert_allclose(model.predict(xy["a"], verbose=0), model(xy["a"]), rtol=1e-6,
                               atol=1e-6)


# --- summary ---------------------------------------------------------------------------------------
def test_summary_has_connected_to_column():
    model = two_in_two_out()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert lines[0] == 'Model: "two"'
    assert "Connected to" in lines[2] and lines[2].startswith(" Layer (type)")
    assert " a (InputLayer)              [(None, 3)]                  0         []" in text
    assert "['pa[0][0]'," in text and "'pb[0][0]']" in text  # the shared layer's two calls
    assert "inner (Functional)" in text
    assert f"Total params: {model.count_params()} (" in text
    assert all(len(line) == 98 for line in lines[1:4])


def test_summary_of_a_chain_has_three_columns():
    inp = keras.Input(shape=(3,), name="chain_in")
    model = keras.Model(inp, keras.layers.Dense(2, name="chain_d")(inp))
    lines = []
    model.summary(print_fn=lines.append)
    assert "Connected to" not in "\n".join(lines) and len(lines[1]) == 65


# --- configs ---------------------------------------------------------------------------------------
def _same_predictions(a, b, xy):
    for p, q in zip(a(xy), b(xy)):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-6)


def test_config_round_trip_both_dialects(xy):
    model = two_in_two_out()
    config = model.get_config()
    assert config["input_layers"] == {"a": ["a", 0, 0], "b": ["b", 0, 0]}
    assert config["output_layers"] == [["o1", 0, 0], ["o2", 0, 0]]
    entry = next(l for l in config["layers"] if l["name"] == "shared")
    assert entry["inbound_nodes"] == [[["pa", 0, 0, {}]], [["pb", 0, 0, {}]]]
    cat = next(l for l in config["layers"] if l["name"] == "cat")
    assert cat["inbound_nodes"][0][0][:3] == ["inner", 1, 0]  # tf_keras counts nested from 1
    custom = {"Concat": Concat}
    for rebuilt in (keras.Model.from_config(config, custom_objects=custom),
                    model_from_config(model_to_keras3_config(model), custom_objects=custom)):
        assert [l.name for l in rebuilt.layers] == [l.name for l in model.layers]
        rebuilt.set_weights(model.get_weights())
        _same_predictions(rebuilt, model, xy)


def test_unknown_layer_in_config_raises_unknown_object_error():
    model = two_in_two_out()
    with pytest.raises(UnknownObjectError, match="Concat"):
        keras.Model.from_config(model.get_config())


# --- training ----------------------------------------------------------------------------------------
def _fd_check(model, xs, rng, eps=1e-2, tol=5e-3):
    outs = model._forward_train(xs, True)
    rs = [rng.standard_normal(o.shape).astype(np.float32) for o in outs]
    model._backward([r.copy() for r in rs])
    pairs = [(g.copy(), v) for g, v in model._grads_and_vars()]
    assert len(pairs) == len(model.trainable_weights)

    def loss():
        outs = model(xs, training=False)
        outs = outs if isinstance(outs, list) else [outs]
        return sum(float((o.astype(np.float64) * r).sum()) for o, r in zip(outs, rs))

    for g, v in pairs:
        val = v.value
        for idx in list(np.ndindex(val.shape))[:6]:
            old = val[idx]
            val[idx] = old + eps
            lp = loss()
            val[idx] = old - eps
            lm = loss()
            val[idx] = old
            assert abs((lp - lm) / (2 * eps) - g[idx]) < tol, (v.name, idx)
    return pairs


def test_gradients_through_shared_layers_nested_models_and_fan_out(xy):
    model = two_in_two_out()
    model.get_layer("drop").rate = 0.0
    rng = np.random.default_rng(1)
    xs = [xy["a"][:5], xy["b"][:5]]
    first = _fd_check(model, xs, np.random.default_rng(2))
    # A second step sees the same gradients: no state of the first call leaks into the second.
    second = _fd_check(model, xs, np.random.default_rng(2))
    for (g1, _), (g2, _) in zip(first, second):
        np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-7)
    del rng


def test_gradient_of_a_layer_called_twice_is_the_sum_of_both_calls():
    x = keras.Input(shape=(2,))
    dense = keras.layers.Dense(2, use_bias=False, name="twice")
    model = keras.Model(x, dense(dense(x)))
    _fd_check(model, [np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32)],
              np.random.default_rng(4))


def test_single_output_functional_fit_learns():
    rng = np.random.default_rng(0)
    x = rng.random((256, 8), dtype=np.float32)
    y = x[:, :3].argmax(1)
    inp = keras.Input(shape=(8,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    h2 = keras.layers.Dense(16, activation="relu")(inp)
    out = keras.layers.Dense(3, activation="softmax")(Concat()([h, h2]))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"] > 0.5


def test_multi_output_fit():
    rng = np.random.default_rng(0)
    data = {"a": rng.random((64, 3), dtype=np.float32), "b": rng.random((64, 2), dtype=np.float32)}
    ys = [data["a"].argmax(1), data["b"].sum(1, keepdims=True)]
    model = two_in_two_out()
    model.compile("adam", loss=["sparse_categorical_crossentropy", "mse"])
    hist = model.fit(data, ys, epochs=3, batch_size=16, verbose=0)
    assert {"loss", "o1_loss", "o2_loss"} <= set(hist.history)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


# --- custom layers the Keras way -----------------------------------------------------------------
def test_custom_layers_with_and_without_training_in_sequential_and_functional():
    x = np.ones((2, 4), np.float32)
    halve = Halve()
    seq = keras.Sequential([keras.layers.Dense(4, input_shape=(4,)), Scale(2.0), halve])
    assert seq(x, training=True).shape == (2, 2) and halve.seen_training is True
    assert seq.output_shape == (None, 2)  # inferred: Halve has no compute_output_shape
    assert seq.predict(x, verbose=0).shape == (2, 2)
    inp = keras.Input(shape=(4,))
    model = keras.Model(inp, Halve()(Scale(3.0)(inp)))
    np.testing.assert_allclose(model(x), 3 * np.ones((2, 2)))


@pytest.mark.parametrize("fmt", ["model.h5", "model.keras", "model_dir"])
def test_custom_layers_round_trip_in_every_format(tmp_path, fmt, xy):
    inp = keras.Input(shape=(3,), name="c_in")
    h = Scale(0.5, name="scale")(keras.layers.Dense(4, name="c_d")(inp))
    model = keras.Model(inp, keras.layers.Dense(2, name="c_out")(Concat(name="c_cat")([h, h])))
    model.get_layer("scale").w.assign(np.array([1, 2, 3, 4], np.float32))
    path = str(tmp_path / fmt)
    model.save(path)
    with pytest.raises(UnknownObjectError, match="Scale|Concat"):
        keras.models.load_model(path)
    loaded = keras.models.load_model(path, custom_objects={"Scale": Scale, "Concat": Concat})
    assert loaded.get_layer("scale").factor == 0.5
    np.testing.assert_allclose(loaded(xy["a"]), model(xy["a"]), rtol=1e-6, atol=1e-6)


def test_registered_custom_layer_loads_without_custom_objects(tmp_path, xy):
    @keras.utils.register_keras_serializable(package="fn_test")
    class Doubler(keras.layers.Layer):
        def call(self, inputs):
            return np.asarray(inputs, np.float32) * 2

    inp = keras.Input(shape=(3,))
    model = keras.Model(inp, keras.layers.Dense(2)(Doubler()(inp)))
    for name in ("r.h5", "r.keras"):
        model.save(str(tmp_path / name))
        loaded = keras.models.load_model(str(tmp_path / name))
        np.testing.assert_allclose(loaded(xy["a"]), model(xy["a"]), rtol=1e-6)


# --- saving ---------------------------------------------------------------------------------------
def test_checkpoint_keys_follow_tf_keras_layer_numbering(tmp_path):
    from fastckpt.checkpoint import object_graph as og
    model = two_in_two_out()
    keys = [k for k, _ in og.build_graph(model)[1]]
    names = [l.name for l in model.layers]
    with_weights = [n for n, l in zip(names, model.layers) if l.weights]
    assert f"layer_with_weights-{with_weights.index('inner')}/layer_with_weights-0/kernel/" \
           f".ATTRIBUTES/VARIABLE_VALUE" in keys
    assert all(k.startswith("layer_with_weights-") for k in keys)


@pytest.mark.parametrize("fmt", ["m.h5", "m.keras", "mdir", "ckpt", "w.weights.h5", "w.h5"])
def test_weights_round_trip(tmp_path, fmt, xy):
    model = two_in_two_out()
    path = str(tmp_path / fmt)
    custom = {"Concat": Concat}
    if fmt in ("m.h5", "m.keras", "mdir"):
        model.save(path)
        loaded = keras.models.load_model(path, custom_objects=custom)
    else:
        model.save_weights(path)
        loaded = two_in_two_out()
        status = loaded.load_weights(path)
        if status is not None:
            status.assert_consumed()
    _same_predictions(loaded, model, xy)


def test_rng_state_of_nested_dropout_is_saved(tmp_path):
    inp = keras.Input(shape=(3,))
    inner_in = keras.Input(shape=(3,))
    inner = keras.Model(inner_in, keras.layers.Dropout(0.5, seed=3)(inner_in))
    model = keras.Model(inp, keras.layers.Dense(2)(inner(inp)))
    drop = inner.layers[-1]
    drop.rng_offset = 12345
    model.save(str(tmp_path / "r.keras"))
    loaded = keras.models.load_model(str(tmp_path / "r.keras"))
    assert loaded.layers[1].layers[-1].rng_offset == 12345


@pytest.mark.parametrize("fmt", ["n.h5", "n.keras", "ndir"])
def test_sequential_inside_functional_inside_sequential_round_trips(tmp_path, fmt, xy):
    block = keras.Sequential([keras.layers.Dense(4, activation="relu", input_shape=(3,)),
                              keras.layers.Dense(3)], name="block")
    inp = keras.Input(shape=(3,), name="n_in")
    functional = keras.Model(inp, keras.layers.Dense(2, name="n_head")(block(block(inp))),
                             name="mid")
    outer = keras.Sequential([functional, keras.layers.Dense(1, name="n_out")], name="outer")
    assert outer.input_shape == (None, 3) and outer.output_shape == (None, 1)
    path = str(tmp_path / fmt)
    outer.save(path)
    loaded = keras.models.load_model(path)
    assert [type(l).__name__ for l in loaded.layers] == ["Functional", "Dense"]
    np.testing.assert_allclose(loaded(xy["a"]), outer(xy["a"]), rtol=1e-6, atol=1e-6)


# --- subclassed models ----------------------------------------------------------------------------
class TwoLayer(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.drop = keras.layers.Dropout(0.1)
        self.head = keras.layers.Dense(3, activation="softmax")

    def call(self, inputs, training=None):
        return self.head(self.drop(self.hidden(inputs), training=training))


class NumpyCall(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(np.tanh(inputs))


def test_subclassed_model_calls_fits_and_saves_weights(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((128, 8), dtype=np.float32)
    y = x[:, :3].argmax(1)
    model = TwoLayer()
    assert not isinstance(model, Functional)
    assert model(x[:2]).shape == (2, 3) and len(model.layers) == 3 and len(model.weights) == 4
    model.compile("adam", "sparse_categorical_crossentropy")
    hist = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    model.save_weights(str(tmp_path / "sub"))
    other = TwoLayer()
    other(x[:1])
    other.load_weights(str(tmp_path / "sub")).expect_partial()
    np.testing.assert_allclose(other(x), model(x), rtol=1e-6, atol=1e-6)
    from fastckpt.checkpoint import object_graph as og
    keys = {k for k, _ in og.build_graph(model)[1]}
    assert "hidden/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys  # attribute names, as tf.keras


def test_subclassed_model_with_numpy_math_predicts_but_does_not_train():
    model = NumpyCall()
    x = np.ones((4, 3), np.float32)
    assert model(x).shape == (4, 2)
    assert model.predict(x, verbose=0).shape == (4, 2)
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(NotImplementedError, match="cannot be trained"):
        model.fit(x, np.zeros((4,), np.int64), verbose=0)


# --- hostile configs ---------------------------------------------------------------------------
def _mutate(config, fn):
    import copy
    config = copy.deepcopy(config)
    fn(config)
    return config


def _by_name(config, name):
    return next(l for l in config["layers"] if l["name"] == name)


@pytest.mark.parametrize("mutation", [
    lambda c: _by_name(c, "pa")["inbound_nodes"].__setitem__(0, [["ghost", 0, 0, {}]]),
    lambda c: _by_name(c, "pa")["inbound_nodes"].__setitem__(0, [["a", 5, 0, {}]]),
    lambda c: _by_name(c, "pa")["inbound_nodes"].__setitem__(0, [["a", 0, 9, {}]]),
    lambda c: _by_name(c, "pa")["inbound_nodes"].__setitem__(0, [["pa", 0, 0, {}]]),  # cycle
    lambda c: _by_name(c, "pa")["inbound_nodes"].__setitem__(0, "a"),
    lambda c: c.__setitem__("output_layers", [["o9", 0, 0]]),
    lambda c: c.__setitem__("output_layers", [["o1", 3, 0]]),
    lambda c: c.__setitem__("input_layers", [["a", 0, 0]]),  # b disconnected
    lambda c: c.__setitem__("layers", c["layers"] + [c["layers"][0]]),  # duplicate name
    lambda c: c.__setitem__("layers", "x"),
])
def test_malformed_functional_configs_are_corrupt_not_crashes(mutation):
    from fastckpt.errors import CorruptCheckpointError
    model = two_in_two_out()
    config = {"class_name": "Functional", "config": _mutate(model.get_config(), mutation)}
    with pytest.raises(CorruptCheckpointError):
        model_from_config(config, custom_objects={"Concat": Concat})


def test_ops_on_symbolic_tensors_point_to_layers():
    x = keras.Input(shape=(3,))
    for op in (lambda: x + x, lambda: x * 2, lambda: x[:, 0], lambda: np.tanh(x), lambda: -x):
        with pytest.raises(TypeError, match="keras.layers.Add"):
            op()


def test_gradients_through_a_shared_sequential_block_and_identity_output():
    block = keras.Sequential([keras.layers.Dense(4, activation="tanh", input_shape=(3,)),
                              keras.layers.Dense(3, activation="sigmoid")])
    inp = keras.Input(shape=(3,))
    out = block(block(block(inp)))
    model = keras.Model(inp, [out, inp])
    xs = [np.random.default_rng(5).standard_normal((4, 3)).astype(np.float32)]
    _fd_check(model, xs, np.random.default_rng(6))


def test_shared_dropout_draws_a_fresh_mask_per_call_and_backprops_each():
    inp = keras.Input(shape=(64,))
    drop = keras.layers.Dropout(0.5, seed=1)
    model = keras.Model(inp, [drop(inp), drop(inp)])
    x = np.ones((2, 64), np.float32)
    y1, y2 = model._forward_train([x], True)
    y1, y2 = y1.copy(), y2.copy()
    assert not np.array_equal(y1 != 0, y2 != 0)  # two calls, two masks
    assert drop.rng_offset == 2 * x.size
    g = model._backward([np.ones_like(x), np.zeros_like(x)], need_input_grads=True)[0]
    np.testing.assert_array_equal(g != 0, y1 != 0)  # the first call's mask, not the second's


def test_subclassed_model_summary():
    model = TwoLayer(name="two_layer")
    model(np.ones((2, 8), np.float32))
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert lines[0] == 'Model: "two_layer"' and "Total params: 195 (780.00 Byte)" in text
    assert " dense" in text and "(Dense)" in text and "(None, 16)" in text


def test_feature_extractor_from_layer_outputs(xy):
    inp = keras.Input(shape=(3,), name="fe_in")
    h = keras.layers.Dense(5, activation="relu", name="fe_h")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="fe_out")(h))
    assert model.get_layer("fe_h").output is h and model.get_layer("fe_h").input is inp
    features = keras.Model(model.input, model.get_layer("fe_h").output)
    np.testing.assert_allclose(features(xy["a"]), model.get_layer("fe_h")(xy["a"]), rtol=1e-6)
    assert features.get_layer("fe_h") is model.get_layer("fe_h")  # weights shared
    shared = keras.layers.Dense(2)
    shared(h), shared(h)
    with pytest.raises(AttributeError, match="multiple inbound nodes"):
        shared.output
    with pytest.raises(AttributeError, match="never been called"):
        keras.layers.Dense(2).output


def test_subclassed_model_has_no_config_to_save(tmp_path):
    model = TwoLayer()
    model(np.ones((1, 8), np.float32))
    with pytest.raises(NotImplementedError, match="save_weights"):
        model.save(str(tmp_path / "sub.keras"))


def _layer_in_two_nesting_levels(kind: str):
    d = keras.layers.Dense(4, activation="tanh")
    ii = keras.Input(shape=(4,))
    if kind == "outer_and_inner":   # d outside the nested model and twice inside it
        inner = keras.Model(ii, d(d(ii)))
        x = keras.Input(shape=(4,))
        o = inner(d(x))
    else:                           # d in a model nested in a model that also calls it
        inner = keras.Model(ii, d(ii))
        ij = keras.Input(shape=(4,))
        mid = keras.Model(ij, inner(d(ij)))
        x = keras.Input(shape=(4,))
        o = mid(inner(x))
    return keras.Model(x, keras.layers.Dense(2)(o))


@pytest.mark.parametrize("kind", ["outer_and_inner", "three_levels"])
def test_gradients_of_a_layer_shared_across_nesting_levels(kind):
    model = _layer_in_two_nesting_levels(kind)
    xs = [np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)]
    _fd_check(model, xs, np.random.default_rng(8))
