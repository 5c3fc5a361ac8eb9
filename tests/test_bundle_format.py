"""Tensor bundle codec: golden bytes vs TensorFlow, round trips, bad files, GIL, limits."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import threading
import time

import numpy as np
import pytest

from fastckpt import ops
from fastckpt.checkpoint import BundleReader, atomic_write_file, bundle_exists, delete_bundle, write_bundle
from fastckpt.checkpoint import bundle as B
from fastckpt.errors import CheckpointNotFoundError, CorruptCheckpointError
from saving_helpers import held_deleted_files, needs_proc_fd

DATA = os.path.join(os.path.dirname(__file__), "data")
_spec = importlib.util.spec_from_file_location("make_golden", os.path.join(DATA, "make_golden.py"))
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

# The 243-byte .index TensorFlow writes for small_tensors() (a/kernel = arange(12)).
SMALL_INDEX_HEX = (
    "0000060801 1a02080100060f612f626961730801120412020804281035938deb32020615"
    "6b65726e656c0801120812020803120208042010283035d7a655dc00040d626c6f62080712"
    "002040280835f452c78e0005116e616d657308071204120208032048281135dcbfb9170006"
    "0d7363616c61720801120020592804350 7d8750d01030d74657008091200205d28083 5bb"
    "d79f11000000000100000000952308800000000001000000 00c0f2a1b000010374009d01"
    "00000000010000 0000d8583deba20108af010f" + "00" * 34 + "57fb808b247547db")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def bf16_bits(x):
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def dtype_items():
    items = []
    for k, v in golden.dtype_tensors().items():
        if k.startswith("bf16"):
            items.append((k.encode(), 14, list(np.shape(v)), bf16_bits(v)))
        else:
            items.append(B._prepare(k, v))
    return items


# ---------------------------------------------------------------------------------------------
# Golden bytes
# ---------------------------------------------------------------------------------------------

def test_small_index_matches_formats_md(tmp_path):
    expected = bytes.fromhex(SMALL_INDEX_HEX.replace(" ", ""))
    assert len(expected) == 243 and read(os.path.join(DATA, "small.index")) == expected
    write_bundle(tmp_path / "small", golden.small_tensors())
    assert read(tmp_path / "small.index") == expected
    data = read(tmp_path / "small.data-00000-of-00001")
    assert data == read(os.path.join(DATA, "small.data-00000-of-00001")) and len(data) == 101
    # blob / names string layouts at offsets 64 and 72, unaligned int64 at 93.
    assert data[64:72] == bytes.fromhex("03633f7f28010203")
    assert data[72:89] == bytes.fromhex("0500053bde4ff8") + b"hello" + b"w\0rld"
    assert data[93:] == (7).to_bytes(8, "little")


def test_table_builder_reproduces_tf_index():
    raw = read(os.path.join(DATA, "small.index"))
    entries = ops.table_read(raw)
    assert [k for k, _ in entries] == [b"", b"a/bias", b"a/kernel", b"blob", b"names", b"scalar", b"step"]
    assert entries[0][1] == bytes.fromhex("08011a020801")
    assert ops.table_build(entries) == raw


def test_every_dtype_byte_identical_to_tf(tmp_path):
    ops.bundle_write(str(tmp_path / "dtypes"), dtype_items(), 1, False)
    for suffix in (".index", ".data-00000-of-00001"):
        assert read(tmp_path / ("dtypes" + suffix)) == read(os.path.join(DATA, "dtypes" + suffix))


def test_multi_block_index(tmp_path):
    import hashlib
    keys = [hashlib.sha256(b"%d" % i).hexdigest() + f"/layer_{i}/.ATTRIBUTES/VARIABLE_VALUE" for i in range(6000)]
    tensors = {k: np.full(1, i, np.int32) for i, k in enumerate(keys)}
    write_bundle(tmp_path / "big", tensors, fsync=False)
    raw = read(tmp_path / "big.index")
    assert len(raw) > 2 * 262144  # several data blocks
    entries = ops.table_read(raw)
    assert [k.decode() for k, _ in entries[1:]] == sorted(keys)
    assert ops.table_build(entries) == raw
    with BundleReader(tmp_path / "big") as r:
        assert r.keys() == sorted(keys)
        assert int(r.get_tensor(keys[5999])[0]) == 5999
        r.verify()


# ---------------------------------------------------------------------------------------------
# Files written by TensorFlow
# ---------------------------------------------------------------------------------------------

MANIFEST = json.load(open(os.path.join(DATA, "manifest.json")))


@pytest.mark.parametrize("prefix", sorted(MANIFEST))
def test_reads_tf_written_files_exactly(prefix):
    with BundleReader(os.path.join(DATA, prefix)) as r:
        r.verify()
        assert sorted(r.keys()) == sorted(MANIFEST[prefix])
        for key, (dtype, shape, digest) in MANIFEST[prefix].items():
            assert r.dtype(key) == dtype and r.shape(key) == tuple(shape), key
            value = r._r.get_tensor(key.encode(), 1) if dtype == "bfloat16" else r.get_tensor(key)
            assert golden.value_digest(value) == digest, key


def test_tf_values_match_sources():
    with BundleReader(os.path.join(DATA, "dtypes")) as r:
        for k, v in golden.dtype_tensors().items():
            got = r.get_tensor(k)
            if k.startswith("bf16"):
                assert np.array_equal(np.asarray(got, np.float32), v)
            elif isinstance(v, bytes):
                assert got == v
            else:
                assert got.dtype == np.asarray(v).dtype and np.array_equal(got, v), k
    with BundleReader(os.path.join(DATA, "keras", "cp.ckpt")) as r:
        assert int(r.get_tensor("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE")
                   if "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE" in r
                   else r.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")) == 2
        assert r.shape("layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE") == (4, 3)
        # Keras' object graph: node 0 (the root) names the model's layers and optimizer.
        from fastckpt.checkpoint import object_graph as og
        nodes = og.decode_graph(bytes(r.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")))
        root_children = {name for _, name in nodes[0].children}
        assert {"layer_with_weights-0", "layer_with_weights-1", "optimizer"} <= root_children
        assert all(0 < i < len(nodes) for i, _ in nodes[0].children if _ != "root")
    with BundleReader(os.path.join(DATA, "tfckpt", "ckpt-1")) as r:
        assert int(r.get_tensor("save_counter/.ATTRIBUTES/VARIABLE_VALUE")) == 1


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------

def random_tensors(seed=0):
    rng = np.random.default_rng(seed)
    t = {}
    for name in ["float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
                 "uint32", "uint64", "complex64", "complex128"]:
        dt = np.dtype(name)
        shape = tuple(rng.integers(1, 6, rng.integers(0, 4)))
        t[f"t/{name}"] = (rng.standard_normal(shape) * 100).astype(dt) if dt.kind in "fc" else \
            rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, shape, dtype=dt, endpoint=True)
    t["t/bool"] = rng.random((3, 3)) > 0.5
    t["empty"] = np.zeros((0, 4), np.float32)
    t["scalar"] = np.float64(np.pi)
    t["big"] = rng.standard_normal((300, 257)).astype(np.float32)
    t["strs"] = [b"a\x00b", b"", b"\xff" * 300]
    t["str2d"] = np.array([["x", "yy"], ["", "\u00e9"]], dtype=object)
    t["str_scalar"] = b""
    t["unaligned_i64"] = np.arange(5, dtype=np.int64)
    return t


@pytest.mark.parametrize("num_shards", [1, 2, 3, 7])
def test_round_trip_every_dtype(tmp_path, num_shards):
    tensors = random_tensors(num_shards)
    prefix = tmp_path / "rt"
    write_bundle(prefix, tensors, num_shards=num_shards)
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(["rt.index"] + [f"rt.data-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)])
    with BundleReader(prefix) as r:
        assert r.num_shards == num_shards and r.keys() == sorted(tensors)
        r.verify()
        for k, v in tensors.items():
            got = r.get_tensor(k)
            if isinstance(v, bytes):
                assert got == v
            elif isinstance(v, list):
                assert list(got) == v
            elif np.asarray(v).dtype == object:
                assert got.shape == v.shape and [x.decode() for x in got.ravel()] == list(v.ravel())
            else:
                v = np.asarray(v)
                assert got.dtype == v.dtype and got.shape == v.shape and np.array_equal(got, v), k
                assert not got.flags.writeable
    if num_shards > 1:  # balanced: the big tensor alone on a shard
        with BundleReader(prefix) as r:
            assert len({r.info(k)["shard"] for k in tensors}) > 1


@pytest.mark.parametrize("fsync", [True, False])
@pytest.mark.parametrize("extra_rows", [0, 1, 1024])  # image a whole number of pages or not
def test_staged_bundle_writes_the_same_bytes_as_write_bundle(tmp_path, fsync, extra_rows):
    tensors = random_tensors(5)
    tensors["big"] = np.random.default_rng(5).standard_normal((300 + extra_rows, 257)).astype(np.float32)
    staged = B.StagedBundle()
    staged.stage(tensors)
    write_bundle(tmp_path / "a" / "ref", tensors, fsync=fsync)
    staged.write(tmp_path / "b" / "ref", fsync=fsync)  # same base name: identical files expected
    for name in ("ref.index", "ref.data-00000-of-00001"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert staged.nbytes == os.path.getsize(tmp_path / "b" / "ref.data-00000-of-00001")
    with BundleReader(tmp_path / "b" / "ref") as r:
        r.verify()
    assert sorted(os.listdir(tmp_path / "b")) == ["ref.data-00000-of-00001", "ref.index"]


def test_staged_bundle_is_a_snapshot_and_reusable(tmp_path):
    w = np.arange(70000, dtype=np.float32)
    staged = B.StagedBundle()
    with pytest.raises(RuntimeError, match="nothing staged"):
        staged.write(tmp_path / "none")
    staged.stage({"w": w, "s": b"one"})
    w += 1  # after stage() the source may change: the write has the values of stage() time
    staged.write(tmp_path / "x")
    staged.write(tmp_path / "y")  # the same snapshot twice
    with BundleReader(tmp_path / "x") as r:
        assert np.array_equal(r.get_tensor("w"), w - 1) and r.get_tensor("s") == b"one"
    staged.stage({"w": w[:10]})  # smaller: the buffer is reused, only the new bytes are written
    staged.write(tmp_path / "x")  # overwrite the prefix
    with BundleReader(tmp_path / "x") as r:
        assert r.keys() == ["w"] and np.array_equal(r.get_tensor("w"), w[:10])
        r.verify()
    with BundleReader(tmp_path / "y") as r:
        assert np.array_equal(r.get_tensor("w"), w - 1)
    with pytest.raises(TypeError, match="'bad' to have one of the dtypes"):
        staged.stage({"bad": np.zeros(2, dtype="datetime64[s]")})
    with pytest.raises(TypeError):
        staged.stage([("w", w)])


@needs_proc_fd
def test_staged_bundle_frees_replaced_files_after_the_commit(tmp_path):
    staged = B.StagedBundle()
    staged.stage({"w": np.arange(70000, dtype=np.float32)})
    staged.write(tmp_path / "p")
    assert held_deleted_files(tmp_path) == []  # nothing replaced yet
    old_data = os.stat(tmp_path / "p.data-00000-of-00001").st_ino
    staged.write(tmp_path / "p")  # replaces index and data: unlinked now, blocks freed later
    assert sorted(os.listdir(tmp_path)) == ["p.data-00000-of-00001", "p.index"]
    held = held_deleted_files(tmp_path)
    assert sorted(os.path.basename(h).split(".tmp-")[0] for h in held) == ["p.data-00000-of-00001", "p.index"], held
    assert os.stat(tmp_path / "p.data-00000-of-00001").st_ino != old_data
    staged.release_replaced()
    assert held_deleted_files(tmp_path) == []
    staged.write(tmp_path / "p")
    staged.write(tmp_path / "p")  # the next write frees what the previous one replaced
    assert len(held_deleted_files(tmp_path)) == 2
    del staged
    import gc
    gc.collect()
    assert held_deleted_files(tmp_path) == []  # and so does dropping the object
    with BundleReader(tmp_path / "p") as r:
        r.verify()


def test_shapes_and_big_endian_input(tmp_path):
    tensors = {"be": np.arange(6, dtype=">i4").reshape(2, 3), "fortran": np.asfortranarray(np.eye(3)),
               "view": np.arange(20.0)[::2]}
    write_bundle(tmp_path / "c", tensors)
    with BundleReader(tmp_path / "c") as r:
        for k, v in tensors.items():
            assert np.array_equal(r.get_tensor(k), v)
        assert r.get_tensor("be").dtype == np.dtype("<i4")


def test_views_outlive_reader_and_overwrite(tmp_path):
    prefix = tmp_path / "v"
    write_bundle(prefix, {"w": np.arange(1000, dtype=np.float32)})
    r = BundleReader(prefix)
    w = r.get_tensor("w")
    r2 = BundleReader(prefix)  # opened before the overwrite: keeps its snapshot
    r.close()
    write_bundle(prefix, {"w": -np.arange(1000, dtype=np.float32), "new": np.int32(1)})
    assert np.array_equal(w, np.arange(1000)) and "new" not in r2
    assert np.array_equal(r2.get_tensor("w"), np.arange(1000))
    del r, r2
    with BundleReader(prefix) as r3:
        assert np.array_equal(r3.get_tensor("w"), -np.arange(1000)) and "new" in r3
    with pytest.raises(ValueError, match="closed"):
        r3.get_tensor("w")


def test_state_file_and_delete(tmp_path):
    atomic_write_file(tmp_path / "checkpoint", 'model_checkpoint_path: "a"\n')
    atomic_write_file(tmp_path / "checkpoint", 'model_checkpoint_path: "b"\n')
    assert read(tmp_path / "checkpoint") == b'model_checkpoint_path: "b"\n'
    write_bundle(tmp_path / "a", {"x": np.int64(1)}, num_shards=2)
    assert bundle_exists(tmp_path / "a")
    delete_bundle(tmp_path / "a")
    assert not bundle_exists(tmp_path / "a") and os.listdir(tmp_path) == ["checkpoint"]


def test_input_validation(tmp_path):
    p = tmp_path / "x"
    with pytest.raises(TypeError, match="Expected tensors to be a mapping"):
        write_bundle(p, [("a", np.zeros(1))])
    with pytest.raises(TypeError, match="Expected tensor names to be str"):
        write_bundle(p, {1: np.zeros(1)})
    with pytest.raises(ValueError, match="non-empty"):
        write_bundle(p, {"": np.zeros(1)})
    with pytest.raises(TypeError, match="Expected tensor 'a' to be a numpy array"):
        write_bundle(p, {"a": 1.5})
    with pytest.raises(TypeError, match="dtypes"):
        write_bundle(p, {"a": np.zeros(1, np.float128 if hasattr(np, "float128") else "M8[s]")})
    with pytest.raises(ValueError, match="num_shards"):
        write_bundle(p, {"a": np.zeros(1)}, num_shards=0)
    with pytest.raises(TypeError, match="prefix"):
        write_bundle(3, {"a": np.zeros(1)})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------------------------

def small_copy(tmp_path):
    for s in (".index", ".data-00000-of-00001"):
        (tmp_path / ("s" + s)).write_bytes(read(os.path.join(DATA, "small" + s)))
    return tmp_path / "s"


def flip(path, offset):
    b = bytearray(read(path))
    b[offset] ^= 0x40
    path.write_bytes(bytes(b))


def test_flipped_data_byte_names_tensor(tmp_path):
    p = small_copy(tmp_path)
    flip(tmp_path / "s.data-00000-of-00001", 20)  # inside a/kernel (offset 16, 48 bytes)
    r = BundleReader(p)
    assert r.get_tensor("a/bias").tolist() == [0, 1, 2, 3]
    with pytest.raises(CorruptCheckpointError) as ei:
        r.get_tensor("a/kernel")
    e = ei.value
    assert e.tensor == "a/kernel" and e.path.endswith("s.data-00000-of-00001") and e.offset == 16
    assert "a/kernel" in str(e)
    with pytest.raises(CorruptCheckpointError, match="a/kernel"):
        r.verify()


def test_flipped_string_byte(tmp_path):
    p = small_copy(tmp_path)
    flip(tmp_path / "s.data-00000-of-00001", 80)  # inside names' bytes
    with pytest.raises(CorruptCheckpointError) as ei:
        BundleReader(p).get_tensor("names")
    assert ei.value.tensor == "names"


@pytest.mark.parametrize("offset", [0, 20, 100, 150, 158, 170, 180, 196])
def test_flipped_index_byte_names_file_and_offset(tmp_path, offset):
    p = small_copy(tmp_path)
    flip(tmp_path / "s.index", offset)
    with pytest.raises(CorruptCheckpointError) as ei:
        BundleReader(p)
    assert ei.value.path.endswith("s.index") and ei.value.offset is not None and "s.index" in str(ei.value)


@pytest.mark.parametrize("cut", [0, 1, 47, 48, 100, 242])
def test_truncated_index(tmp_path, cut):
    p = small_copy(tmp_path)
    (tmp_path / "s.index").write_bytes(read(tmp_path / "s.index")[:cut])
    with pytest.raises(CorruptCheckpointError):
        BundleReader(p)


def test_wrong_magic(tmp_path):
    p = small_copy(tmp_path)
    flip(tmp_path / "s.index", 242)
    with pytest.raises(CorruptCheckpointError, match="magic") as ei:
        BundleReader(p)
    assert ei.value.offset == 235


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointNotFoundError) as ei:
        BundleReader(tmp_path / "nothing")
    assert ei.value.path.endswith("nothing.index")
    p = small_copy(tmp_path)
    os.remove(tmp_path / "s.data-00000-of-00001")
    with pytest.raises(CheckpointNotFoundError, match="data shard") as ei:
        BundleReader(p)
    assert ei.value.path.endswith("s.data-00000-of-00001")


def test_truncated_data_file(tmp_path):
    p = small_copy(tmp_path)
    (tmp_path / "s.data-00000-of-00001").write_bytes(read(tmp_path / "s.data-00000-of-00001")[:100])
    with pytest.raises(CorruptCheckpointError, match="outside") as ei:
        BundleReader(p)
    assert ei.value.tensor == "step" and ei.value.path.endswith("s.index")


# A tiny protobuf encoder to craft entries TF would never write.
def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while v >= 0x80:
        out += bytes([(v & 0x7F) | 0x80])
        v >>= 7
    return out + bytes([v])


def field(num, wt, payload):
    return varint(num << 3 | wt) + (varint(len(payload)) + payload if wt == 2 else payload)


def entry(dtype=1, shape=(4,), shard=0, offset=0, size=16, crc=None, extra=b""):
    dims = b"".join(field(2, 2, field(1, 0, varint(d)) if d else b"") for d in shape)
    e = field(1, 0, varint(dtype)) + field(2, 2, dims)
    e += (field(3, 0, varint(shard)) if shard else b"") + (field(4, 0, varint(offset)) if offset else b"")
    e += field(5, 0, varint(size)) if size else b""
    if crc is not None:
        e += field(6, 5, ops.crc_mask(crc).to_bytes(4, "little"))
    return e + extra


def crafted(tmp_path, entries, data=b"", header=bytes.fromhex("08011a020801")):
    (tmp_path / "c.index").write_bytes(ops.table_build([(b"", header)] + sorted(entries)))
    (tmp_path / "c.data-00000-of-00001").write_bytes(data)
    return tmp_path / "c"


def test_unknown_and_reordered_fields_accepted(tmp_path):
    data = np.arange(4, dtype=np.float32).tobytes()
    crc = ops.crc32c(data)
    unknown = field(15, 0, varint(3)) + field(20, 2, b"junk") + field(9, 1, bytes(8)) + field(10, 5, bytes(4))
    e = entry(crc=crc, extra=unknown)
    reordered = field(6, 5, ops.crc_mask(crc).to_bytes(4, "little")) + field(5, 0, varint(16)) + \
        field(2, 2, field(2, 2, field(1, 0, varint(4)) + field(2, 2, b"dimname"))) + field(1, 0, varint(1))
    header = field(3, 2, field(1, 0, varint(1))) + field(99, 2, b"?") + field(1, 0, varint(1))
    p = crafted(tmp_path, [(b"a", e), (b"b", reordered)], data, header)
    with BundleReader(p) as r:
        assert r.get_tensor("a").tolist() == r.get_tensor("b").tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("bad,match", [
    (dict(size=12), "does not match shape"),
    (dict(shape=(5,)), "does not match shape"),
    (dict(offset=8), "outside"),
    (dict(shape=(-1,)), "negative dimension"),
    (dict(shape=(1 << 40, 1 << 40)), "overflow"),
    (dict(shape=(1,) * 65), "rank"),
    (dict(shard=1), "shard_id"),
    (dict(dtype=7, shape=(100,), size=16), "too small"),
    (dict(crc=0), "checksum"),
    (dict(dtype=20), "unsupported dtype"),
])
def test_lies_in_entries(tmp_path, bad, match):
    data = np.arange(4, dtype=np.float32).tobytes()
    kw = dict(crc=ops.crc32c(data))
    kw.update(bad)
    p = crafted(tmp_path, [(b"t", entry(**kw))], data)
    with pytest.raises(CorruptCheckpointError, match=match) as ei:
        BundleReader(p).get_tensor("t")
    assert ei.value.tensor == "t"


@pytest.mark.parametrize("header,match", [
    (bytes.fromhex("08001a020801"), "num_shards"),
    (bytes.fromhex("08011002"), "endianness"),
    (field(1, 0, varint(1)) + field(3, 2, field(2, 0, varint(2))), "version"),
    (field(1, 0, varint(1)) + field(3, 2, field(3, 0, varint(1))), "incompatible"),
    (bytes.fromhex("0801ff"), "malformed"),
])
def test_bad_headers(tmp_path, header, match):
    with pytest.raises(CorruptCheckpointError, match=match):
        BundleReader(crafted(tmp_path, [], b"", header))


def test_big_endian_file_is_swapped(tmp_path):
    data = np.arange(4, dtype=">f4").tobytes()
    p = crafted(tmp_path, [(b"t", entry(crc=ops.crc32c(data)))], data, bytes.fromhex("080110011a020801"))
    with BundleReader(p) as r:
        assert r.get_tensor("t").tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------------------------------------
# GIL
# ---------------------------------------------------------------------------------------------

def test_gil_released_during_write(tmp_path, monkeypatch):
    # Deterministic, no timing: the native writer pauses inside its commit (the test hook of
    # io/commit.h) and announces it in a file; this thread must be able to run Python meanwhile and
    # see the writer still inside write_bundle. With the GIL held throughout, this thread could
    # only run after the write returned.
    flag = tmp_path / "paused"
    monkeypatch.setenv("FASTCKPT_TEST_PAUSE_AT", "2")
    monkeypatch.setenv("FASTCKPT_TEST_PAUSE_FILE", str(flag))
    monkeypatch.setenv("FASTCKPT_TEST_PAUSE_SECONDS", "30")
    errors = []

    def save():
        try:
            write_bundle(tmp_path / "g", {"w": np.ones(1 << 20, np.uint8)}, fsync=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=save)
    t.start()
    try:
        while not (flag.exists() and flag.read_bytes().endswith(b"\n")):
            assert t.is_alive(), errors
            time.sleep(0.001)
        assert flag.read_bytes() == b"FASTCKPT_PAUSED 2\n"
        still_writing = t.is_alive()
    finally:
        flag.unlink(missing_ok=True)  # releases the pause
        t.join()
    assert still_writing and not errors
    with BundleReader(tmp_path / "g") as r:
        assert r.get_tensor("w").sum() == 1 << 20


# ---------------------------------------------------------------------------------------------
# A directory in the way (issue 18, item 9)
# ---------------------------------------------------------------------------------------------

def _tree(d):
    """Every name under d, with the bytes of every file."""
    out = []
    for root, dirs, files in os.walk(d):
        out += [(os.path.relpath(os.path.join(root, n), d), None) for n in dirs]
        out += [(os.path.relpath(os.path.join(root, n), d), read(os.path.join(root, n))) for n in files]
    return sorted(out)


PLANTED = {
    "index": "cp.index",
    "shard": "cp.data-00000-of-00001",
    "journal": "cp.fastckpt-commit",
    "stale shard": "cp.data-00001-of-00003",
}


@pytest.mark.parametrize("how", ["write_bundle", "staged", "native"])
@pytest.mark.parametrize("where", sorted(PLANTED))
def test_directory_in_the_way_is_refused_before_writing(tmp_path, how, where):
    d = tmp_path / "d"
    d.mkdir()
    prefix = str(d / "cp")
    write_bundle(prefix, {"old": np.arange(3, dtype=np.int32)})
    if where == "shard":
        os.unlink(prefix + ".data-00000-of-00001")
    planted = d / PLANTED[where]
    if where == "index":
        os.unlink(prefix + ".index")
    planted.mkdir()
    (planted / "inside").write_bytes(b"x")
    before = _tree(d)
    new = {"new": np.ones(4, np.float32)}
    with pytest.raises(IsADirectoryError) as e:
        if how == "write_bundle":
            write_bundle(prefix, new)
        elif how == "staged":
            staged = B.StagedBundle()
            staged.stage(new)
            staged.write(prefix)
        else:  # the native writer's own check, without the Python one
            ops.bundle_write(prefix, [B._prepare(k, v) for k, v in new.items()], 1, True)
    assert e.value.errno == errno.EISDIR and e.value.filename == str(planted)
    assert _tree(d) == before  # nothing written, nothing moved aside, nothing removed
    if where == "stale shard":
        with BundleReader(prefix) as r:  # the old checkpoint is untouched
            assert r.get_tensor("old").tolist() == [0, 1, 2]
    # Once the directory is gone, saves work again.
    import shutil
    shutil.rmtree(planted)
    write_bundle(prefix, new)
    with BundleReader(prefix) as r:
        assert r.keys() == ["new"]


def test_save_weights_refuses_a_directory_at_the_index(tmp_path):
    from fastckpt import keras
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(3,))])
    prefix = str(tmp_path / "cp.ckpt")
    os.mkdir(prefix + ".index")
    with pytest.raises(IsADirectoryError) as e:
        model.save_weights(prefix)
    assert e.value.errno == errno.EISDIR and e.value.filename == prefix + ".index"
    assert os.listdir(tmp_path) == ["cp.ckpt.index"] and os.listdir(prefix + ".index") == []
    os.rmdir(prefix + ".index")
    model.save_weights(prefix)
    model.load_weights(prefix)


def test_atomic_write_file_refuses_a_directory(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    with pytest.raises(IsADirectoryError) as e:
        atomic_write_file(tmp_path / "checkpoint", b"x")
    assert e.value.errno == errno.EISDIR
    with pytest.raises(IsADirectoryError):
        ops.atomic_write_file(str(tmp_path / "checkpoint"), b"x", True)
    assert os.listdir(tmp_path) == ["checkpoint"]


# ---------------------------------------------------------------------------------------------
# Concurrent writers (issue 18, item 6)
# ---------------------------------------------------------------------------------------------

_WRITER = """
import sys
import numpy as np
from fastckpt.checkpoint import write_bundle
prefix, who = sys.argv[1], sys.argv[2]
if who == "a":
    tensors, shards = {"a": np.full(1 << 18, 1.0, np.float32)}, 1
