"""The BLAS provider as fastckpt reports it, and the packed-weights predict path (issue 16).

Packed weights exist in MKL builds only (FASTCKPT_BLAS=mkl-static); in other builds the same tests
check that asking for them changes nothing (no test skips: .ci/run's MKL stage runs this file on the
MKL build, the main run on the default one)."""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastckpt
from fastckpt import keras, ops

AVAILABLE = bool(ops.build_info()["blas_packed_b_available"])


def _same_fastckpt():
    """Python code that makes a child process import the fastckpt under test: an editable install
    as it is, or (the MKL stage of .ci/run) the build this process put ahead of it on sys.path."""
    if any("editable" in type(f).__module__ for f in sys.meta_path):
        return ""
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(fastckpt.__file__)))
    return (f"import sys; sys.path.insert(0, {pkg!r}); sys.meta_path[:] = [f for f in sys.meta_path"
            " if 'editable' not in type(f).__module__]\n")


def test_packed_b_is_off_unless_asked_for():
    """Off by default (it did not pay inside fastckpt); FASTCKPT_PACKED_GEMM=1 turns it on."""
    code = _same_fastckpt() + "from fastckpt import ops; print(ops.build_info()['blas_packed_b'])"
    for value, want in ((None, False), ("0", False), ("1", AVAILABLE)):
        env = {k: v for k, v in os.environ.items() if k != "FASTCKPT_PACKED_GEMM"}
        if value is not None:
            env["FASTCKPT_PACKED_GEMM"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/",
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.split() == [str(want)], out.stderr


@pytest.fixture
def packed():
    before = ops.build_info()["blas_packed_b"]
    yield ops._core.set_blas_packed_b
    ops._core.set_blas_packed_b(before)


def test_show_config_names_the_provider_and_the_packed_path(packed):
    info = ops.build_info()
    assert info["blas"].split()[0] in ("scipy-openblas32", "mkl-static", "system")
    if not info["blas"].startswith("system"):
        assert info["blas_packed_b_available"] == info["blas"].startswith("mkl-static")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fastckpt.show_config()
    text = buf.getvalue()
    assert info["blas"] in text and "blas_packed_weights" in text
    packed(True)
    want = "on (" if AVAILABLE else "not available"
    assert fastckpt.config.get_config()["blas_packed_weights"].startswith(want)
    packed(False)
    assert fastckpt.config.get_config()["blas_packed_weights"].startswith(
        "off (" if AVAILABLE else "not available with this BLAS")


def test_packed_b_cannot_be_turned_on_without_a_packed_form(packed):
    packed(True)
    assert ops.build_info()["blas_packed_b"] == AVAILABLE


def _tutorial(seed=3):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(784,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(10)])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _reference(model, x):
    w1, b1 = model.layers[0].kernel.value, model.layers[0].bias.value
    w2, b2 = model.layers[2].kernel.value, model.layers[2].bias.value
    h = np.maximum(x.astype(np.float64) @ w1 + b1, 0)
    return h @ w2 + b2


