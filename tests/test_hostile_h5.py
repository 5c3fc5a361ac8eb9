"""Hostile HDF5 and .keras files: every layout fastckpt reads (tf_keras and Keras 3 weights, tf_keras
.h5 models, .keras archives) goes through one checked walk, so a file can neither make a load read
other files nor cost much more than its own size in memory or time.

The loads that could blow up run in a child process (``saving_helpers.hostile_load``), which
reports the error, the time and how much its peak RSS grew; the bounds are generous and only
detect blow-ups (a load that reads what the file declares instead of what it holds).
"""

import os
import struct
import tempfile
import zipfile
from contextlib import contextmanager

import h5py
import numpy as np
import pytest

from fastckpt import keras
from fastckpt.errors import CorruptCheckpointError, UnsafeFileError
from fastckpt.saving import limits
from saving_helpers import DATA, hostile_load, tiny_model

#: layout -> (file name, how it is loaded)
LAYOUTS = {
    "tf_keras_weights": ("w.h5", "weights"),
    "keras3_weights": ("w.weights.h5", "weights"),
    "tf_keras_model": ("m.h5", "model"),
    "keras_archive": ("m.keras", "model"),
}
MB = 2**20


def save_good(layout, directory, name=None):
    fname, kind = LAYOUTS[layout]
    path = str(directory / (name or fname))
    m = tiny_model()
    if kind == "weights":
        m.save_weights(path)
    else:
        m.save(path)
    return path


def load(layout, path):
    if LAYOUTS[layout][1] == "weights":
        m = tiny_model()
        m.load_weights(path)
        return m
    return keras.models.load_model(path)


@contextmanager
def edit_h5(path):
    """The HDF5 tree of `path` opened for writing (for a .keras, its model.weights.h5 member)."""
    if not path.endswith(".keras"):
        with h5py.File(path, "r+") as f:
            yield f
        return
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    with tempfile.TemporaryDirectory() as d:
        inner = os.path.join(d, "w.h5")
        with open(inner, "wb") as out:
            out.write(members["model.weights.h5"])
        with h5py.File(inner, "r+") as f:
            yield f
        with open(inner, "rb") as src:
            members["model.weights.h5"] = src.read()
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)


class Slot:
    """The first layer's kernel in either layout, and a way to list more weights beside it."""

    def __init__(self, f):
        if "layers" in f:  # Keras 3: layers/<class name>/vars/<i>
            self.group, self.name, self.keras3 = f["layers/dense/vars"], "0", True
        else:  # tf_keras: <layer>/<weight name>, listed in weight_names
            root = f["model_weights"] if "model_weights" in f else f
            layer = root.attrs["layer_names"][0].decode()
            self.group, self.keras3 = root[layer], False
            self.name = self.group.attrs["weight_names"][0].decode()

    def replace(self, make):
        del self.group[self.name]
        make(self.group, self.name)

    def add(self, count, make):
        """Adds `count` more weights to the first layer, made by make(group, name, i)."""
        if self.keras3:
            names = [str(len(self.group) + i) for i in range(count)]
        else:
            names = [f"{self.name.rsplit('/', 1)[0]}/extra{i}:0" for i in range(count)]
            self.group.attrs["weight_names"] = np.array(
                list(self.group.attrs["weight_names"]) + [n.encode() for n in names])
        for i, n in enumerate(names):
            make(self.group, n, i)


def plant(path, replace=None, add=0, make_extra=None):
    with edit_h5(path) as f:
        slot = Slot(f)
        if replace is not None:
            slot.replace(replace)
        if add:
            slot.add(add, make_extra)


def assert_refused(result, path, what):
    assert result["error"] is not None, f"{what}: loaded, kernel bytes {result.get('kernel', '')[:96]}"
    assert "FastckptError" in result["mro"], f"{what}: untyped {result['error']}: {result['message']}"
    assert result["error"] in ("UnsafeFileError", "CorruptCheckpointError"), (what, result)
    assert os.path.basename(path) in result["message"], (what, result["message"])


