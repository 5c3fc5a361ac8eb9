"""Datasets, offline: Keras' MNIST cache file (written by the tests) and the UCI digits in MNIST's shapes."""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import sys
import urllib.error

import numpy as np
import pytest

from fastckpt.datasets import DatasetDownloadError, DatasetError, digits, mnist


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")
    monkeypatch.setattr(mnist, "_urlopen", forbidden)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    return tmp_path


def fake_mnist(n_train=6, n_test=4, seed=0, **override):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays.update(override)
    return arrays


def npz_bytes(arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable context manager; optionally fails after some bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None, exc: BaseException | None = None):
        super().__init__(data)
        self.fail_after, self.exc = fail_after, exc

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise self.exc
        return super().read(min(n, self.fail_after - self.tell()) if self.fail_after is not None else n)


def leftovers(directory) -> list:
    return sorted(p for p in os.listdir(directory) if p.endswith(".part"))


# -- MNIST: loading the cached file -------------------------------------------------------------------

def test_loads_keras_file_from_keras_home(keras_home):
    arrays = fake_mnist()
    (keras_home / "datasets" / "mnist.npz").write_bytes(npz_bytes(arrays))
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    for name, got in [("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)]:
        assert got.dtype == np.uint8 and np.array_equal(got, arrays[name])


def test_custom_name_and_absolute_path(keras_home, tmp_path):
    arrays = fake_mnist(seed=3)
    (keras_home / "datasets" / "other.npz").write_bytes(npz_bytes(arrays))
    assert np.array_equal(mnist.load_data("other.npz")[0][0], arrays["x_train"])
    elsewhere = tmp_path / "abs.npz"
    elsewhere.write_bytes(npz_bytes(arrays))
    assert np.array_equal(mnist.load_data(str(elsewhere))[1][1], arrays["y_test"])


def test_default_cache_is_home_dot_keras_with_tmp_fallback(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert mnist._cache_dirs() == [str(tmp_path / ".keras" / "datasets"), "/tmp/.keras/datasets"]


def test_unwritable_cache_falls_back(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # makedirs below a file fails, even as root
    good = tmp_path / "fallback" / "datasets"
    assert mnist._writable_dir([str(blocker / "datasets"), str(good)]) == str(good)
    with pytest.raises(DatasetDownloadError, match="writable cache directory"):
        mnist._writable_dir([str(blocker / "datasets")])


def test_a_file_in_a_later_cache_dir_is_a_hit(monkeypatch, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(); second.mkdir()
    (second / "mnist.npz").write_bytes(npz_bytes(fake_mnist()))
    monkeypatch.setattr(mnist, "_cache_dirs", lambda: [str(first), str(second)])
    assert mnist._resolve("mnist.npz") == (str(second / "mnist.npz"), True)


# -- MNIST: downloading when absent (network faked) ----------------------------------------------------

def test_missing_file_without_network_says_what_and_where(keras_home, monkeypatch, capsys):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(mnist, "_urlopen", offline)
    with pytest.raises(DatasetDownloadError) as info:
        mnist.load_data()
    msg = str(info.value)
    assert str(keras_home / "datasets" / "mnist.npz") in msg and mnist.ORIGIN in msg
    assert "name resolution" in msg and isinstance(info.value, OSError)
    assert os.listdir(keras_home / "datasets") == []


def test_download_is_verified_then_renamed_into_place(keras_home, monkeypatch, capsys):
    arrays = fake_mnist(seed=7)
    data = npz_bytes(arrays)
    calls = []

    def serve(url, timeout):
        calls.append(url)
        return FakeResponse(data)
    monkeypatch.setattr(mnist, "_urlopen", serve)
    monkeypatch.setattr(mnist, "SHA256", hashlib.sha256(data).hexdigest())
    (x_train, _), _ = mnist.load_data()
    assert np.array_equal(x_train, arrays["x_train"]) and calls == [mnist.ORIGIN]
    assert (keras_home / "datasets" / "mnist.npz").read_bytes() == data
    assert leftovers(keras_home / "datasets") == []
    assert capsys.readouterr().out == f"Downloading data from {mnist.ORIGIN}\n"
    mnist.load_data()  # cached now: no second download
    assert calls == [mnist.ORIGIN]


def test_checksum_mismatch_discards_the_download(keras_home, monkeypatch, capsys):
    monkeypatch.setattr(mnist, "_urlopen", lambda url, timeout: FakeResponse(npz_bytes(fake_mnist())))
    with pytest.raises(DatasetDownloadError, match=f"Expected SHA-256 {mnist.SHA256}"):
        mnist.load_data()
    assert os.listdir(keras_home / "datasets") == []


@pytest.mark.parametrize("exc", [OSError("connection reset"), KeyboardInterrupt()])
def test_interrupted_download_leaves_nothing_behind(keras_home, monkeypatch, exc, capsys):
    data = npz_bytes(fake_mnist(n_train=200))
    monkeypatch.setattr(mnist, "_CHUNK", 4096)
    monkeypatch.setattr(mnist, "_urlopen", lambda url, timeout: FakeResponse(data, fail_after=8192, exc=exc))
    with pytest.raises(DatasetDownloadError if isinstance(exc, OSError) else KeyboardInterrupt):
        mnist.load_data()
    assert os.listdir(keras_home / "datasets") == []


def test_published_constants_are_keras():
    assert mnist.ORIGIN == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
    assert mnist.SHA256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


# -- MNIST: bad files ----------------------------------------------------------------------------------

def write(keras_home, data: bytes):
    path = keras_home / "datasets" / "mnist.npz"
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("make", [
    lambda: npz_bytes(fake_mnist())[: len(npz_bytes(fake_mnist())) // 2],  # truncated archive
    lambda: b"",  # empty file
    lambda: b"<html>503 Service Unavailable</html>",  # an error page saved as the file
])
def test_corrupt_file_gives_a_typed_error_naming_it(keras_home, make):
    path = write(keras_home, make())
    with pytest.raises(DatasetError) as info:
        mnist.load_data()
    assert path in str(info.value) and isinstance(info.value, ValueError)


class _Exploit:
    def __reduce__(self):
        return (exec, ("import builtins; builtins._fastckpt_pwned = True",))


def test_pickled_arrays_are_refused_and_never_run(keras_home):
    arrays = fake_mnist()
    arrays["y_train"] = np.array([_Exploit()], dtype=object)
    path = write(keras_home, npz_bytes(arrays))
    with pytest.raises(DatasetError, match="without pickle") as info:
        mnist.load_data()
    assert path in str(info.value)
    assert not hasattr(builtins, "_fastckpt_pwned")


@pytest.mark.parametrize("override, fragment", [
    ({"x_train": np.zeros((6, 28, 28), np.float32)}, "x_train in .* to be uint8, got float32"),
    ({"x_test": np.zeros((4, 28, 27), np.uint8)}, r"x_test in .* shape \(n, 28, 28\), got \(4, 28, 27\)"),
    ({"y_train": np.zeros(5, np.uint8)}, r"y_train in .* shape \(6,\), got \(5,\)"),
    ({"y_test": np.array([0, 1, 2, 12], np.uint8)}, "labels 0-9 in y_test of .*, found 12"),
])
def test_wrong_arrays_are_named(keras_home, override, fragment):
    write(keras_home, npz_bytes(fake_mnist(**override)))
    with pytest.raises(DatasetError, match=fragment):
        mnist.load_data()


def test_missing_keys_and_plain_npy_are_named(keras_home):
    arrays = fake_mnist()
    del arrays["y_test"]
    write(keras_home, npz_bytes(arrays))
    with pytest.raises(DatasetError, match=r"missing \['y_test'\]"):
        mnist.load_data()
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.uint8))
    write(keras_home, buf.getvalue())
    with pytest.raises(DatasetError, match="an .npz archive, got a single .npy array"):
        mnist.load_data()


def test_bad_path_arguments():
    with pytest.raises(TypeError, match="file name such as 'mnist.npz', got int"):
        mnist.load_data(3)
    with pytest.raises(ValueError, match="got ''"):
        mnist.load_data("")


# -- digits --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sklearn_datasets():
    # Per test, not at module level, where a skip hid every test of this file (and was never a
    # failure under FASTCKPT_REQUIRE_INTEROP=1).
    return pytest.importorskip("sklearn.datasets")


needs_sklearn = pytest.mark.usefixtures("sklearn_datasets")


@pytest.fixture(scope="module")
def uci(sklearn_datasets):
    bunch = sklearn_datasets.load_digits()
    return bunch.images, bunch.target


@needs_sklearn
def test_digits_have_mnist_shapes_and_dtypes():
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    assert x_train.shape == (1438, 28, 28) and x_test.shape == (359, 28, 28)
    assert y_train.shape == (1438,) and y_test.shape == (359,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert x_train.max() == 255 and x_train.min() == 0 and set(np.unique(y_train)) == set(range(10))
    # MNIST-like centring: the 4-pixel frame around the 20x20 box is empty.
    border = np.ones((28, 28), bool)
    border[4:24, 4:24] = False
    assert not x_train[:, border].any() and not x_test[:, border].any()


def test_split_is_a_stratified_partition_of_all_1797_scans(uci):
    images, labels = uci
    (x_train, y_train), (x_test, y_test) = digits.load_data(test_split=0.5, seed=3)
    full = digits.to_mnist_images(images)

    def key(x, y):
        assert len(x) == len(y)
        return sorted(xi.tobytes() + bytes([yi]) for xi, yi in zip(x, y))

    assert key(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])) == key(full, labels)
    for c in range(10):
        n = int((labels == c).sum())
        assert int((y_test == c).sum()) == round(n * 0.5)
        assert int((y_train == c).sum()) == n - round(n * 0.5)


@needs_sklearn
def test_split_is_deterministic_and_seeded():
    a, b, c = digits.load_data(seed=0), digits.load_data(seed=0), digits.load_data(seed=1)
    assert len(a[0] + a[1]) == len(b[0] + b[1]) == 4
    assert all(np.array_equal(p, q) for p, q in zip(a[0] + a[1], b[0] + b[1]))
    assert not np.array_equal(a[1][1], c[1][1])
    # Shuffled across classes: the first 100 training images hold every digit.
    assert set(a[0][1][:100].tolist()) == set(range(10))


def test_images_are_faithful_to_the_8x8_scans(uci):
    images, _ = uci
    up = digits.to_mnist_images(images)[:, 4:24, 4:24].astype(np.float64)
    # Area-averaging back down by 2.5x2.5 cells recovers each scan closely.
    down = digits._resize_matrix(20, 8)
    back = np.einsum("ij,njk,lk->nil", down / down.sum(1, keepdims=True), up, down / down.sum(1, keepdims=True))
    orig = images * (255 / 16)
    corr = [np.corrcoef(b.ravel(), o.ravel())[0, 1] for b, o in zip(back, orig)]
    assert min(corr) > 0.9 and float(np.mean(np.abs(back - orig))) < 20


def test_resize_matrix_properties():
    for src, dst in [(8, 20), (3, 7), (20, 8), (5, 5)]:
        m = digits._resize_matrix(src, dst)
        assert m.shape == (dst, src) and np.allclose(m.sum(axis=1), 1.0) and (m >= 0).all()
    assert np.allclose(digits._resize_matrix(6, 6), np.eye(6))
    flat = np.full((1, 8, 8), 8.0)
    box = digits.to_mnist_images(flat)[0, 4:24, 4:24].astype(int)
    assert (np.abs(box - 127.5) == 0.5).all()  # a flat 8/16 stays flat: 127.5, rounded either way
    assert (digits.to_mnist_images(flat * 2)[0, 4:24, 4:24] == 255).all()


@pytest.mark.interop
def test_resize_matches_tensorflow_bilinear():
    tf = pytest.importorskip("tensorflow")
    img = np.random.default_rng(0).random((3, 8, 8))
    ref = tf.image.resize(img[..., None], (20, 20), method="bilinear").numpy()[..., 0]
    m = digits._resize_matrix(8, 20)
    assert np.abs(np.einsum("ij,njk,lk->nil", m, img, m) - ref).max() < 1e-5


@pytest.mark.parametrize("kwargs", [{"test_split": 0}, {"test_split": 1}, {"test_split": 1.5}, {"test_split": True},
                                    {"test_split": "0.2"}, {"seed": -1}, {"seed": 1.5}, {"seed": True},
                                    {"seed": 2**32}])
@needs_sklearn
def test_digits_rejects_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"Expected {name} to be .*got {kwargs[name]!r}"):
        digits.load_data(**kwargs)


@needs_sklearn
def test_tiny_split_still_holds_out_every_digit():
    (_, y_train), (_, y_test) = digits.load_data(test_split=0.001)
    assert len(y_test) == 10 and set(y_test.tolist()) == set(range(10)) and len(y_train) == 1787


def test_missing_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"pip install fastckpt\[demo\]"):
        digits.load_data()


@pytest.mark.parametrize("images, exc, fragment", [
    (np.zeros((8, 8)), ValueError, r"shape \(n, height, width\), got \(8, 8\)"),
    (np.zeros((2, 0, 8)), ValueError, r"got \(2, 0, 8\)"),
    (np.array([[["a"]]]), TypeError, "real numeric images, got dtype <U1"),
])
def test_to_mnist_images_rejects_bad_input(images, exc, fragment):
    with pytest.raises(exc, match=fragment):
        digits.to_mnist_images(images)
    with pytest.raises(ValueError, match="max_value > 0, got 0"):
        digits.to_mnist_images(np.zeros((1, 8, 8)), max_value=0)
