"""Hostile ``.index`` files: the reader's work and memory must stay bounded by the file's size.

Each hostile load runs in a child process that reports its wall time and peak RSS. The bounds are
generous (they only catch blow-ups: the unbounded reader took tens of seconds or several hundred MB
more than the file's size on these files), not speed targets. The C API opens checkpoints with the
same reader; it is driven here through ctypes.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastckpt import ops
from fastckpt.errors import CorruptCheckpointError

MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)


# --- building tables by hand ----------------------------------------------------------------------
def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def entry(key: bytes, value: bytes, shared: int = 0) -> bytes:
    return varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value


def block_contents(entries: bytes, restarts=(0,)) -> bytes:
    r = np.asarray(restarts, dtype="<u4")
    return entries + r.tobytes() + struct.pack("<I", len(r))


def trailer(contents: bytes) -> bytes:
    return b"\0" + struct.pack("<I", ops.crc_mask(ops.crc32c(contents + b"\0")))


def handle(offset: int, size: int) -> bytes:
    return varint(offset) + varint(size)


def footer(meta: tuple, index: tuple) -> bytes:
    return (handle(*meta) + handle(*index)).ljust(40, b"\0") + MAGIC


def header_value() -> bytes:
    return bytes([0x08, 0x01])  # BundleHeaderProto{num_shards: 1}


def assemble(data_blocks: list, index_handles=None) -> bytes:
    """data blocks (contents) + empty metaindex + index block (+ footer). index_handles: the
    (offset, size) pairs to list instead of one per data block."""
    out, handles = bytearray(), []
    for c in data_blocks:
        handles.append((len(out), len(c)))
        out += c + trailer(c)
    meta = block_contents(b"")
    meta_h = (len(out), len(meta))
    out += meta + trailer(meta)
    hs = handles if index_handles is None else index_handles
    idx = block_contents(b"".join(entry(b"k%08d" % i, handle(*h)) for i, h in enumerate(hs)))
    idx_h = (len(out), len(idx))
    out += idx + trailer(idx)
    return bytes(out + footer(meta_h, idx_h))


def write_index(prefix: str, raw: bytes) -> None:
    with open(prefix + ".index", "wb") as f:
        f.write(raw)
    open(prefix + ".data-00000-of-00001", "wb").close()


# --- the child ------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    prefix, how = sys.argv[1], sys.argv[2]
    if how == "python":
        from fastckpt.checkpoint import BundleReader
        from fastckpt.errors import CorruptCheckpointError
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        try:
            BundleReader(prefix)
            outcome = "opened"
        except CorruptCheckpointError as e:
            outcome = "CorruptCheckpointError: " + str(e)[:300]
        except Exception as e:
            outcome = type(e).__name__ + ": " + str(e)[:300]
    else:
        import ctypes
        from fastckpt import embedding
        lib = ctypes.CDLL(embedding.lib_dir() + "/libfastckpt.so")
        class Params(ctypes.Structure):
            _fields_ = [("use_mmap", ctypes.c_bool), ("verify_all", ctypes.c_bool),
                        ("batch_size", ctypes.c_int32)]
        lib.fckpt_model_default_params.restype = Params
        lib.fckpt_last_error.restype = ctypes.c_char_p
        model = ctypes.c_void_p()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        status = lib.fckpt_model_load_checkpoint(prefix.encode(), b"fastckpt-plan 1\\ninput 1\\n",
                                                 lib.fckpt_model_default_params(), ctypes.byref(model))
        outcome = "status %d: %s" % (status, lib.fckpt_last_error().decode(errors="replace")[:300])
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"outcome": outcome, "seconds": elapsed, "grew_kb": peak - base}))
""")


def load_in_child(prefix: str, how: str = "python", timeout: float = 300) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, prefix, how], capture_output=True, text=True,
                       timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def c_api_available() -> bool:
    from fastckpt import embedding
    return os.path.exists(os.path.join(embedding.lib_dir(), "libfastckpt.so"))


# --- item 3: one big block listed many times ------------------------------------------------------
def repeated_block_index(handles: int) -> bytes:
    """A 4 MiB data block with no entries (all restart array), listed `handles` times."""
    n = (4 << 20) // 4
    big = block_contents(b"", restarts=np.zeros(n - 1, dtype=np.uint32))
    hdr = block_contents(entry(b"", header_value()))
    raw_blocks = [hdr, big]
    # data blocks laid out: hdr at 0, big after it
    hdr_h = (0, len(hdr))
    big_h = (len(hdr) + 5, len(big))
    return assemble(raw_blocks, index_handles=[hdr_h] + [big_h] * handles)


@pytest.mark.parametrize("how", ["python", "c_api"])
def test_repeated_block_handles_are_refused_without_rereading(tmp_path, how):
    if how == "c_api" and not c_api_available():
        pytest.skip("libfastckpt.so is not installed in this environment")
    prefix = str(tmp_path / "cp")
    raw = repeated_block_index(100_000)  # ~5 MiB; the unbounded reader CRC'd 400 GB (~25 s)
    write_index(prefix, raw)
    got = load_in_child(prefix, how)
    if how == "python":
        assert got["outcome"].startswith("CorruptCheckpointError"), got
    else:
        assert got["outcome"].startswith("status 3:"), got  # FCKPT_ERR_CORRUPT
    assert "duplicate block handles" in got["outcome"], got
    assert "cp.index" in got["outcome"], got
    assert got["seconds"] < 5.0, got