def bounded(result, path, what):
    size_mb = os.path.getsize(path) / MB
    # Generous: a hostile file may cost its own size a few times over, never what it declares.
    assert result["grew_mb"] < 48 + 3 * size_mb, (what, size_mb, result)
    assert result["seconds"] < 60, (what, result)


@pytest.fixture(params=list(LAYOUTS))
def layout(request):
    return request.param


# --- other files: external storage, virtual datasets, external and soft links ----------------------
def other_file(directory):
    secret = directory / "secret.bin"
    secret.write_bytes(b"SECRET!!" * 64)
    with h5py.File(directory / "other.h5", "w") as f:
        f.create_dataset("data", data=np.full((3, 4), 7, np.float32))
    return str(secret), str(directory / "other.h5")


def test_external_storage_is_refused(tmp_path, layout):
    secret, _ = other_file(tmp_path)
    path = save_good(layout, tmp_path)
    for source in (secret, "/etc/passwd"):
        plant(path, replace=lambda g, n: g.create_dataset(n, shape=(3, 4), dtype="f4",
                                                          external=[(source, 0, 48)]))
        with pytest.raises(UnsafeFileError, match="other files") as err:
            load(layout, path)
        assert os.path.basename(path) in str(err.value)


def test_virtual_dataset_is_refused(tmp_path, layout):
    _, other = other_file(tmp_path)
    path = save_good(layout, tmp_path)

    def virtual(g, n):
        lay = h5py.VirtualLayout(shape=(3, 4), dtype="f4")
        lay[:] = h5py.VirtualSource(other, "data", shape=(3, 4))
        g.create_virtual_dataset(n, lay)

    plant(path, replace=virtual)
    with pytest.raises(UnsafeFileError, match="other files|virtual"):
        load(layout, path)


@pytest.mark.parametrize("link", ["external", "soft_loop", "soft"])
def test_links_other_than_hard_are_refused(tmp_path, layout, link):
    _, other = other_file(tmp_path)
    path = save_good(layout, tmp_path)

    def make(g, n):
        if link == "external":
            g[n] = h5py.ExternalLink(other, "/data")
        elif link == "soft_loop":
            g[n] = h5py.SoftLink(f"{g.name}/{n}")
        else:
            g[n] = h5py.SoftLink(g.parent.name)

    plant(path, replace=make)
    with pytest.raises(UnsafeFileError, match="link") as err:
        load(layout, path)
    assert os.path.basename(path) in str(err.value)


def test_hard_link_cycle_and_duplicate_objects(tmp_path, layout):
    path = save_good(layout, tmp_path)
    plant(path, add=1, make_extra=lambda g, n, i: g.__setitem__(n, g.parent))  # a cycle
    with pytest.raises(UnsafeFileError, match="more than once"):
        load(layout, path)


# --- sizes: declared vs stored, one dataset and many --------------------------------------------------
def test_declared_4_tib_is_refused_before_allocating(tmp_path, layout):
    path = save_good(layout, tmp_path)
    plant(path, replace=lambda g, n: g.create_dataset(n, shape=(2**40,), dtype="f4"))
    with pytest.raises(UnsafeFileError, match="declares"):
        load(layout, path)


def _unallocated_2gib(g, n):
    g.create_dataset(n, shape=(2**29,), dtype="f4")  # contiguous, never written: all fill value


def _sparse_chunked(g, n, i=0):
    # 64 MiB declared in 64 KiB chunks, 17 of 1024 chunks written: 1.7 % stored, which a per-dataset
    # 100x ratio check lets through, and eight of them make 512 MiB from an 8.5 MiB file.
    ds = g.create_dataset(n, shape=(2**24,), dtype="f4", chunks=(2**14,))
    ds[: 17 * 2**14] = np.random.default_rng(i).random(17 * 2**14, dtype=np.float32)


def _gzip_chunked(g, n, i=0):
    # 32 MiB declared, gzip'd to ~1.3 % (each 1 MiB chunk has 12 KiB of noise): under 100x per
    # dataset, but eight of them declare 256 MiB in a 3.5 MiB file.
    data = np.zeros(2**23, np.float32)
    rng = np.random.default_rng(i)
    for c in range(0, data.size, 2**18):
        data[c:c + 3072] = rng.random(3072, dtype=np.float32)
    g.create_dataset(n, data=data, chunks=(2**18,), compression="gzip", compression_opts=1)


