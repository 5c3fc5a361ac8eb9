"""CRC-32C: the standard check values, and hardware == portable == parallel == combine."""

import numpy as np
import pytest

from fastckpt import ops

CHECKS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),  # RFC 3720 B.4 test vector
    (bytes(range(32)), 0x46DD794E),  # RFC 3720 B.4
]


@pytest.mark.parametrize("impl", ["auto", "hardware", "portable"])
@pytest.mark.parametrize("data,expected", CHECKS)
def test_check_values(impl, data, expected):
    assert ops.crc32c(data, impl=impl) == expected


def test_mask_examples():
    assert ops.crc_mask(0) == 0xA282EAD8
    assert ops.crc_mask(0xE3069283) == 0xC78AB0E5
    for c in (0, 1, 0xE3069283, 0xFFFFFFFF, 0x12345678):
        assert ops.crc_unmask(ops.crc_mask(c)) == c


def test_extend_equals_whole():
    data = np.random.default_rng(0).bytes(1000)
    for cut in (0, 1, 7, 8, 9, 500, 999, 1000):
        assert ops.crc32c(data[cut:], ops.crc32c(data[:cut])) == ops.crc32c(data)


def test_hardware_detected_on_x86():
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        # Every x86-64 CPU since 2008 has SSE4.2; the dispatcher must find it.
        assert ops.crc32c_hardware_available()


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 255, 256, 257,
                                  767, 768, 769, 4095, 4096, 12287, 12288, 12289, 13056, 65537,
                                  1 << 20])
def test_implementations_agree_on_sizes_and_alignments(size):
    rng = np.random.default_rng(size)
    buf = rng.bytes(size + 8)
    mv = memoryview(buf)
    for off in range(8):
        chunk = mv[off:off + size]
        hw = ops.crc32c(chunk, impl="hardware")
        sw = ops.crc32c(chunk, impl="portable")
        assert hw == sw
        assert ops.crc32c_parallel(chunk, threads=3) == hw


@pytest.mark.parametrize("size", [(4 << 20) + 3, (9 << 20) + 1])
def test_parallel_large(size):
    buf = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8)
    expect = ops.crc32c(buf, impl="portable")
    for threads in (1, 2, 3, 4, 7):
        assert ops.crc32c_parallel(buf, threads=threads) == expect
    assert ops.crc32c_parallel(buf, crc=0x1234, threads=4) == ops.crc32c(buf, 0x1234)


def test_combine():
    rng = np.random.default_rng(2)
    for la, lb in [(0, 0), (0, 5), (5, 0), (1, 1), (100, 37), (4096, 1 << 16)]:
        a, b = rng.bytes(la), rng.bytes(lb)
        assert ops.crc32c_combine(ops.crc32c(a), ops.crc32c(b), lb) == ops.crc32c(a + b)
