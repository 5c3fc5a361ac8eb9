"""Loading is safe: hostile or broken Keras files give typed errors, never code execution or a crash."""

import json
import os
import zipfile

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastckpt import keras
from fastckpt.errors import (CheckpointMismatchError, CorruptCheckpointError, FastckptError,
                             UnknownObjectError, UnsafeFileError)
from fastckpt.saving import limits
from fastckpt.saving.keras_v3 import load_model_keras, save_model_keras
from fastckpt.saving.legacy_h5 import load_model_h5, save_model_h5
from fastckpt.saving.model_config import model_from_config
from saving_helpers import DATA, tiny_model


def replace_dense_weight(h5_file, name, **dataset):
    """Swaps the first Dense layer's weight `name` (kernel, bias) for create_dataset(**dataset)."""
    with h5py.File(h5_file, "r+") as f:
        g = f["model_weights/dense"]
        del g[f"dense/{name}:0"]
        g.create_dataset(f"dense/{name}:0", **dataset)


@pytest.fixture
def h5_file(tmp_path):
    path = str(tmp_path / "m.h5")
    save_model_h5(tiny_model(), path)
    return path


@pytest.fixture
def keras_file(tmp_path):
    path = str(tmp_path / "m.keras")
    save_model_keras(tiny_model(), path)
    return path


def set_config(path, config):
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = config if isinstance(config, str) else json.dumps(config)