def _hard_links(count):
    state = {}

    def make(g, n, i):
        if "big" not in state:  # one real 4 MiB dataset, then hard links to it under more names
            state["big"] = g.create_dataset(n, data=np.random.default_rng(0).random(2**20, np.float32))
        else:
            g[n] = state["big"]
    return make


BOMBS = {
    "unallocated_2gib": dict(replace=_unallocated_2gib),
    "sparse_chunks_x8": dict(add=8, make_extra=_sparse_chunked),
    "gzip_chunks_x8": dict(add=8, make_extra=_gzip_chunked),
    "hard_links_x64": dict(add=64, make_extra=_hard_links(64)),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_memory_bombs_cost_the_file_not_the_declaration(tmp_path, layout, bomb):
    good = save_good(layout, tmp_path, "good" + LAYOUTS[layout][0])
    path = save_good(layout, tmp_path)
    spec = dict(BOMBS[bomb])
    if bomb == "hard_links_x64":
        spec["make_extra"] = _hard_links(64)
    plant(path, **spec)
    result = hostile_load(LAYOUTS[layout][1], path, good)
    assert_refused(result, path, bomb)
    bounded(result, path, bomb)


def test_total_declared_bytes_are_bounded_by_the_file(tmp_path, monkeypatch):
    # Each gzip'd dataset passes the per-dataset ratio; together they declare far more than the file.
    path = save_good("tf_keras_model", tmp_path)
    plant(path, add=8, make_extra=_gzip_chunked)
    monkeypatch.setattr(limits, "MAX_STORAGE_RATIO", 10**6)
    with pytest.raises(UnsafeFileError, match="in total"):
        load("tf_keras_model", path)


def test_unknown_filters_are_refused(tmp_path):
    path = save_good("tf_keras_model", tmp_path)
    plant(path, replace=lambda g, n: g.create_dataset(n, data=np.ones((3, 4), np.float32),
                                                      compression="lzf"))
    with pytest.raises(UnsafeFileError, match="filter"):
        load("tf_keras_model", path)


def test_gzip_and_chunked_weights_that_are_whole_still_load(tmp_path, layout):
    path = save_good(layout, tmp_path)
    value = np.arange(12, dtype=np.float32).reshape(3, 4)
    plant(path, replace=lambda g, n: g.create_dataset(n, data=value, chunks=(2, 2),
                                                      compression="gzip", shuffle=True,
                                                      fletcher32=True))
    np.testing.assert_array_equal(load(layout, path).layers[0].weights[0].value, value)


# --- counts and depth ---------------------------------------------------------------------------------
def test_object_count_is_bounded(tmp_path, layout, monkeypatch):
    path = save_good(layout, tmp_path)
    monkeypatch.setattr(limits, "MAX_H5_OBJECTS", 40)
    with edit_h5(path) as f:
        g = f.create_group("junk")
        for i in range(41):
            g.create_group(str(i))
    with pytest.raises(UnsafeFileError, match="HDF5 objects"):
        load(layout, path)


def test_depth_is_bounded(tmp_path, layout):
    path = save_good(layout, tmp_path)
    with edit_h5(path) as f:
        f.create_group("/".join(["d"] * (limits.MAX_H5_DEPTH + 1)))
    with pytest.raises(UnsafeFileError, match="deep"):
        load(layout, path)


def test_oversized_name_list_attribute(tmp_path, monkeypatch):
    path = save_good("tf_keras_weights", tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["layer_names"] = np.array([b"dense_%03d" % i for i in range(40)])
    monkeypatch.setattr(limits, "MAX_ATTR_BYTES", 100)
    with pytest.raises(UnsafeFileError, match="layer_names"):
        load("tf_keras_weights", path)


def test_goldens_written_by_keras_pass_the_walk():
    for name in sorted(os.listdir(DATA)):
        if name.endswith(".h5"):
            with limits.open_h5(os.path.join(DATA, name)) as tree:
                assert tree.datasets, name


def test_only_the_checked_walk_opens_hdf5_for_reading():
    # The guard against a new reader that forgets the checks: fastckpt opens HDF5 files for
    # reading in one place, limits.open_h5.
    import re
    root = os.path.dirname(os.path.dirname(limits.__file__))
    offenders = []
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn.endswith(".py"):
                p = os.path.join(dirpath, fn)
                src = open(p, encoding="utf-8").read()
                for m in re.finditer(r"h5py\.File\(([^)]*)\)", src):
                    if '"w"' not in m.group(1) and p != limits.__file__:
                        offenders.append(f"{os.path.relpath(p, root)}: {m.group(0)}")
    assert offenders == []


# --- .keras archives: the central directory is bounded before zipfile parses it ----------------------
def cd_only_zip(path, entries, declared_entries=None):
    """A ZIP holding only a central directory of `entries` empty members (no local headers) and
    its end record, which may declare another entry count."""
    names = [f"{i:x}".encode() for i in range(entries)]
    cd = b"".join(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0,
                              len(n), 0, 0, 0, 0, 0, 0) + n for n in names)
    count = entries if declared_entries is None else declared_entries
    count = min(count, 0xFFFF)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(cd), 0, 0)
    with open(path, "wb") as f:
        f.write(cd + eocd)
    return path


