"""The ``.lic`` bitstream file: writing it (:func:`pack`), and every name of the format in one place.

The layout is documented in :mod:`lictrain.evaluation.bitstream_format`; reading is
:mod:`lictrain.evaluation.bitstream_read` and the checks before decoding
:mod:`lictrain.evaluation.bitstream_checks`. Their names are re-exported here, so
``from lictrain.evaluation.bitstream import unpack`` (or ``bs.unpack``) keeps working.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from typing import Any, Sequence

from lictrain.evaluation.bitstream_checks import (  # noqa: F401 (re-exported)
    RANS_MIN_BYTES, RANS_WORD_BYTES, check_consistent, check_rans_streams, rans_problem)
from lictrain.evaluation.bitstream_format import (  # noqa: F401 (re-exported)
    BASE_VERSION, FINGERPRINT_BYTES, FLAG_CENTRED, FLAG_CHECKPOINT, FLAG_RATE, FLAG_RECON_CRC, FORMAT_VERSION, MAGIC,
    MAX_CHECKPOINT_NAME, MAX_GAIN, MAX_NAME, SHAPE_FLAT, SHAPE_JSON, Bitstream, Shape, reconstruction_crc, storable_name)
from lictrain.evaluation.bitstream_read import unpack  # noqa: F401 (re-exported)
from lictrain.varint import encode_varint

__all__ = ["pack", "unpack", "Bitstream", "storable_name", "reconstruction_crc", "check_consistent",
           "check_rans_streams", "rans_problem", "MAGIC", "FORMAT_VERSION", "BASE_VERSION", "FINGERPRINT_BYTES",
           "MAX_CHECKPOINT_NAME"]


def _normalise_shape(shape: Any) -> Shape:
    """torch.Size / lists / tuples of ints -> nested tuples of Python ints."""
    if isinstance(shape, (list, tuple)):
        return tuple(_normalise_shape(s) for s in shape)
    try:
        value = int(shape)
    except (TypeError, ValueError):
        raise ValueError(f"the model's compress() returned a shape with a non-integer entry: {shape!r}") from None
    if value < 0 or value != shape:
        raise ValueError(f"the model's compress() returned a shape with a bad entry: {shape!r}")
    return value


def _encode_shape(shape: Shape) -> bytes:
    if isinstance(shape, tuple) and all(isinstance(s, int) for s in shape):
        return bytes([SHAPE_FLAT]) + encode_varint(len(shape)) + b"".join(encode_varint(s) for s in shape)
    text = json.dumps(shape, separators=(",", ":")).encode("ascii")
    return bytes([SHAPE_JSON]) + encode_varint(len(text)) + text


def pack(
    *,
    model: str,
    quality: int,
    fingerprint: bytes,
    height: int,
    width: int,
    shape: Any,
    strings: Sequence[Sequence[bytes]],
    recon_crc: int | None = None,
    centred: bool = False,
    checkpoint: str | None = None,
    run: str | None = None,
    gain: float | None = None,
    lmbda: float | None = None,
) -> bytes:
    """Serialise one encoded image to the bytes of a ``.lic`` file.

    Args:
        shape: ``model.compress(x)["shape"]`` (a torch.Size or nested lists/tuples of ints).
        strings: ``model.compress(x)["strings"]``.
        recon_crc: CRC32 of the encoder's uint8 reconstruction (lets the decoder prove it
            reproduced the same image), or ``None``.
        checkpoint, run: the checkpoint's file name and its run directory's name (see
            :func:`storable_name`); a named checkpoint makes the file version 2.
        gain, lmbda: the rate a variable-rate model coded at (its gain and the λ it stands
            for); a rate makes the file version 3.

    Raises:
        ValueError: arguments that cannot be stored (a bug in the caller, not a user error).
    """
    name = model.encode("utf-8")
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError(f"model name must be 1..{MAX_NAME} bytes, got {model!r}")
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}")
    if isinstance(strings, (bytes, bytearray)) or any(isinstance(g, (bytes, bytearray)) for g in strings):
        raise ValueError("compress() must return 'strings' as a list (per latent) of lists (per image) of bytes")
    groups = [[bytes(s) for s in group] for group in strings]
    if checkpoint is not None and storable_name(checkpoint) != checkpoint:
        raise ValueError(f"checkpoint name {checkpoint!r} cannot be stored; pass storable_name() of it")
    if run is not None and (checkpoint is None or storable_name(run) != run):
        raise ValueError(f"run name {run!r} cannot be stored (or no checkpoint name given)")
    if gain is not None and not (math.isfinite(gain) and 0 < gain <= MAX_GAIN):
        raise ValueError(f"gain must be a positive finite number <= {MAX_GAIN:g}, got {gain!r}")
    head = bytearray(MAGIC)
    head.append(3 if gain is not None else 2 if checkpoint is not None else BASE_VERSION)
    head.append((FLAG_RECON_CRC if recon_crc is not None else 0) | (FLAG_CENTRED if centred else 0)
                | (FLAG_CHECKPOINT if checkpoint is not None else 0) | (FLAG_RATE if gain is not None else 0))
    head += encode_varint(len(name)) + name
    head += encode_varint(quality)
    head += fingerprint
    if checkpoint is not None:
        for text in (checkpoint, run or ""):
            raw = text.encode("utf-8")
            head += encode_varint(len(raw)) + raw
    if gain is not None:
        head += struct.pack(">ff", gain, lmbda if lmbda is not None else 0.0)
    head += encode_varint(height) + encode_varint(width)
    head += _encode_shape(_normalise_shape(shape))
    head += encode_varint(len(groups))
    for group in groups:
        head += encode_varint(len(group))
        for s in group:
            head += encode_varint(len(s))
    if recon_crc is not None:
        head += (recon_crc & 0xFFFFFFFF).to_bytes(4, "big")
    body = bytes(head) + b"".join(s for group in groups for s in group)
    return body + zlib.crc32(body).to_bytes(4, "big")
