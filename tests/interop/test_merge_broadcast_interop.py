"""Broadcasting merges against tf_keras 2.21: outputs, output shapes and build errors of
Add/Subtract/Multiply/Average/Maximum/Minimum on inputs with dims of 1 and of different ranks, and
a broadcasting-Add model trained 2 SGD epochs from tf_keras' initial weights."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

from fastckpt import keras

TOL = 1e-5

MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
SHAPES = [((3, 4), (1, 4)), ((3, 1), (3, 4)), ((4,), (3, 4)), ((1, 4), (3, 1)), ((2, 3, 4), (3, 1)),
          ((3, 4), (4,), (1, 1))]


# Subtract takes exactly two inputs.
CASES = [(name, shapes) for name in MERGES for shapes in SHAPES
         if name != "Subtract" or len(shapes) == 2]


@pytest.mark.parametrize("name,shapes", CASES,
                         ids=[f"{n}-" + "-".join("x".join(map(str, d)) for d in s) for n, s in CASES])
def test_broadcasting_merge_outputs_as_tf_keras(tfk, name, shapes):
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(5,) + s).astype(np.float32) for s in shapes]
    theirs = getattr(tfk.layers, name)()
    mine = getattr(keras.layers, name)()
    want = theirs(xs).numpy()
    got = mine(xs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=1e-6)
    in_shapes = [(None,) + s for s in shapes]
    assert tuple(mine.compute_output_shape(in_shapes)) == tuple(theirs.compute_output_shape(in_shapes))
    # Symbolic: a Functional model over these inputs predicts as tf_keras' does.
    for lib, out in ((tfk, want), (keras, got)):
        ins = [lib.Input(shape=s) for s in shapes]
        model = lib.Model(ins, getattr(lib.layers, name)()(ins))
        assert tuple(model.output_shape) == (None,) + want.shape[1:]
        np.testing.assert_allclose(model.predict(xs, verbose=0), want, atol=TOL, rtol=1e-6)


@pytest.mark.parametrize("shapes", [[(None, 3, 4), (None, 2, 4)], [(None, 3), (None, 4, 2)],
                                    [(2, 3), (4, 3)]])
def test_broadcasting_merge_build_errors_as_tf_keras(tfk, shapes):
    with pytest.raises(ValueError) as theirs:
        tfk.layers.Add().build(shapes)
    with pytest.raises(ValueError) as mine:
        keras.layers.Add().build(shapes)
    assert str(mine.value) == str(theirs.value)


def _model(lib, seed):
    a = lib.Input(shape=(3, 4), name="a")
    b = lib.Input(shape=(4,), name="b")
    ha = lib.layers.Dense(5, activation="tanh", name="da")(a)            # (3, 5)
    hb = lib.layers.Dense(5, name="db")(b)                               # (5,): broadcast over steps
    hc = lib.layers.Dense(1, name="dc")(a)                               # (3, 1): broadcast over features
    h = lib.layers.Add(name="add")([ha, hb, hc])
    h = lib.layers.Flatten(name="flat")(h)
    return lib.Model([a, b], lib.layers.Dense(2, name="out")(h))


def test_broadcasting_add_trains_as_tf_keras(tfk):
    tfk.utils.set_random_seed(3)
    theirs, mine = _model(tfk, 3), _model(keras, 3)
    mine.set_weights(theirs.get_weights())
    rng = np.random.default_rng(4)
    x = [rng.normal(size=(64, 3, 4)).astype(np.float32), rng.normal(size=(64, 4)).astype(np.float32)]
    y = rng.normal(size=(64, 2)).astype(np.float32)
    np.testing.assert_allclose(mine.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=TOL)
    for m, lib in ((theirs, tfk), (mine, keras)):
        m.compile(optimizer=lib.optimizers.SGD(0.05), loss="mse")
    h_theirs = theirs.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    h_mine = mine.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(theirs.get_weights(), mine.get_weights()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)  # measured max 1.2e-07
    np.testing.assert_allclose(h_mine.history["loss"], h_theirs.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(mine.predict(x, verbose=0), theirs.predict(x, verbose=0), atol=TOL)