def config_of(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


# --- code in files -----------------------------------------------------------------------------
def test_lambda_layer_written_by_tf_keras_is_refused():
    with pytest.raises(UnsafeFileError, match="Lambda layers store Python code"):
        load_model_h5(os.path.join(DATA, "tf_keras_lambda.h5"))


@pytest.mark.parametrize("entry", [
    {"class_name": "Lambda", "config": {"name": "l", "function": ["4wEAAAAA", None, None]}},
    {"module": "keras.layers", "class_name": "Lambda", "config": {"function": {
        "class_name": "__lambda__", "config": {"code": "AAAA"}}}, "registered_name": None},
    {"class_name": "TFOpLambda", "config": {"function": "math.add"}},
])
def test_lambda_refused_even_when_caller_offers_one(h5_file, entry):
    config = config_of(h5_file)
    config["config"]["layers"].append(entry)
    set_config(h5_file, config)
    with pytest.raises(UnsafeFileError, match="refuses to run code"):
        load_model_h5(h5_file, custom_objects={"Lambda": keras.layers.Dense})


def test_module_in_config_is_never_imported(h5_file, monkeypatch):
    import builtins
    real_import = builtins.__import__
    asked = []

    def spy(name, *a, **k):
        asked.append(name)
        return real_import(name, *a, **k)

    config = config_of(h5_file)
    config["config"]["layers"][1] = {"module": "os", "class_name": "system", "config": {"x": 1},
                                     "registered_name": "os>system"}
    set_config(h5_file, config)
    monkeypatch.setattr(builtins, "__import__", spy)
    with pytest.raises(UnknownObjectError, match=r"'os>system'.*custom_objects"):
        load_model_h5(h5_file)
    assert "os" not in asked


def test_unknown_class_names_itself_and_the_ways_to_provide_it(h5_file):
    config = config_of(h5_file)
    config["config"]["layers"][1]["class_name"] = "MyDense"
    set_config(h5_file, config)
    with pytest.raises(UnknownObjectError) as err:
        load_model_h5(h5_file)
    msg = str(err.value)
    assert "'MyDense'" in msg and "custom_objects" in msg and "custom_object_scope" in msg
    assert "register_keras_serializable" in msg


def test_unknown_optimizer_and_metric(h5_file):
    with h5py.File(h5_file, "r+") as f:
        tc = json.loads(f.attrs["training_config"])
        tc["optimizer_config"]["class_name"] = "Custom>MyOptimizer"
        f.attrs["training_config"] = json.dumps(tc)
    with pytest.raises(UnknownObjectError, match="MyOptimizer"):
        load_model_h5(h5_file)
    assert load_model_h5(h5_file, compile=False).optimizer is None


# --- sizes and shapes --------------------------------------------------------------------------
def test_json_too_large(h5_file, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ATTR_BYTES", 100)
    with pytest.raises(UnsafeFileError, match="limit"):
        load_model_h5(h5_file)


def test_json_too_deep(h5_file):
    set_config(h5_file, "[" * 5000 + "]" * 5000)
    with pytest.raises(UnsafeFileError, match="nested"):
        load_model_h5(h5_file)


@pytest.mark.parametrize("raw,err", [("{not json", CorruptCheckpointError),
                                     ('{"a": NaN}', CorruptCheckpointError),
                                     ('"just a string"', CorruptCheckpointError),
                                     ('{"class_name": "Functional", "config": {}}', CorruptCheckpointError)])
def test_bad_config_json(h5_file, raw, err):
    set_config(h5_file, raw)
    with pytest.raises(err):
        load_model_h5(h5_file)


def test_config_asking_for_huge_weights_is_refused_before_allocating(h5_file):
    config = config_of(h5_file)
    config["config"]["layers"][1]["config"]["units"] = 2**30
    config["config"]["layers"][0]["config"]["batch_input_shape"] = [None, 2**30]
    set_config(h5_file, config)
    with pytest.raises(UnsafeFileError, match="weights"):
        load_model_h5(h5_file)


@pytest.mark.parametrize("shape", [[None, -3], [None, "3"], [None, 3.5], "abc", [None] + [1] * 40])
def test_bad_input_shapes(h5_file, shape):
    config = config_of(h5_file)
    config["config"]["layers"][0]["config"]["batch_input_shape"] = shape
    set_config(h5_file, config)
    with pytest.raises((CorruptCheckpointError, UnsafeFileError)):
        load_model_h5(h5_file)


def test_too_many_layers(h5_file, monkeypatch):
    monkeypatch.setattr(limits, "MAX_LAYERS", 2)
    with pytest.raises(UnsafeFileError, match="layers"):
        load_model_h5(h5_file)


def test_shape_bomb_dataset(h5_file):
    replace_dense_weight(h5_file, "kernel", shape=(100_000, 100_000), dtype="float32")
    with pytest.raises(UnsafeFileError, match="shape bomb"):
        load_model_h5(h5_file)


def test_declared_shape_must_match_model(h5_file):
    replace_dense_weight(h5_file, "kernel", data=np.zeros((5, 4), np.float32))
    with pytest.raises(CheckpointMismatchError, match=r"expected shape \(3, 4\), found \(5, 4\)"):
        load_model_h5(h5_file)


@pytest.mark.parametrize("kind", ["soft", "external"])
def test_links_are_refused(h5_file, kind):
    with h5py.File(h5_file, "r+") as f:
        g = f["model_weights/dense"]
        del g["dense/kernel:0"]
        g["dense/kernel:0"] = (h5py.SoftLink("/model_weights/dense_1/dense_1/kernel:0")
                               if kind == "soft" else h5py.ExternalLink("/etc/passwd", "/x"))
    with pytest.raises(UnsafeFileError, match="link"):
        load_model_h5(h5_file)


def test_string_dataset_is_refused(h5_file):
    replace_dense_weight(h5_file, "bias", data=np.array([b"a", b"b", b"c", b"d"]))
    with pytest.raises(CorruptCheckpointError, match="dtype"):
        load_model_h5(h5_file)


def test_listed_layer_group_missing(h5_file):
    with h5py.File(h5_file, "r+") as f:
        del f["model_weights/dense_1"]
    with pytest.raises(CorruptCheckpointError, match="missing"):
        load_model_h5(h5_file)


def test_not_hdf5(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(CorruptCheckpointError):
        load_model_h5(str(path))


def test_direct_config_limits():
    with pytest.raises(UnsafeFileError):
        model_from_config({"class_name": "Sequential", "config": {"layers": [
            {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 100_000]}},
            {"class_name": "Dense", "config": {"units": 100_000}}]}}, max_params=10**6)


# --- zip archives ------------------------------------------------------------------------------
def rewrite_zip(src, dst, extra=(), drop=(), compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=compress) as zout:
        for info in zin.infolist():
            if info.filename not in drop:
                zout.writestr(info.filename, zin.read(info.filename))
        for name, data in extra:
            zout.writestr(name, data)
    return dst


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil", "C:/evil",
                                  "..\\evil"])
