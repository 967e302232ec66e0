"""Unsigned LEB128 varints (protobuf's and the ``.lic`` header's integers): encode and decode."""

from __future__ import annotations

__all__ = ["encode_varint", "decode_varint"]


def encode_varint(value: int) -> bytes:
    """``value`` as an unsigned LEB128 varint.

    Raises:
        ValueError: For a negative ``value``.
    """
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, position after it)`` of the varint at ``data[pos]``; no bounds or length checks
    (the callers read trusted framing, or check ranges themselves)."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