else:
    tensors, shards = {"b1": np.full(1 << 17, 2.0, np.float32), "b2": np.arange(1 << 17, dtype=np.int64)}, 2
for line in sys.stdin:
    for _ in range(int(line)):
        write_bundle(prefix, tensors, num_shards=shards, fsync=False)
    print("done", flush=True)
"""


def test_two_processes_saving_one_prefix_leave_one_whole_save(tmp_path):
    import subprocess
    import sys
    prefix = str(tmp_path / "cp")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, prefix, who], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for who in "ab"]
    want_a = {"a": np.full(1 << 18, 1.0, np.float32)}
    want_b = {"b1": np.full(1 << 17, 2.0, np.float32), "b2": np.arange(1 << 17, dtype=np.int64)}
    try:
        for _ in range(12):
            for p in procs:
                p.stdin.write("4\n")
                p.stdin.flush()
            for p in procs:
                assert p.stdout.readline().strip() == "done", p.poll()
            with BundleReader(prefix) as r:
                r.verify()  # every CRC
                want = want_a if r.keys() == ["a"] else want_b
                assert r.keys() == sorted(want)
                for k, v in want.items():
                    np.testing.assert_array_equal(r.get_tensor(k), v)
            leftovers = [n for n in os.listdir(tmp_path) if ".tmp-" in n or "commit" in n]
            assert leftovers == []
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)
    assert [p.returncode for p in procs] == [0, 0]


# ---------------------------------------------------------------------------------------------
# Typed errors for dtypes and paths (issue 18, item 10)
# ---------------------------------------------------------------------------------------------

def test_dtype_map_matches_get_tensor_including_bfloat16():
    from fastckpt.checkpoint.reader import load_checkpoint
    r = load_checkpoint(os.path.join(DATA, "dtypes"))
    dtypes = r.get_variable_to_dtype_map()  # raised "data type 'bfloat16' not understood"
    for k, dt in dtypes.items():
        value = r.get_tensor(k)
        if isinstance(value, bytes):
            assert dt == np.dtype(object), k
        else:
            assert value.dtype == dt, k
    assert dtypes["bf16_as_f32"].name in ("bfloat16", "float32")
    r.close()


def _with_dtype(tmp_path, code):
    """A checkpoint whose tensor 'x' (float32 [2]) is relabelled as TF dtype `code`."""
    prefix = str(tmp_path / "odd")
    write_bundle(prefix, {"x": np.ones(2, np.float32)})
    entries = ops.table_read(read(prefix + ".index"))
    fixed = []
    for k, v in entries:
        if k == b"x":
            assert v[:2] == b"\x08\x01"
            v = b"\x08" + bytes([code]) + v[2:]
        fixed.append((k, v))
    with open(prefix + ".index", "wb") as f:
        f.write(ops.table_build(fixed))
    return prefix


def test_bfloat16_checkpoint_loads_through_load_weights(tmp_path):
    from fastckpt import keras
    from fastckpt.errors import CheckpointMismatchError
    model = keras.Sequential([keras.layers.Dense(2, input_shape=(1,), use_bias=False)])
    prefix = str(tmp_path / "m")
    model.save_weights(prefix)
    with BundleReader(prefix) as r:
        tensors = {k: r.get_tensor(k) for k in r.keys()}
    kernel = next(k for k in tensors if "kernel" in k)
    bits = (np.array([[1.5, -2.0]], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    items = [B._prepare(k, v) for k, v in tensors.items() if k != kernel]
    items.append((kernel.encode(), 14, [1, 2], bits))  # DT_BFLOAT16
    ops.bundle_write(prefix, items, 1, False)
    try:
        model.load_weights(prefix)  # raised TypeError: data type 'bfloat16' not understood
    except CheckpointMismatchError as e:  # ml_dtypes installed: bfloat16 is not the variable's float32
        assert "bfloat16" in str(e)
    else:
        np.testing.assert_array_equal(model.get_weights()[0], [[1.5, -2.0]])


def test_unknown_dtype_is_a_typed_error_naming_the_tensor(tmp_path):
    from fastckpt.checkpoint.reader import load_checkpoint
    from fastckpt.errors import UnsupportedDtypeError
    prefix = _with_dtype(tmp_path, 99)
    with BundleReader(prefix) as r:
        assert r.dtype("x") == "dtype<99>"
        with pytest.raises(UnsupportedDtypeError, match="'x'") as e:
            r.get_tensor("x")
        assert e.value.tensor == "x" and e.value.dtype == 99 and e.value.path == prefix + ".index"
    with pytest.raises(UnsupportedDtypeError, match="'x'"):
        load_checkpoint(prefix).get_variable_to_dtype_map()


def test_nul_in_a_path_is_a_typed_error(tmp_path):
    from fastckpt.errors import FastckptError, InvalidPathError
    bad = str(tmp_path / "a\0b")
    for call in (lambda: write_bundle(bad, {"x": np.ones(1)}), lambda: BundleReader(bad),
                 lambda: delete_bundle(bad), lambda: atomic_write_file(bad, b"x"),
                 lambda: bundle_exists(bad)):
        with pytest.raises(InvalidPathError) as e:
            call()
        assert isinstance(e.value, FastckptError) and e.value.path == bad
    # The native layer refuses it too (open(2) would use the part before the NUL).
    raw = os.fsencode(bad)
    for call in (lambda: ops.bundle_open(raw), lambda: ops.bundle_delete(raw),
                 lambda: ops.bundle_recover(raw), lambda: ops.atomic_write_file(raw, b"x"),
                 lambda: ops.bundle_write(raw, [], 1, False)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EINVAL and e.value.filename == bad
    assert os.listdir(tmp_path) == []


def test_non_utf8_paths_work(tmp_path):
    d = tmp_path / "dir\udcff"
    prefix = str(d / "cp\udcfe")
    write_bundle(prefix, {"x": np.arange(3)}, num_shards=2)
    assert sorted(os.listdir(d)) == ["cp\udcfe.data-00000-of-00002", "cp\udcfe.data-00001-of-00002",
                                     "cp\udcfe.index"]
    with BundleReader(prefix) as r:
        assert r.get_tensor("x").tolist() == [0, 1, 2]
        assert r.data_paths == [prefix + ".data-00000-of-00002", prefix + ".data-00001-of-00002"]
    staged = B.StagedBundle()
    staged.stage({"y": np.ones(2)})
    staged.write(prefix)
    assert B.recover_bundle(prefix) is False
    atomic_write_file(str(d / "state\udcff"), b"s")
    assert (d / "state\udcff").read_bytes() == b"s"
    from fastckpt.checkpoint.reader import list_variables
    assert list_variables(prefix) == [("y", [2])]
    with pytest.raises(CheckpointNotFoundError) as e:
        BundleReader(str(d / "missing\udcff"))
    assert "missing\udcff" in str(e.value)
    delete_bundle(prefix)
    assert os.listdir(d) == ["state\udcff"]


_PAUSED_WRITER = """
import sys
import numpy as np
from fastckpt.checkpoint import write_bundle
write_bundle(sys.argv[1], {"v": np.full(1000, 2.0)})
print("returned", flush=True)
"""


@pytest.mark.parametrize("step,mode,expect", [(1, "stderr", 1.0), (3, "file", 2.0), (7, "file", 2.0)])
def test_pause_hook_lets_a_kill_land_at_a_commit_step(tmp_path, step, mode, expect):
    # The contract of FASTCKPT_TEST_PAUSE_AT (io/commit.h) that soak tests rely on: the line
    # "FASTCKPT_PAUSED <step>" announces the pause; a SIGKILL then lands exactly there. Killed before the
    # journal (step 1) the old checkpoint remains; from the journal on (3) the new one is decided.
    import signal
    import subprocess
    import sys
    prefix = str(tmp_path / "cp")
    write_bundle(prefix, {"v": np.full(1000, 1.0)})
    env = dict(os.environ, FASTCKPT_TEST_PAUSE_AT=str(step), FASTCKPT_TEST_PAUSE_SECONDS="120")
    flag = tmp_path / "paused"
    if mode == "file":
        env["FASTCKPT_TEST_PAUSE_FILE"] = str(flag)
    p = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITER, prefix], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if mode == "stderr":
            assert p.stderr.readline() == f"FASTCKPT_PAUSED {step}\n".encode()
        else:
            while not (flag.exists() and flag.read_bytes().endswith(b"\n")):
                assert p.poll() is None, p.stderr.read()
                time.sleep(0.005)
            assert flag.read_bytes() == f"FASTCKPT_PAUSED {step}\n".encode()
        assert p.poll() is None  # paused, not finished
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate()
    assert p.returncode == -signal.SIGKILL
    with BundleReader(prefix) as r:
        r.verify()
        assert r.get_tensor("v")[0] == expect
    write_bundle(prefix, {"v": np.full(1000, 3.0)})  # the next save cleans up
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["cp.index", "cp.data-00000-of-00001"] + (["paused"] if mode == "file" else []))