def test_zip_path_traversal(keras_file, tmp_path, name):
    bad = rewrite_zip(keras_file, str(tmp_path / "bad.keras"), extra=[(name, b"x")])
    with pytest.raises(UnsafeFileError, match="escapes"):
        load_model_keras(bad)


def test_zip_bomb(keras_file, tmp_path):
    bad = rewrite_zip(keras_file, str(tmp_path / "bomb.keras"),
                      extra=[("assets/zeros", b"\x00" * (8 * 2**20))], compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(UnsafeFileError, match="decompression bomb"):
        load_model_keras(bad)


def test_deflated_members_are_fine(keras_file, tmp_path):
    ok = rewrite_zip(keras_file, str(tmp_path / "ok.keras"), compress=zipfile.ZIP_DEFLATED)
    assert load_model_keras(ok).count_params() == 26


def test_zip_unsupported_compression_and_member_count(keras_file, tmp_path, monkeypatch):
    bz = rewrite_zip(keras_file, str(tmp_path / "bz.keras"), compress=zipfile.ZIP_BZIP2)
    with pytest.raises(UnsafeFileError, match="compression method 12"):
        load_model_keras(bz)
    monkeypatch.setattr(limits, "MAX_ZIP_MEMBERS", 2)
    with pytest.raises(UnsafeFileError, match="members"):
        load_model_keras(keras_file)


def test_zip_duplicate_and_missing_members(keras_file, tmp_path):
    with pytest.warns(UserWarning, match="Duplicate"):
        dup = rewrite_zip(keras_file, str(tmp_path / "dup.keras"), extra=[("config.json", b"{}")])
    with pytest.raises(UnsafeFileError, match="twice"):
        load_model_keras(dup)
    for member in ("config.json", "model.weights.h5"):
        missing = rewrite_zip(keras_file, str(tmp_path / f"no-{member}.keras"), drop=(member,))
        with pytest.raises(CorruptCheckpointError, match=member.replace(".", r"\.")):
            load_model_keras(missing)


def test_zip_member_lying_about_its_size(keras_file, tmp_path):
    # Patch the central directory so config.json claims fewer bytes than it holds.
    data = bytearray(open(keras_file, "rb").read())
    with zipfile.ZipFile(keras_file) as zf:
        info = zf.getinfo("config.json")
    # central directory entry: 46 fixed bytes, then the name; uncompressed size at offset 24
    header = data.find(b"config.json", data.find(b"PK\x01\x02")) - 46
    assert data[header:header + 4] == b"PK\x01\x02"
    data[header + 24:header + 28] = (info.file_size // 2).to_bytes(4, "little")
    bad = tmp_path / "liar.keras"
    bad.write_bytes(bytes(data))
    with pytest.raises((UnsafeFileError, CorruptCheckpointError)):
        load_model_keras(str(bad))


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.keras"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CorruptCheckpointError, match="ZIP"):
        load_model_keras(str(path))


# --- fuzzing: any damage gives a typed error (or, if harmless, a model) -------------------------
ALLOWED = (FastckptError, NotImplementedError)


def _load_mutated(tmp_path_factory, flips, suffix, save, load):
    """Byte-flip a saved model file; loading it may only raise one of the typed errors."""
    base = tmp_path_factory.getbasetemp() / f"fuzz{suffix}"
    if not base.exists():
        save(tiny_model(), str(base))
    data = bytearray(base.read_bytes())
    for pos, val in flips:
        data[pos % len(data)] = val
    path = tmp_path_factory.mktemp("f") / f"m{suffix}"
    path.write_bytes(bytes(data))
    try:
        load(str(path))
    except ALLOWED:
        pass


_FLIPS = st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_FLIPS)
def test_fuzz_h5(tmp_path_factory, flips):
    _load_mutated(tmp_path_factory, flips, ".h5", save_model_h5, load_model_h5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_FLIPS)
def test_fuzz_keras(tmp_path_factory, flips):
    _load_mutated(tmp_path_factory, flips, ".keras", save_model_keras, load_model_keras)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_under_checkpoint_names_are_refused_not_waited_on(tmp_path):
    # A plain open() of a FIFO blocks until a writer appears: every reader must refuse it at once.
    # Run in a child with a timeout, so that a regression fails here instead of hanging the suite.
    import subprocess
    import sys
    script = r'''
import os, sys
from fastckpt import keras, train
from fastckpt.checkpoint import BundleReader
d = sys.argv[1]
m = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
m.compile("adam", "sparse_categorical_crossentropy")
m.save_weights(os.path.join(d, "good", "cp.ckpt"))
cases = []
def fifo(name):
    path = os.path.join(d, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mkfifo(path)
    return path
fifo("a/cp.ckpt.index")
cases.append(("index", lambda: BundleReader(os.path.join(d, "a", "cp.ckpt"))))
fifo("b/cp.ckpt.data-00000-of-00001")
os.link(os.path.join(d, "good", "cp.ckpt.index"), os.path.join(d, "b", "cp.ckpt.index"))
cases.append(("data shard", lambda: BundleReader(os.path.join(d, "b", "cp.ckpt")).get_tensor(
    "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE")))
fifo("c/cp.ckpt.fastckpt-commit")
cases.append(("journal", lambda: m.load_weights(os.path.join(d, "c", "cp.ckpt"))))
fifo("e/checkpoint")
cases.append(("state file", lambda: train.latest_checkpoint(os.path.join(d, "e"))))
cases.append(("model file", lambda: keras.models.load_model(fifo("f/model.h5"))))
cases.append(("h5 weights", lambda: m.load_weights(fifo("g/w.h5"))))
fifo("h/.cp.ckpt.fastckpt-keep.json")
cases.append(("ModelCheckpoint ledger", lambda: m.fit(
    [[0.0, 0.0, 0.0]], [0], epochs=1, verbose=0,
    callbacks=[keras.callbacks.ModelCheckpoint(os.path.join(d, "h", "cp.ckpt"), save_weights_only=True,
                                               max_to_keep=2)])))
for what, fn in cases:
    try:
        fn()
    except OSError as e:
        assert "not a regular file" in str(e), (what, e)
        print(what, "refused:", type(e).__name__)
    else:
        raise SystemExit(f"{what}: a FIFO was accepted")
print("OK")
'''
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stdout + out.stderr


# --- typed errors that name the file: model configs and archive members --------------------------
@pytest.mark.parametrize("config", [None, "{}", '{"class_name": "Sequential"}', "[]",
                                    '{"class_name": "Sequential", "config": {"layers": [1]}}',
                                    '{"class_name": "Sequential", "config": {"layers": 3}}'])
def test_missing_or_broken_model_config_names_the_file(h5_file, config):
    with h5py.File(h5_file, "r+") as f:
        if config is None:
            del f.attrs["model_config"]
        else:
            f.attrs["model_config"] = config
    with pytest.raises(CorruptCheckpointError) as err:
        keras.models.load_model(h5_file)
    assert h5_file in str(err.value) and err.value.path == h5_file


@pytest.mark.parametrize("member,data", [
    ("config.json", None), ("config.json", b"{"), ("config.json", b"{}"), ("config.json", b"[1]"),
    ("config.json", b'{"class_name": "Sequential"}'), ("metadata.json", b"\xff"),
    ("metadata.json", b'{"fastckpt_rng_state": {"x": 1}}'), ("model.weights.h5", None),
    ("model.weights.h5", b"garbage"), ("model.weights.h5", b""),
])
def test_bad_keras_archive_members_name_the_archive(keras_file, tmp_path, member, data):
    bad = str(tmp_path / "bad.keras")
    rewrite_zip(keras_file, bad, drop=(member,),
                extra=[] if data is None else [(member, data)])
    with pytest.raises(CorruptCheckpointError) as err:
        keras.models.load_model(bad)
    assert bad in str(err.value) and (err.value.path or "").startswith(bad), str(err.value)