def test_duplicate_and_overlapping_handles_name_file_and_offset(tmp_path):
    from fastckpt.checkpoint import BundleReader
    hdr = block_contents(entry(b"", header_value()))
    other = block_contents(entry(b"a", b""))
    ha, hb = (0, len(hdr)), (len(hdr) + 5, len(other))
    prefix = str(tmp_path / "dup")
    write_index(prefix, assemble([hdr, other], index_handles=[ha, hb, hb]))
    with pytest.raises(CorruptCheckpointError, match="duplicate block handles") as e:
        BundleReader(prefix)
    assert e.value.path == prefix + ".index" and e.value.offset is not None and e.value.offset > 0

    prefix = str(tmp_path / "overlap")
    write_index(prefix, assemble([hdr, other], index_handles=[ha, (1, len(hdr) + 2)]))
    with pytest.raises(CorruptCheckpointError, match="overlapping block handles") as e:
        BundleReader(prefix)
    assert e.value.path == prefix + ".index" and e.value.offset is not None

    # The index block itself listed as a data block is an overlap too.
    raw = assemble([hdr])
    idx_off = len(hdr) + 5 + len(block_contents(b"")) + 5
    idx_size = len(raw) - 48 - idx_off - 5
    prefix = str(tmp_path / "self")
    write_index(prefix, assemble([hdr], index_handles=[ha, (idx_off, idx_size)]))
    with pytest.raises(CorruptCheckpointError, match="block handles"):
        BundleReader(prefix)


def test_honest_tables_still_read():
    # table_read over memory goes through the same checks.
    entries = [(b"", header_value())] + [(b"k%06d" % i, b"v" * (i % 50)) for i in range(20_000)]
    assert ops.table_read(ops.table_build(entries)) == entries


# --- item 4: memory before validation -------------------------------------------------------------
def many_entries_index(count: int) -> bytes:
    """One data block: the header, then `count` entries with 4-byte big-endian counter keys and
    empty values (7 bytes each on disk)."""
    keys = np.arange(1, count + 1, dtype=">u4").view(np.uint8).reshape(count, 4)
    rows = np.empty((count, 7), dtype=np.uint8)
    rows[:, 0], rows[:, 1], rows[:, 2] = 0, 4, 0
    rows[:, 3:] = keys
    body = entry(b"", header_value()) + rows.tobytes()
    return assemble([block_contents(body)])


def test_four_million_entries_cost_a_small_multiple_of_the_file(tmp_path):
    prefix = str(tmp_path / "many")
    count = ops.BUNDLE_LIMITS["max_entries"] + 1
    raw = many_entries_index(count)
    write_index(prefix, raw)
    got = load_in_child(prefix)
    assert got["outcome"].startswith("CorruptCheckpointError"), got
    size_kb = len(raw) // 1024
    # The unbounded reader stored ~4 M entries (~0.73 GB for this ~28 MB file) before counting them.
    assert got["grew_kb"] < 4 * size_kb + 64 * 1024, (got, size_kb)
    assert got["seconds"] < 30, got


def test_keys_that_expand_through_shared_prefixes_are_refused(tmp_path):
    # Each entry shares the whole previous key and adds one byte: 4 bytes on disk, a key one byte
    # longer than the last in memory (quadratic). Refused by the expansion bound, early.
    n = 20_000  # ~220 MB of keys for the unbounded reader, from a ~100 KB file
    body = bytearray(entry(b"", header_value()))
    body += entry(b"a" * 1000, b"")
    for i in range(n):
        body += varint(1000 + i) + varint(1) + varint(0) + b"b"
    prefix = str(tmp_path / "expand")
    raw = assemble([block_contents(bytes(body))])
    write_index(prefix, raw)
    got = load_in_child(prefix)
    assert got["outcome"].startswith("CorruptCheckpointError"), got
    assert got["grew_kb"] < 64 * 1024, got


def test_sparse_gigabyte_index_is_not_read_before_its_footer(tmp_path):
    prefix = str(tmp_path / "sparse")
    with open(prefix + ".index", "wb") as f:
        f.truncate(1 << 30)  # no valid footer: zeros
    open(prefix + ".data-00000-of-00001", "wb").close()
    got = load_in_child(prefix)
    assert got["outcome"].startswith("CorruptCheckpointError") and "magic" in got["outcome"], got
    assert got["grew_kb"] < 64 * 1024, got


def test_sparse_gigabyte_block_is_checked_streaming(tmp_path):
    # A valid footer whose index handle claims almost all of a sparse 1 GiB file: the CRC check
    # streams through it without holding it, and refuses it.
    prefix = str(tmp_path / "sparse")
    size = 1 << 30
    meta = block_contents(b"")
    with open(prefix + ".index", "wb") as f:
        f.write(meta + trailer(meta))
        f.truncate(size - 48)
        f.seek(size - 48)
        f.write(footer((0, len(meta)), (len(meta) + 5, size - 48 - len(meta) - 10)))
    open(prefix + ".data-00000-of-00001", "wb").close()
    got = load_in_child(prefix)
    assert got["outcome"].startswith("CorruptCheckpointError") and "checksum" in got["outcome"], got
    assert got["grew_kb"] < 64 * 1024, got