@pytest.mark.parametrize("on", [True, False])
def test_predict_after_every_kind_of_weight_update_uses_the_new_weights(rng, packed, threads, tmp_path,
                                                                        on):
    """Weights are packed per call, so no update can leave a stale packed copy behind: predict
    after fit, set_weights, load_weights and an in-place write equals NumPy on the new weights."""
    packed(on)
    threads(2)
    model = _tutorial()
    x = rng.random((1000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 1000)

    def check():
        np.testing.assert_allclose(model.predict(x, verbose=0), _reference(model, x),
                                   rtol=2e-4, atol=2e-4)

    check()
    before = model.predict(x, verbose=0)
    model.fit(x[:256], y[:256], epochs=1, verbose=0)
    assert not np.allclose(model.predict(x, verbose=0), before, atol=1e-3)
    check()
    path = str(tmp_path / "w.weights.h5")
    model.save_weights(path)
    trained = model.get_weights()
    model.set_weights([w * np.float32(0.5) for w in trained])
    check()
    model.load_weights(path)
    check()
    np.testing.assert_array_equal(model.get_weights()[0], trained[0])
    model.layers[0].kernel.value[:5] += np.float32(1)  # a write no counter could see
    check()


@pytest.mark.parametrize("rows", [768, 1000, 2100])
def test_packed_predict_does_not_depend_on_the_thread_count(rng, packed, threads, rows):
    packed(True)
    model = _tutorial(seed=4)
    x = rng.standard_normal((rows, 784), dtype=np.float32)
    outs = []
    for nt in (1, 2, 3):
        threads(nt)
        outs.append(model.predict(x, verbose=0))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    packed(False)
    plain = model.predict(x, verbose=0)
    # Another rounding, the same numbers: packing must actually be in use (bits differ somewhere)
    # and agree to float32 accuracy.
    np.testing.assert_allclose(outs[0], plain, rtol=1e-5, atol=1e-5)
    # Without a packed form (OpenBLAS) asking for packing changes nothing, to the bit.
    assert np.array_equal(outs[0], plain) != AVAILABLE


def test_packed_chain_kernel_against_numpy(rng, packed, threads):
    packed(True)
    threads(2)
    w1 = rng.standard_normal((300, 128), dtype=np.float32) * np.float32(0.1)
    b1 = rng.standard_normal(128, dtype=np.float32)
    w2 = rng.standard_normal((128, 70), dtype=np.float32) * np.float32(0.1)
    x = rng.standard_normal((900, 300), dtype=np.float32)
    h, o = np.empty((900, 128), np.float32), np.empty((900, 70), np.float32)
    ops.dense_chain_forward(x, [(w1, b1, h, "tanh"), (w2, None, o, "linear")])
    want = np.tanh(x.astype(np.float64) @ w1 + b1) @ w2
    np.testing.assert_allclose(o, want, rtol=1e-4, atol=1e-4)


def test_small_passes_and_narrow_layers_keep_the_plain_bits(rng, packed, threads):
    """Where packing does not pay (few rows, or few units), the chain makes the plain BLAS calls:
    the same bits whether packing is on or off."""
    threads(2)
    w1 = rng.standard_normal((784, 512), dtype=np.float32) * np.float32(0.05)
    w2 = rng.standard_normal((512, 10), dtype=np.float32) * np.float32(0.05)
    for rows in (300, 767):
        x = rng.standard_normal((rows, 784), dtype=np.float32)
        got = []
        for on in (True, False):
            packed(on)
            h, o = np.empty((rows, 512), np.float32), np.empty((rows, 10), np.float32)
            ops.dense_chain_forward(x, [(w1, None, h, "relu"), (w2, None, o, "linear")])
            got.append(o)
        assert np.array_equal(got[0], got[1])


_AVX2_CHILD = r"""
import numpy as np
from fastckpt import ops
assert ops.build_info()["blas_packed_b"] == ops.build_info()["blas_packed_b_available"]
rng = np.random.default_rng(1)
w1 = rng.standard_normal((784, 512), dtype=np.float32) * np.float32(0.05)
b1 = rng.standard_normal(512, dtype=np.float32)
w2 = rng.standard_normal((512, 10), dtype=np.float32) * np.float32(0.05)
for rows in (768, 1000, 2100):
    x = rng.standard_normal((rows, 784), dtype=np.float32)
    outs = []
    for nt in (1, 2, 3):
        ops.set_num_threads(nt)
        h, o = np.empty((rows, 512), np.float32), np.empty((rows, 10), np.float32)
        ops.dense_chain_forward(x, [(w1, b1, h, "relu"), (w2, None, o, "linear")])
        outs.append(o)
    print(rows, all(np.array_equal(outs[0], o) for o in outs[1:]))
"""


def test_packed_predict_does_not_depend_on_the_thread_count_on_the_avx2_path():
    """MKL's AVX2 kernels (what an AVX2-only CPU runs) round a row differently depending on the
    rows of its call: the chain's fixed chunks keep the thread count out of the bits."""
    # Other builds have no packed path to force onto AVX2 (OpenBLAS's own AVX2 kernels, forced with
    # OPENBLAS_CORETYPE=Haswell, do round by call size: docs/getting-started.md says so); there the
    # child checks the chain on the CPU's own path.
    env = dict(os.environ, MKL_ENABLE_INSTRUCTIONS="AVX2", FASTCKPT_PACKED_GEMM="1")
    out = subprocess.run([sys.executable, "-c", _same_fastckpt() + _AVX2_CHILD], env=env, cwd="/",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["768", "True", "1000", "True", "2100", "True"], out.stdout
