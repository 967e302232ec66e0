"""The ``.lic`` bitstream format: its layout, constants and the decoded :class:`Bitstream`.

Layout (all integers are unsigned LEB128 varints unless a width is given)::

    magic          4 bytes  b"LIC\\x1a"
    version        1 byte   the lowest that holds the file's fields: 1; 2 with a checkpoint name
                            (flag bit 2); 3 with a rate (flag bit 3)
    flags          1 byte   bit 0: a reconstruction checksum is present; bit 1: the image was padded
                            with zeros, centred (the official HPCM test protocol), else on the
                            right/bottom by edge replication; bit 2 (version 2): the checkpoint is named;
                            bit 3 (version 3): the rate of a variable-rate model is stored
    model name     varint length + UTF-8
    quality        varint
    fingerprint    8 bytes  first 8 bytes of sha256 over the model weights (see loading.py)
    [checkpoint    if flags bit 2: its file name (varint length 1..255 + UTF-8), then the name of
                   its run directory (varint length 0..255 + UTF-8; 0 = not known)]
    [rate          if flags bit 3: the gain (float32, big-endian; > 0, finite) the latent was coded
                   with, then the λ it stands for (float32; informative)]
    height, width  varint, varint   the image size before padding
    shape          1 kind byte: 0 = flat tuple of ints (varint count + varints),
                                1 = nested lists of ints as compact JSON (varint length + ASCII)
    streams        varint number of groups; per group a varint count; per stream a varint length
    [recon crc32   4 bytes big-endian, if flags bit 0: CRC32 of the encoder's uint8 reconstruction]
    payload        the streams' bytes, in order
    file crc32     4 bytes big-endian: CRC32 of every byte before it

``streams`` mirrors CompressAI's ``strings``: a list (one group per latent, e.g. ``y`` and
``z``) of lists (one entry per batch item) of ``bytes``.

A file is written in the lowest version that holds its fields, so a file without a checkpoint
name stays a version-1 file that every lictrain reads; a version-1 reader refuses a version-2 file
by its version number (not as "corrupt").

The header costs about 20 bytes plus the model name; it is part of every whole-file bpp.
Every way a file can be wrong -- too short, too long, another format, a newer version, a
flipped bit -- raises :class:`~lictrain.errors.BitstreamError` with a one-line message before
any decoding starts.

Writing is :func:`lictrain.evaluation.bitstream.pack`, reading
:func:`lictrain.evaluation.bitstream_read.unpack`, the checks of a parsed file against a codec
:mod:`lictrain.evaluation.bitstream_checks`; :mod:`lictrain.evaluation.bitstream` re-exports them all.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

__all__ = ["Bitstream", "storable_name", "reconstruction_crc", "MAGIC", "FORMAT_VERSION", "BASE_VERSION",
           "FINGERPRINT_BYTES", "MAX_CHECKPOINT_NAME", "FLAG_RATE", "MAX_GAIN"]

MAGIC = b"LIC\x1a"
#: the newest format version (read and written); :data:`BASE_VERSION` files are read too
FORMAT_VERSION = 3
#: the version of a file without version-2 fields: what lictrain wrote before version 2 existed
BASE_VERSION = 1
FINGERPRINT_BYTES = 8
FLAG_RECON_CRC = 0x01
FLAG_CENTRED = 0x02
FLAG_CHECKPOINT = 0x04  # version 2
FLAG_RATE = 0x08  # version 3
#: the flags each format version may set
KNOWN_FLAGS = {1: FLAG_RECON_CRC | FLAG_CENTRED, 2: FLAG_RECON_CRC | FLAG_CENTRED | FLAG_CHECKPOINT,
               3: FLAG_RECON_CRC | FLAG_CENTRED | FLAG_CHECKPOINT | FLAG_RATE}
#: the largest gain a file may carry (a quantiser 10^4 times finer than the model's own)
MAX_GAIN = 1e4
#: longest checkpoint or run name stored (NAME_MAX: any file or directory name fits)
MAX_CHECKPOINT_NAME = 255
#: kinds of the shape field: a flat tuple of ints, or nested lists as JSON
SHAPE_FLAT, SHAPE_JSON = 0, 1
#: longest model name stored
MAX_NAME = 255
MAX_SIDE = 1 << 20  # a 1M x 1M image is far beyond anything a learned codec will decode here
MAX_STREAMS = 4096

Shape = Any  # tuple of ints, or nested tuples of ints


@dataclass(frozen=True)
class Bitstream:
    """The decoded contents of a ``.lic`` file.

    Attributes:
        model: registry name of the model that encoded it.
        quality: its ``--quality``.
        fingerprint: 8 bytes identifying the weights (see :func:`lictrain.evaluation.loading.weights_fingerprint`).
        height, width: the image size before padding (what the decoder crops back to).
        shape: the ``shape`` object of ``model.compress`` (tuples of ints).
        strings: the ``strings`` of ``model.compress``: groups of streams of bytes.
        recon_crc: CRC32 of the encoder's uint8 reconstruction, or ``None`` when absent.
        checkpoint: the file name of the checkpoint that encoded it, or ``None`` (version-1 files).
        run: the name of that checkpoint's run directory, or ``None`` when not known.
    """

    model: str
    quality: int
    fingerprint: bytes
    height: int
    width: int
    shape: Shape
    strings: list[list[bytes]]
    recon_crc: int | None = None
    centred: bool = False  # padded centred (crop the middle back), else right/bottom (crop the top-left)
    checkpoint: str | None = None
    run: str | None = None
    gain: float | None = None  # a variable-rate model's gain (version 3), None: the model's one rate
    lmbda: float | None = None  # the λ that gain stands for

    @property
    def payload_bytes(self) -> int:
        """Bytes of entropy-coded data (without the header and checksums)."""
        return sum(len(s) for group in self.strings for s in group)

    @property
    def coded_with(self) -> str | None:
        """``"checkpoint_epoch00003.pt of run R"`` (or the file name alone), None when not recorded."""
        if self.checkpoint is None:
            return None
        return f"{self.checkpoint} of run {self.run}" if self.run else self.checkpoint


def storable_name(text: str | None) -> str | None:
    """``text`` as a checkpoint or run name the header can hold, None when nothing is left.

    Characters that are not printable (a newline or escape would break one-line messages and
    terminals) and path separators become ``?``; the UTF-8 is cut to :data:`MAX_CHECKPOINT_NAME` bytes.
    """
    if not text:
        return None
    clean = "".join(c if c.isprintable() and c not in "/\\" else "?" for c in text)
    clean = clean.encode("utf-8")[:MAX_CHECKPOINT_NAME].decode("utf-8", "ignore")
    return clean or None


def reconstruction_crc(pixels_bytes: bytes) -> int:
    """CRC32 of a reconstruction's raw uint8 bytes (C order, (3, H, W))."""
    return zlib.crc32(pixels_bytes)
