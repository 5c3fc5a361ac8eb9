"""The C++ embedding API from the Python side: the inference plan written with checkpoints, the
embedding file locations, and the example program built as a downstream CMake project whose
predictions must equal ``model.predict`` (max |diff| <= 1e-6; bit-identical in practice).

The C/C++ unit tests (every error path, ASan/UBSan) run from tests/cpp/run.sh."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import numpy as np
import pytest

from fastckpt import keras
from fastckpt.checkpoint.saver import read_extra
from fastckpt.layers import Dense, Layer
from fastckpt.saving import inference_plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fixtures_module():
    spec = importlib.util.spec_from_file_location(
        "make_fixtures", os.path.join(ROOT, "tests", "cpp", "make_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _small():
    return keras.Sequential([keras.layers.Dense(8, activation="tanh", input_shape=(5,)),
                             keras.layers.Dropout(0.25), keras.layers.Dense(3, use_bias=False,
                                                                            activation="softmax")])


# --- the plan ---------------------------------------------------------------------------------
def test_plan_text():
    plan = inference_plan.plan_for(_small()).decode()
    assert plan == ("fastckpt-plan 1\ninput 5\n"
                    "dense 8 tanh layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE "
                    "layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE\n"
                    "dropout 0.25\n"
                    "dense 3 softmax layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE -\n")


def test_save_weights_stores_the_plan_and_restore_ignores_it(tmp_path):
    model = _small()
    prefix = str(tmp_path / "cp.ckpt")
    model.save_weights(prefix)
    assert read_extra(prefix, inference_plan.PLAN_KEY) == inference_plan.plan_for(model)
    status = _small().load_weights(prefix)
    assert status.unused_keys == []


@pytest.mark.parametrize("include_optimizer", [True, False])
def test_model_directory_stores_the_plan(tmp_path, include_optimizer):
    model = _small()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.save(str(tmp_path / "m"), include_optimizer=include_optimizer)
    plan = read_extra(str(tmp_path / "m" / "variables" / "variables"), inference_plan.PLAN_KEY)
    assert plan == inference_plan.plan_for(model)  # same keys with or without the optimizer
    reloaded = keras.models.load_model(str(tmp_path / "m"))
    x = np.random.default_rng(0).random((4, 5), dtype=np.float32)
    assert np.array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


class _Scale(Layer):
    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(input_shape[-1],), initializer="ones")
        self.built = True

    def call(self, inputs, training=None):
        return inputs * self.w.value


class _MyDense(Dense):  # a subclass may change call(): not run by C++
    pass


@pytest.mark.parametrize("make", [
    lambda: keras.Sequential([keras.layers.Dense(4, input_shape=(3,)), _Scale()]),
    lambda: keras.Sequential([_MyDense(4, input_shape=(3,))]),
    lambda: keras.Sequential([keras.layers.Rescaling(np.ones((2, 2, 3)), input_shape=(2, 3))]),
    # Constants the plan cannot carry (version 4 carries finite ones that fit a line).
    lambda: keras.Sequential([keras.layers.Normalization(mean=np.inf, variance=2.0, input_shape=(3,))]),
    lambda: keras.Sequential([keras.layers.Dense(4)]),  # never built
], ids=["custom-layer", "subclass", "rescaling-over-the-batch", "normalization-constants-inf", "unbuilt"])
def test_no_plan_for_what_cpp_cannot_run(make, tmp_path):
    model = make()
    assert inference_plan.plan_for(model) is None
    if model.built:
        model.save_weights(str(tmp_path / "cp.ckpt"))
        assert read_extra(str(tmp_path / "cp.ckpt"), inference_plan.PLAN_KEY) is None


def test_plan_limits_match_the_runtime_header():
    text = open(os.path.join(ROOT, "csrc", "include", "fastckpt", "format.h")).read()
    for name, value in [("kMaxPlanBytes = 1u << 20", inference_plan.MAX_PLAN_BYTES == 1 << 20),
                        ("kMaxPlanLineBytes = 4096", inference_plan.MAX_LINE_BYTES == 4096),
                        ("kMaxPlanLayers = 4096", inference_plan.MAX_LAYERS == 4096),
                        ("kMaxPlanWidth = int64_t(1) << 24", inference_plan.MAX_WIDTH == 1 << 24),
                        ("kMaxPlanInputs = 256", inference_plan.MAX_INPUTS == 256),
                        ("kMaxPlanNodeInputs = 256", inference_plan.MAX_NODE_INPUTS == 256),
                        ("kMaxPlanRowFloats = int64_t(1) << 26", inference_plan.MAX_ROW_FLOATS == 1 << 26),
                        ('kPlanKey = "_fastckpt/inference_plan"', True)]:
        assert name in text and value, name


# --- packaging ----------------------------------------------------------------------------------
def test_cli_prints_the_embedding_dirs(capsys):
    from fastckpt.cli import main
    for flag, must_have in (("--cmake-dir", "fastckptConfig.cmake"),
                            ("--include-dir", os.path.join("fastckpt", "fastckpt.h")),
                            ("--lib-dir", "libfastckpt.so")):
        assert main([flag]) == 0
        out = capsys.readouterr().out.strip()
        assert os.path.isfile(os.path.join(out, must_have)), (flag, out)


# --- the example, built against the installed package --------------------------------------------
def _toolchain_missing():
    if not shutil.which("cmake"):
        return "cmake is not installed"
    if not (shutil.which("ninja") or shutil.which("make")):
        return "neither ninja nor make is installed"
    if not any(shutil.which(c) for c in (os.environ.get("CXX", "c++"), "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++)"
    return None


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory):
    reason = _toolchain_missing()
    if reason:
        pytest.skip(f"cannot build the C++ example: {reason}")
    from fastckpt import embedding
    build = tmp_path_factory.mktemp("embed_build")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", os.path.join(ROOT, "examples", "embed"), "-B", str(build), *generator,
                    "-DCMAKE_BUILD_TYPE=Release", f"-Dfastckpt_DIR={embedding.cmake_dir()}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True)
    return str(build / "embed_predict")


def _run(binary, *args):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rows", [75, 300, 1100])  # one pass, one pass, a 1024-row pass + 76
def test_example_predicts_what_python_predicts(example_binary, tmp_path, rows):
    fixtures = _fixtures_module()
    model = fixtures.tutorial_model(seed=3)
    fixtures.save_model_dir(model, str(tmp_path / "my_model"))
    x = np.random.default_rng(4).random((rows, 784), dtype=np.float32)
    with open(tmp_path / "x.txt", "w") as f:
        for row in x:
            f.write(" ".join(f"{v:.9g}" for v in row) + "\n")
    res = _run(example_binary, tmp_path / "my_model", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    got = np.array([[float(v) for v in line.split()] for line in res.stdout.splitlines()],
                   np.float64).astype(np.float32)
    want = model.predict(x, verbose=0)
    assert got.shape == want.shape == (rows, 10)
    assert np.abs(got - want).max() <= 1e-6
    assert np.array_equal(got, want)  # same kernels, same passes of whole batches: bit-identical


def test_example_runs_every_activation_as_python_does(example_binary, tmp_path):
    """The activation table (kernels/dense.h) is the runtime's too: every named activation."""
    from fastckpt import ops
    keras.utils.set_random_seed(7)
    acts = sorted(set(ops.ACTIVATIONS) - {"softmax"})
    model = keras.Sequential([keras.layers.Dense(12, activation=acts[0], input_shape=(784,))] +
                             [keras.layers.Dense(12, activation=a) for a in acts[1:]] +
                             [keras.layers.Dense(10, activation="softmax")])
    model.save(str(tmp_path / "acts"))
    x = np.random.default_rng(8).random((20, 784), dtype=np.float32)
    with open(tmp_path / "x.txt", "w") as f:
        for row in x:
            f.write(" ".join(f"{v:.9g}" for v in row) + "\n")
    res = _run(example_binary, tmp_path / "acts", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    got = np.array([[float(v) for v in line.split()] for line in res.stdout.splitlines()],
                   np.float64).astype(np.float32)
    assert np.array_equal(got, model.predict(x, verbose=0))


def test_example_reports_errors(example_binary, tmp_path):
    res = _run(example_binary, tmp_path / "nope", tmp_path / "x.txt")
    assert res.returncode == 1 and "no model directory" in res.stderr
    model = _small()
    _fixtures_module().save_model_dir(model, str(tmp_path / "m"))
    (tmp_path / "x.txt").write_text("1 2 3 4\n")  # 4 values, the model takes 5
    res = _run(example_binary, tmp_path / "m", tmp_path / "x.txt")
    assert res.returncode == 1 and "rows * n_inputs" in res.stderr


# --- plan version 2: Functional models, several inputs and outputs -------------------------------
def _write_rows(path, *arrays):
    with open(path, "w") as f:
        for parts in zip(*arrays):
            f.write(" ".join(" ".join(f"{v:.9g}" if isinstance(v, (float, np.floating)) else str(int(v))
                                      for v in p) for p in parts) + "\n")


def _read_rows(stdout):
    return np.array([[float(v) for v in line.split()] for line in stdout.splitlines()],
                    np.float64).astype(np.float32)


def _functional(seed=0):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    num = keras.Input(shape=(4,), name="num")
    ids = keras.Input(shape=(6,), dtype="int32", name="ids")
    e = L.Embedding(50, 3)(ids)
    c = L.Concatenate()([num, L.GlobalAveragePooling1D()(e), L.GlobalMaxPooling1D()(e),
                         L.Flatten()(e)])
    h = L.Dense(8, activation="gelu")(L.Dropout(0.3)(c))
    r = L.Rescaling(0.5, offset=1.0)(h)
    merged = [L.Add()([h, r]), L.Subtract()([h, r]), L.Multiply()([h, r]),
              L.Average()([h, r]), L.Maximum()([h, r]), L.Minimum()([h, r])]
    z = L.Concatenate()(merged)
    z = L.Activation("tanh")(L.GaussianNoise(0.1)(L.GaussianDropout(0.1)(L.AlphaDropout(0.1)(z))))
    z = L.Reshape((48,))(z)
    head = L.Dense(3, activation="softmax", name="head")(z)
    reg = L.Dense(2, activation="silu", name="reg")(h)
    return keras.Model([num, ids], [head, reg])


def _functional_data(rows, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((rows, 4), dtype=np.float32), rng.integers(0, 50, (rows, 6)).astype(np.int32)


def test_functional_plan_is_version_2():
    plan = inference_plan.plan_for(_functional()).decode()
    lines = plan.splitlines()
    assert lines[:3] == ["fastckpt-plan 2", "input num 4 float", "input ids 6 int"]
    assert lines[-2:] == [l for l in lines if l.startswith("output ")]
    assert lines[-2].startswith("output head ") and lines[-1].startswith("output reg ")
    ops_used = {l.split()[2] for l in lines if l.startswith("node ")}
    assert ops_used == {"embedding", "gap1d", "gmp1d", "identity", "concat", "dense", "rescaling",
                        "add", "subtract", "multiply", "average", "maximum", "minimum",
                        "activation"}


def test_no_plan_for_masked_or_unsupported_functional():
    L = keras.layers
    ids = keras.Input(shape=(5,), dtype="int32")
    e = L.Embedding(10, 2, mask_zero=True)(ids)  # masks the runtime does not run:
    assert inference_plan.plan_for(keras.Model(ids, L.Softmax(axis=1)(e))) is None  # softmax's
    cat = L.Concatenate(axis=1)([e, L.Embedding(10, 2)(ids)])  # a merged mask
    assert inference_plan.plan_for(keras.Model(ids, L.GlobalAveragePooling1D()(cat))) is None
    # A mask no layer reads (Flatten drops it) is no obstacle.
    assert inference_plan.plan_for(keras.Model(ids, L.Dense(1)(L.Flatten()(e)))) is not None
    x = keras.Input(shape=(3,))
    assert inference_plan.plan_for(keras.Model(x, _MyDense(2)(x))) is None


@pytest.mark.parametrize("rows", [7, 300])
def test_example_runs_a_functional_model_as_python_does(example_binary, tmp_path, rows):
    model = _functional()
    model.save(str(tmp_path / "fm"))
    num, ids = _functional_data(rows)
    _write_rows(tmp_path / "x.txt", num, ids)
    res = _run(example_binary, tmp_path / "fm", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    got = _read_rows(res.stdout)
    head, reg = model.predict([num, ids], verbose=0)
    want = np.concatenate([head, reg], axis=1)
    assert got.shape == want.shape == (rows, 5)
    assert np.abs(got - want).max() <= 1e-6
    assert np.array_equal(got, want)  # same kernels, same passes: bit-identical


def test_example_refuses_an_id_out_of_range(example_binary, tmp_path):
    model = _functional()
    model.save(str(tmp_path / "fm"))
    num, ids = _functional_data(3)
    ids[2, 4] = 50
    _write_rows(tmp_path / "x.txt", num, ids)
    res = _run(example_binary, tmp_path / "fm", tmp_path / "x.txt")
    assert res.returncode == 1
    assert "input 'ids' row 2 column 4: id 50 is out of range [0, 50)" in res.stderr
    ids[2, 4] = -1
    _write_rows(tmp_path / "x.txt", num, ids)
    res = _run(example_binary, tmp_path / "fm", tmp_path / "x.txt")
    assert res.returncode == 1 and "id -1 is out of range" in res.stderr


def _functional_layers(seed=2):
    """The rest of the layer table: activations with arguments, PReLU, the two norms."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = keras.Input(shape=(6,), name="x")
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(seed).normal(2.0, 3.0, size=(64, 6)).astype(np.float32))
    h = L.Dense(10)(norm(x))
    h = L.BatchNormalization(center=False)(L.BatchNormalization()(h))
    branches = [L.ReLU()(h), L.ReLU(max_value=0.5, negative_slope=0.1, threshold=0.05)(h),
                L.LeakyReLU(0.2)(h), L.ELU(0.7)(h), L.PReLU(alpha_initializer="random_uniform")(h),
                L.Softmax()(h), L.LayerNormalization()(h), L.LayerNormalization(scale=False)(h)]
    for act in ("gelu", "silu", "log_softmax", "softmax"):
        branches.append(L.Activation(act)(h))
    return keras.Model(x, L.Dense(3)(L.Concatenate()(branches)))


def test_example_runs_activations_and_norms_as_python_does(example_binary, tmp_path):
    model = _functional_layers()
    bn = [l for l in model.layers if type(l).__name__ == "BatchNormalization"]
    rng = np.random.default_rng(5)
    for layer in bn:  # moving statistics that are not the identity
        layer.moving_mean.assign(rng.normal(size=10).astype(np.float32))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=10).astype(np.float32))
    plan = inference_plan.plan_for(model).decode()
    ops_used = {l.split()[2] for l in plan.splitlines() if l.startswith("node ")}
    assert {"relu", "elu", "prelu", "softmax", "batchnorm", "layernorm", "activation",
            "normalize"} <= ops_used
    model.save(str(tmp_path / "fl"))
    x = rng.normal(size=(40, 6)).astype(np.float32)
    _write_rows(tmp_path / "x.txt", x)
    res = _run(example_binary, tmp_path / "fl", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    got = _read_rows(res.stdout)
    want = model.predict(x, verbose=0)
    assert got.shape == want.shape == (40, 3)
    assert np.abs(got - want).max() <= 1e-6
    assert np.array_equal(got, want)


def test_example_runs_a_masked_embedding_average(example_binary, tmp_path):
    """Embedding(mask_zero=True) -> GlobalAveragePooling1D averages the steps whose id is not 0."""
    keras.utils.set_random_seed(3)
    L = keras.layers
    ids = keras.Input(shape=(5,), dtype="int32", name="tokens")
    pooled = L.GlobalAveragePooling1D()(L.Embedding(20, 4, mask_zero=True)(ids))
    model = keras.Model(ids, L.Dense(2)(pooled))
    plan = inference_plan.plan_for(model).decode()
    assert any(line.startswith("node ") and line.endswith(",tokens 5") and " gap1d " in line
               for line in plan.splitlines())
    model.save(str(tmp_path / "mk"))
    x = np.random.default_rng(6).integers(0, 20, (30, 5)).astype(np.int32)
    x[:10, 2:] = 0  # padded rows
    x[10] = 0       # an all-padding row
    _write_rows(tmp_path / "x.txt", x)
    res = _run(example_binary, tmp_path / "mk", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    got = _read_rows(res.stdout)
    want = model.predict(x, verbose=0)
    # The all-padding row averages nothing: NaN in Python (0 / 0, as tf.keras) and in C++ alike.
    assert np.isnan(want[10]).all()
    assert np.array_equal(got, want, equal_nan=True)
    # GlobalMaxPooling1D reads no mask (as Keras 2): beside the masked average it pools every step.
    e = L.Embedding(20, 4, mask_zero=True)(ids)
    two = keras.Model(ids, L.Concatenate()([L.GlobalAveragePooling1D()(e), L.GlobalMaxPooling1D()(e)]))
    two.save(str(tmp_path / "mk2"))
    res = _run(example_binary, tmp_path / "mk2", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(_read_rows(res.stdout), two.predict(x, verbose=0), equal_nan=True)


def test_example_runs_a_sequential_beyond_dense(example_binary, tmp_path):
    """A Sequential with other layers gets a version 2 chain; a leading Embedding reads int ids."""
    keras.utils.set_random_seed(4)
    L = keras.layers
    model = keras.Sequential([L.Embedding(30, 4, input_shape=(7,)), L.GlobalAveragePooling1D(),
                              L.Dense(6, activation="relu"), L.BatchNormalization(),
                              L.Dropout(0.5), L.Dense(3, activation="softmax")])
    plan = inference_plan.plan_for(model).decode()
    assert plan.startswith("fastckpt-plan 2\n") and " 7 int\n" in plan
    model.save(str(tmp_path / "sq"))
    x = np.random.default_rng(9).integers(0, 30, (50, 7)).astype(np.int32)
    _write_rows(tmp_path / "x.txt", x)
    res = _run(example_binary, tmp_path / "sq", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    assert np.array_equal(_read_rows(res.stdout), model.predict(x, verbose=0))


# --- every built-in layer, per argument combination (plan versions 2 and 3) -----------------------
def _one(*layers, shape=(6,), dtype="float32"):
    x = keras.Input(shape=shape, dtype=dtype, name="x")
    y = x
    for layer in layers:
        y = layer(y)
    return keras.Model(x, y)


def _two(make, s1, s2):
    a, b = keras.Input(shape=s1, name="a"), keras.Input(shape=s2, name="b")
    return keras.Model([a, b], make()([a, b]))


def _adapted(shape=(6,), **kw):
    layer = keras.layers.Normalization(**kw)
    layer.adapt(np.random.default_rng(0).normal(1.0, 2.0, size=(32,) + shape).astype(np.float32))
    return _one(layer, shape=shape)


def _ids(*layers, shape=(5,)):
    return _one(*layers, shape=shape, dtype="int32")


def _layer_cases():
    from fastckpt import ops
    L = keras.layers
    cases = {f"activation-{a}": (lambda a=a: _one(L.Activation(a), shape=(3, 4)))
             for a in sorted(ops.ACTIVATIONS)}
    cases.update({
        "relu-args-rank3": lambda: _one(L.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.2), shape=(3, 4)),
        "leaky-elu-rank3": lambda: _one(L.LeakyReLU(0.3), L.ELU(0.5), shape=(3, 4)),
        "prelu-rank3": lambda: _one(L.PReLU(), shape=(3, 4)),
        "prelu-shared-1": lambda: _one(L.PReLU(shared_axes=[1]), shape=(3, 4)),
        "prelu-shared-2": lambda: _one(L.PReLU(shared_axes=2), shape=(3, 4)),
        "softmax-rank3": lambda: _one(L.Softmax(), shape=(3, 4)),
        "softmax-axis1-rank3": lambda: _one(L.Softmax(axis=1), shape=(3, 4)),
        "flatten-reshape": lambda: _one(L.Flatten(), L.Reshape((2, 6)), L.Dense(2), shape=(3, 4)),
        "dense-rank3": lambda: _one(L.Dense(5, activation="gelu"), shape=(3, 4)),
        "sequential-dense-rank3": lambda: keras.Sequential([L.Dense(5, input_shape=(3, 4)), L.Dropout(0.1),
                                                            L.Dense(2, activation="softmax")]),
        "dense-rank3-softmax": lambda: _one(L.Dense(5, activation="softmax"), shape=(3, 4)),
        "dense-rank4-log-softmax": lambda: _one(L.Dense(3), L.Activation("log_softmax"), shape=(2, 3, 4)),
        "batchnorm-rank3": lambda: _one(L.BatchNormalization(), shape=(3, 4)),
        "batchnorm-rank3-axis1": lambda: _one(L.BatchNormalization(axis=1, center=False), shape=(3, 4)),
        "layernorm-rank3": lambda: _one(L.LayerNormalization(), shape=(3, 4)),
        "layernorm-rank3-axes12": lambda: _one(L.LayerNormalization(axis=[1, 2], scale=False), shape=(3, 4)),
        "layernorm-rank3-axis1": lambda: _one(L.LayerNormalization(axis=1), shape=(3, 4)),
        "layernorm-rank4-axes12": lambda: _one(L.LayerNormalization(axis=[1, 2]), shape=(2, 3, 4)),
        "normalization-invert": lambda: _adapted(invert=True),
        "normalization-axis-none": lambda: _adapted(axis=None),
        "normalization-rank3": lambda: _adapted(shape=(3, 4)),
        "normalization-rank3-axis-none": lambda: _adapted(shape=(3, 4), axis=None),
        "normalization-rank3-axis12": lambda: _adapted(shape=(3, 4), axis=(1, 2)),
        "normalization-rank3-axis1": lambda: _adapted(shape=(3, 4), axis=1),
        "rescaling-per-channel": lambda: _one(L.Rescaling([0.5, 2.0, -1.0, 3.0], offset=0.25), shape=(3, 4)),
        "rescaling-per-step": lambda: _one(L.Rescaling(np.array([[1.5], [0.5], [2.0]]),
                                                       offset=[1.0, 2.0, 3.0, 4.0]), shape=(3, 4)),
        "rescaling-rank2-vectors": lambda: _one(L.Rescaling(np.arange(1.0, 7.0) / 7, offset=np.ones((1, 6)))),
        "noise-rank3": lambda: _one(L.GaussianNoise(0.3), L.GaussianDropout(0.3), L.AlphaDropout(0.3),
                                    L.Dropout(0.3), L.Rescaling(2.0, -1.0), shape=(3, 4)),
        "embedding-gap": lambda: _ids(L.Embedding(10, 4), L.GlobalAveragePooling1D()),
        "embedding-mask-gap": lambda: _ids(L.Embedding(10, 4, mask_zero=True), L.GlobalAveragePooling1D()),
        "embedding-mask-gmp": lambda: _ids(L.Embedding(10, 4, mask_zero=True), L.GlobalMaxPooling1D()),
        "embedding-mask-dense-layernorm-gap": lambda: _ids(
            L.Embedding(10, 4, mask_zero=True), L.Dense(6, activation="relu"), L.LayerNormalization(),
            L.Dropout(0.2), L.GlobalAveragePooling1D()),
        "embedding-mask-batchnorm-gap": lambda: _ids(
            L.Embedding(10, 4, mask_zero=True), L.BatchNormalization(), L.GlobalAveragePooling1D()),
        "embedding-dense-layernorm-gmp": lambda: _ids(
            L.Embedding(10, 4), L.Dense(3, activation="tanh"), L.LayerNormalization(), L.GlobalMaxPooling1D()),
        "embedding-gap-keepdims": lambda: _ids(L.Embedding(10, 4), L.GlobalAveragePooling1D(keepdims=True),
                                               L.Flatten()),
        "gap-gmp-channels-first": lambda: _one(L.Dense(5), L.GlobalMaxPooling1D(data_format="channels_first"),
                                               shape=(3, 4)),
        "gap-channels-first": lambda: _one(L.GlobalAveragePooling1D(data_format="channels_first"), shape=(3, 4)),
        "embedding-2d-ids": lambda: _ids(L.Embedding(10, 4), L.Flatten(), shape=(2, 3)),
        "concat-axis1-rank3": lambda: _two(lambda: L.Concatenate(axis=1), (3, 4), (2, 4)),
        "concat-axis2-rank3": lambda: _two(lambda: L.Concatenate(axis=2), (3, 4), (3, 2)),
        "concat-axis-last-rank4": lambda: _two(lambda: L.Concatenate(), (2, 3, 4), (2, 3, 1)),
        "concat-axis2-rank4": lambda: _two(lambda: L.Concatenate(axis=2), (2, 3, 4), (2, 1, 4)),
    })
    for m in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        cases[f"{m.lower()}-rank3"] = lambda m=m: _two(getattr(L, m), (3, 4), (3, 4))
    # Broadcasting merges (dims of 1; a lower rank gets axes of 1 after the batch axis).
    cases.update({
        "add-broadcast-steps": lambda: _two(L.Add, (3, 4), (1, 4)),
        "subtract-broadcast-features": lambda: _two(L.Subtract, (3, 1), (3, 4)),
        "multiply-broadcast-rank2-rank3": lambda: _two(L.Multiply, (4,), (3, 4)),
        "maximum-broadcast-both": lambda: _two(L.Maximum, (1, 4), (3, 1)),
        "minimum-broadcast-rank4": lambda: _two(L.Minimum, (2, 3, 4), (3, 1)),
        "average-broadcast-three": lambda: _three(L.Average, (3, 4), (1, 4), (4,)),
    })
    # Normalization given mean= / variance= (constants carried by the plan, version 4).
    cases.update({
        "normalization-constants": lambda: _one(L.Normalization(mean=[0.5, -1, 2, 0, 3, 1],
                                                                variance=[1, 4, 0.25, 2, 9, 1e-16])),
        "normalization-constants-invert": lambda: _one(L.Normalization(mean=[0.5, -1], variance=[2, 3],
                                                                       invert=True), shape=(2,)),
        "normalization-constants-rank3-axis1": lambda: _one(L.Normalization(axis=1, mean=[1, 2, 3],
                                                                            variance=[1, 2, 3]), shape=(3, 4)),
        "normalization-constants-axis-none": lambda: _one(L.Normalization(axis=None, mean=2.0, variance=4.0),
                                                          shape=(3, 4)),
    })
    # Masks through merges (the AND of the inputs' masks) into a masked average.
    cases.update({
        "embedding-masks-add-gap": lambda: _masked_merge(L.Add, True),
        "embedding-masks-multiply-dense-gap": lambda: _masked_merge(L.Multiply, True, dense=True),
        "embedding-mask-concat-unmasked-gap": lambda: _masked_merge(L.Concatenate, False),
        "embedding-masks-maximum-broadcast-gap": lambda: _masked_merge(L.Maximum, True, dim2=1),
    })
    return cases


def _three(make, s1, s2, s3):
    ins = [keras.Input(shape=s, name=n) for s, n in ((s1, "a"), (s2, "b"), (s3, "c"))]
    return keras.Model(ins, make()(ins))


def _masked_merge(make, mask2, dense=False, dim2=4):
    L = keras.layers
    a, b = keras.Input(shape=(5,), dtype="int32", name="a"), keras.Input(shape=(5,), dtype="int32", name="b")
    e1 = L.Embedding(10, 4, mask_zero=True)(a)
    e2 = L.Embedding(10, dim2, mask_zero=mask2)(b)
    y = make()([e1, e2])
    if dense:
        y = L.Dense(3, activation="tanh")(y)
    return keras.Model([a, b], L.GlobalAveragePooling1D()(y))


_LAYER_CASES = _layer_cases()


def _randomize(model, rng):
    """Weights that are not the initializer's (PReLU's alpha is 0, BatchNormalization's statistics 0/1)."""
    for layer in model.layers:
        for w in layer.weights:
            if np.dtype(w.dtype) != np.float32:
                continue
            if "variance" in w.name:
                w.assign(rng.uniform(0.5, 2.0, size=w.shape).astype(np.float32))
            else:
                w.assign(rng.normal(size=w.shape).astype(np.float32))


def _case_inputs(model, rows, rng):
    xs = []
    specs = [(t.shape, t.dtype) for t in model.inputs] if hasattr(model, "inputs") else \
        [(model.input_shape, "float32")]
    for in_shape, dtype in specs:
        shape = (rows,) + tuple(in_shape[1:])
        if np.dtype(dtype).kind in "iu":
            ids = rng.integers(0, 10, shape).astype(np.int32)
            ids[: rows // 3, 1:] = 0  # padding for the masks
            xs.append(ids)
        else:
            xs.append(rng.normal(size=shape).astype(np.float32))
    return xs


@pytest.mark.parametrize("case", sorted(_LAYER_CASES))
def test_every_layer_case_has_a_plan(case):
    model = _LAYER_CASES[case]()
    plan = inference_plan.plan_for(model)
    assert plan is not None, case
    assert plan.decode().split("\n", 1)[0] in ("fastckpt-plan 2", "fastckpt-plan 3", "fastckpt-plan 4")


def test_example_runs_every_layer_case_as_python_does(example_binary, tmp_path):
    """Each case: the C++ runtime's outputs equal model.predict within 1e-6 on random inputs."""
    failed = []
    for i, case in enumerate(sorted(_LAYER_CASES)):
        keras.utils.set_random_seed(i)
        rng = np.random.default_rng(i)
        model = _LAYER_CASES[case]()
        _randomize(model, rng)
        rows = 37
        xs = _case_inputs(model, rows, rng)
        want = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
        want = np.concatenate([w.reshape(rows, -1) for w in (want if isinstance(want, list) else [want])], 1)
        model.save(str(tmp_path / case))
        _write_rows(tmp_path / f"{case}.txt", *[x.reshape(rows, -1) for x in xs])
        res = _run(example_binary, tmp_path / case, tmp_path / f"{case}.txt")
        if res.returncode != 0:
            failed.append((case, res.stderr.strip()[-300:]))
            continue
        got = _read_rows(res.stdout)
        # An all-padding row of a masked average is NaN in both (0 / 0, as tf.keras).
        same = got.shape == want.shape and np.array_equal(np.isnan(got), np.isnan(want))
        if not same or not np.nan_to_num(np.abs(got - want)).max() <= 1e-6:
            failed.append((case, got.shape, want.shape,
                           float(np.nanmax(np.abs(got - want))) if got.shape == want.shape else None))
    assert not failed, failed


# --- plan version 4 -------------------------------------------------------------------------------
def test_plan_version_4_only_when_a_line_needs_it():
    L = keras.layers
    adapted = inference_plan.plan_for(_adapted()).decode()
    assert adapted.startswith("fastckpt-plan 2\n") and " normalize " in adapted
    const = inference_plan.plan_for(_one(L.Normalization(axis=1, mean=[1, 2, 3], variance=[1, 4, 9]),
                                         shape=(3, 4))).decode()
    assert const.startswith("fastckpt-plan 4\n")
    assert "normalize_values x 1e-07 0 1.0,2.0,3.0 1.0,4.0,9.0 3 4" in const
    # Constants that are not finite, negative variances, or too many for one line: no plan.
    for mean, var in (([np.nan, 1.0], [1.0, 1.0]), ([0.0, 1.0], [1.0, -1.0])):
        assert inference_plan.plan_for(_one(L.Normalization(mean=mean, variance=var), shape=(2,))) is None
    wide = L.Normalization(mean=np.linspace(-1, 1, 600), variance=np.linspace(1, 2, 600))
    assert inference_plan.plan_for(_one(wide, shape=(600,))) is None
    # One mask: gap1d reads one ids input (version 2); merged masks need version 4.
    assert inference_plan.plan_for(_LAYER_CASES["embedding-mask-gap"]()).decode().startswith("fastckpt-plan 2\n")
    merged = inference_plan.plan_for(_LAYER_CASES["embedding-masks-add-gap"]()).decode()
    assert merged.startswith("fastckpt-plan 4\n") and "gap1d t4,a,b 5" in merged


def test_no_plan_for_masks_the_runtime_cannot_merge():
    L = keras.layers
    a, b = keras.Input(shape=(5,), dtype="int32"), keras.Input(shape=(4,), dtype="int32")
    e1, e2 = L.Embedding(10, 3, mask_zero=True)(a), L.Embedding(10, 3, mask_zero=True)(b)
    # Along the steps the masks are concatenated, not ANDed.
    cat = L.Concatenate(axis=1)([e1, e2])
    assert inference_plan.plan_for(keras.Model([a, b], L.GlobalAveragePooling1D()(cat))) is None
    # Masked softmax: Python's result depends on how the (batch, steps) mask broadcasts.
    assert inference_plan.plan_for(keras.Model(a, L.Softmax()(e1))) is None


def test_layernorm_over_a_non_trailing_axis_plan():
    L = keras.layers
    model = _one(L.LayerNormalization(axis=1), shape=(3, 4))
    plan = inference_plan.plan_for(model).decode()
    assert plan.startswith("fastckpt-plan 4\n") and " 3 4\n" in plan


def test_example_runs_layernorm_over_a_non_trailing_axis(example_binary, tmp_path, monkeypatch):
    """The runtime's ``layernorm <n> <inner>`` (here over axis 1 of (3, 4) rows) against NumPy; the
    plan is written by hand into a saved model whose LayerNormalization holds gamma/beta of (3,)."""
    from fastckpt.checkpoint import object_graph as og
    from fastckpt.saving import saved_model
    L = keras.layers
    keras.utils.set_random_seed(5)
    x_in = keras.Input(shape=(12,), name="x")
    ln = L.LayerNormalization(epsilon=0.01)
    model = keras.Model(x_in, L.Reshape((12,))(ln(L.Reshape((4, 3))(x_in))))
    rng = np.random.default_rng(6)
    _randomize(model, rng)
    keys = {id(v): k for k, v in og.build_graph(model)[1]}
    plan = (f"fastckpt-plan 4\ninput x 12 float\nnode t1 layernorm x 0.01 {keys[id(ln.gamma)]} "
            f"{keys[id(ln.beta)]} 3 4\noutput y t1\n").encode()
    monkeypatch.setattr(saved_model, "plan_extra",
                        lambda *a, **k: {inference_plan.PLAN_KEY: plan})
    model.save(str(tmp_path / "m"))
    x = rng.normal(size=(9, 12)).astype(np.float32)
    x[0] = 1.5  # a constant column: variance 0
    _write_rows(tmp_path / "x.txt", x)
    res = _run(example_binary, tmp_path / "m", tmp_path / "x.txt")
    assert res.returncode == 0, res.stderr
    x3 = x.reshape(9, 3, 4).astype(np.float64)
    mean, var = x3.mean(axis=1, keepdims=True), x3.var(axis=1, keepdims=True)
    g, b = ln.gamma.value.reshape(1, 3, 1), ln.beta.value.reshape(1, 3, 1)
    want = ((x3 - mean) / np.sqrt(var + 0.01) * g + b).reshape(9, 12)
    np.testing.assert_allclose(_read_rows(res.stdout), want, atol=2e-6, rtol=1e-5)