@pytest.mark.parametrize("declared", [None, 3])
def test_huge_central_directory_is_refused_before_parsing(tmp_path, declared):
    good = save_good("keras_archive", tmp_path, "good.keras")
    path = cd_only_zip(str(tmp_path / "many.keras"), 600_000, declared)
    result = hostile_load("model", path, good)
    assert_refused(result, path, "600k members")
    assert "central directory" in result["message"] or "members" in result["message"]
    assert result["grew_mb"] < 16 and result["seconds"] < 30, result


def test_zip64_member_count_is_read(tmp_path):
    path = str(tmp_path / "z64.keras")
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(limits.MAX_ZIP_MEMBERS + 1):
            zf.writestr(f"{i}", b"")
    with pytest.raises(UnsafeFileError, match=str(limits.MAX_ZIP_MEMBERS + 1)):
        keras.models.load_model(path)
    # more than 65535 entries needs the zip64 end record, which carries the true count
    with zipfile.ZipFile(path, "a") as zf:
        for i in range(limits.MAX_ZIP_MEMBERS + 1, 70_000):
            zf.writestr(f"{i}", b"")
    with pytest.raises(UnsafeFileError, match="70000"):
        keras.models.load_model(path)


def test_zip_end_record_matches_zipfile_on_real_archives(tmp_path):
    good = save_good("keras_archive", tmp_path)
    with zipfile.ZipFile(good, "a") as zf:
        zf.comment = b"an archive comment moves the end record off the last 22 bytes"
    with open(good, "rb") as f:
        entries, _ = limits.zip_directory_bounds(f, good)
    with zipfile.ZipFile(good) as zf:
        assert entries == len(zf.infolist())
    assert load("keras_archive", good).count_params() == 26


def test_hdf5_member_of_an_archive_is_named_by_the_archive(tmp_path):
    path = save_good("keras_archive", tmp_path)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["model.weights.h5"] = b"\x89HDF\r\n\x1a\n" + b"\0" * 64
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    with pytest.raises(CorruptCheckpointError, match=r"m\.keras.*model\.weights\.h5") as err:
        load("keras_archive", path)
    assert "fastckpt-keras-" not in str(err.value)  # not the temporary copy's name


def test_json_of_many_tiny_values_is_refused_before_parsing(tmp_path):
    # 8 MiB of "{}," would parse into ~2.8 M dicts (~180 MB); the count is checked on the text.
    path = save_good("tf_keras_model", tmp_path)
    good = save_good("tf_keras_model", tmp_path, "good.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = "[" + "{}," * (8 * MB // 3) + "{}]"
    result = hostile_load("model", path, good)
    assert_refused(result, path, "8 MiB of {}")
    assert "JSON values" in result["message"] and result["grew_mb"] < 48, result
