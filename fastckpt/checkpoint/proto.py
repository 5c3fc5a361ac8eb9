"""The few protobuf wire-format rules the checkpoint records need, with hard bounds.

Only what ``TrackableObjectGraph`` uses: varints, length-delimited fields and skipping of any
other wire type. Decoding never reads past the buffer and rejects malformed input with
``CorruptCheckpointError``; the C++ reader has its own copy for the bundle records.
"""

from __future__ import annotations

from typing import Iterator, Tuple, Union

from fastckpt.errors import CorruptCheckpointError

__all__ = ["encode_varint", "field_varint", "field_bytes", "iter_fields"]

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def encode_varint(value: int) -> bytes:
    if value < 0:
        value &= (1 << 64) - 1  # int32/int64 negatives are ten-byte two's complement on the wire
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def field_bytes(number: int, payload: Union[bytes, str]) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return encode_varint(number << 3 | LEN) + encode_varint(len(payload)) + payload


def _varint(buf: memoryview, pos: int, what: str) -> Tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise CorruptCheckpointError(f"{what}: truncated varint at byte {pos}", offset=pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if result >= 1 << 64:
                raise CorruptCheckpointError(f"{what}: varint over 64 bits at byte {pos}", offset=pos)
            return result, pos
    raise CorruptCheckpointError(f"{what}: varint longer than 10 bytes at byte {pos}", offset=pos)


def iter_fields(data: Union[bytes, memoryview], what: str = "protobuf") -> Iterator[Tuple[int, int, Union[int, memoryview]]]:
    """Yield ``(field number, wire type, value)``; values of LEN fields are zero-copy views."""
    buf = memoryview(data)
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise CorruptCheckpointError(f"{what}: field number 0 at byte {start}", offset=start)
        if wire == VARINT:
            value, pos = _varint(buf, pos, what)
        elif wire == LEN:
            n, pos = _varint(buf, pos, what)
            if n > len(buf) - pos:
                raise CorruptCheckpointError(
                    f"{what}: field {number} at byte {start} declares {n} bytes, only "
                    f"{len(buf) - pos} remain", offset=start)
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (FIXED32, FIXED64):
            width = 4 if wire == FIXED32 else 8
            if width > len(buf) - pos:
                raise CorruptCheckpointError(f"{what}: truncated fixed field at byte {start}", offset=start)
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        else:
            raise CorruptCheckpointError(f"{what}: unsupported wire type {wire} at byte {start}",
                                         offset=start)
        yield number, wire, value
