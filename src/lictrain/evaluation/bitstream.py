"""The ``.lic`` bitstream file: a small header, the entropy-coded streams, two checksums.

Layout (all integers are unsigned LEB128 varints unless a width is given)::

    magic          4 bytes  b"LIC\\x1a"
    version        1 byte   1, or 2 when a version-2 field is present (flag bit 2)
    flags          1 byte   bit 0: a reconstruction checksum is present; bit 1: the image was padded
                            with zeros, centred (the official HPCM test protocol), else on the
                            right/bottom by edge replication; bit 2 (version 2): the checkpoint is named
    model name     varint length + UTF-8
    quality        varint
    fingerprint    8 bytes  first 8 bytes of sha256 over the model weights (see codec.py)
    [checkpoint    if flags bit 2: its file name (varint length 1..255 + UTF-8), then the name of
                   its run directory (varint length 0..255 + UTF-8; 0 = not known)]
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
"""

from __future__ import annotations

import json
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

from lictrain.errors import BitstreamError

MAGIC = b"LIC\x1a"
#: the newest format version (read and written); :data:`BASE_VERSION` files are read too
FORMAT_VERSION = 2
#: the version of a file without version-2 fields: what lictrain wrote before version 2 existed
BASE_VERSION = 1
FINGERPRINT_BYTES = 8
_FLAG_RECON_CRC = 0x01
_FLAG_CENTRED = 0x02
_FLAG_CHECKPOINT = 0x04  # version 2
_KNOWN_FLAGS = {1: _FLAG_RECON_CRC | _FLAG_CENTRED, 2: _FLAG_RECON_CRC | _FLAG_CENTRED | _FLAG_CHECKPOINT}
#: longest checkpoint or run name stored (NAME_MAX: any file or directory name fits)
MAX_CHECKPOINT_NAME = 255
_SHAPE_FLAT, _SHAPE_JSON = 0, 1
_MAX_NAME = 255
_MAX_SIDE = 1 << 20  # a 1M x 1M image is far beyond anything a learned codec will decode here
_MAX_STREAMS = 4096

Shape = Any  # tuple of ints, or nested tuples of ints


@dataclass(frozen=True)
class Bitstream:
    """The decoded contents of a ``.lic`` file.

    Attributes:
        model: registry name of the model that encoded it.
        quality: its ``--quality``.
        fingerprint: 8 bytes identifying the weights (see :func:`lictrain.evaluation.codec.weights_fingerprint`).
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

    @property
    def payload_bytes(self) -> int:
        """Bytes of entropy-coded data (without the header and checksums)."""
        return sum(len(s) for group in self.strings for s in group)

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

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


# --------------------------------------------------------------------------- writing


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"varint must be >= 0, got {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


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
        return bytes([_SHAPE_FLAT]) + _varint(len(shape)) + b"".join(_varint(s) for s in shape)
    text = json.dumps(shape, separators=(",", ":")).encode("ascii")
    return bytes([_SHAPE_JSON]) + _varint(len(text)) + text


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
) -> bytes:
    """Serialise one encoded image to the bytes of a ``.lic`` file.

    Args:
        shape: ``model.compress(x)["shape"]`` (a torch.Size or nested lists/tuples of ints).
        strings: ``model.compress(x)["strings"]``.
        recon_crc: CRC32 of the encoder's uint8 reconstruction (lets the decoder prove it
            reproduced the same image), or ``None``.
        checkpoint, run: the checkpoint's file name and its run directory's name (see
            :func:`storable_name`); a named checkpoint makes the file version 2.

    Raises:
        ValueError: arguments that cannot be stored (a bug in the caller, not a user error).
    """
    name = model.encode("utf-8")
    if not 0 < len(name) <= _MAX_NAME:
        raise ValueError(f"model name must be 1..{_MAX_NAME} bytes, got {model!r}")
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}")
    if isinstance(strings, (bytes, bytearray)) or any(isinstance(g, (bytes, bytearray)) for g in strings):
        raise ValueError("compress() must return 'strings' as a list (per latent) of lists (per image) of bytes")
    groups = [[bytes(s) for s in group] for group in strings]
    if checkpoint is not None and storable_name(checkpoint) != checkpoint:
        raise ValueError(f"checkpoint name {checkpoint!r} cannot be stored; pass storable_name() of it")
    if run is not None and (checkpoint is None or storable_name(run) != run):
        raise ValueError(f"run name {run!r} cannot be stored (or no checkpoint name given)")
    head = bytearray(MAGIC)
    head.append(FORMAT_VERSION if checkpoint is not None else BASE_VERSION)
    head.append((_FLAG_RECON_CRC if recon_crc is not None else 0) | (_FLAG_CENTRED if centred else 0)
                | (_FLAG_CHECKPOINT if checkpoint is not None else 0))
    head += _varint(len(name)) + name
    head += _varint(quality)
    head += fingerprint
    if checkpoint is not None:
        for text in (checkpoint, run or ""):
            raw = text.encode("utf-8")
            head += _varint(len(raw)) + raw
    head += _varint(height) + _varint(width)
    head += _encode_shape(_normalise_shape(shape))
    head += _varint(len(groups))
    for group in groups:
        head += _varint(len(group))
        for s in group:
            head += _varint(len(s))
    if recon_crc is not None:
        head += (recon_crc & 0xFFFFFFFF).to_bytes(4, "big")
    body = bytes(head) + b"".join(s for group in groups for s in group)
    return body + zlib.crc32(body).to_bytes(4, "big")


# --------------------------------------------------------------------------- reading


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def truncated(self, field: str) -> BitstreamError:
        return BitstreamError(
            f"{self.what} is truncated ({len(self.data)} bytes, ends inside the {field}); "
            "re-encode the image or copy the whole file"
        )

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.truncated(field)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, field: str, limit: int) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise self.truncated(field)
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 63:
                raise self.corrupt(f"an over-long {field}")
        if value > limit:
            raise self.corrupt(f"an impossible {field} ({value})")
        return value

    def corrupt(self, detail: str) -> BitstreamError:
        return BitstreamError(f"{self.what} is corrupt ({detail}); re-encode the image")


#: deepest nesting of a JSON shape (CompressAI models use at most two levels)
_MAX_SHAPE_DEPTH = 4


def _checked_shape(value: Any, depth: int = 0) -> Shape:
    """A JSON-decoded shape as nested tuples of bounded non-negative ints, or ValueError."""
    if depth > _MAX_SHAPE_DEPTH:
        raise ValueError("shape nested too deeply")
    if isinstance(value, list):
        if len(value) > 64:
            raise ValueError("shape too long")
        return tuple(_checked_shape(v, depth + 1) for v in value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SIDE:
        raise ValueError(f"bad shape entry {str(value)[:20]!r}")
    return value


def _decode_shape(r: _Reader) -> Shape:
    kind = r.take(1, "shape")[0]
    if kind == _SHAPE_FLAT:
        n = r.varint("shape", 16)
        return tuple(r.varint("shape", _MAX_SIDE) for _ in range(n))
    if kind == _SHAPE_JSON:
        n = r.varint("shape", 1 << 12)
        text = r.take(n, "shape")
        try:
            return _checked_shape(json.loads(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError, RecursionError, OverflowError, TypeError):
            raise r.corrupt("unreadable shape") from None
    raise r.corrupt(f"unknown shape kind {kind}")


def check_consistent(stream: Bitstream, alignment: int, *, limit: int, what: str = "the bitstream") -> None:
    """Refuse a stream whose header cannot describe a real image for this codec, before anything
    is allocated: more than ``limit`` pixels, or a latent shape that does not follow from the
    image size (every (h, w) pair of the shape must be the padded size divided by a power of two
    up to 256), which bounds the decoder's memory by the image size.

    Raises:
        BitstreamError: one line naming the inconsistency.
    """
    pixels = stream.height * stream.width
    if pixels > limit:
        raise BitstreamError(f"{what} claims a {stream.width}x{stream.height} image ({pixels / 1e6:.0f} MP), over the "
                             f"{limit / 1e6:.0f} MP limit; raise it with lictrain --max-pixels N if the file is trusted")
    multiple = max(alignment, 256) if stream.centred else max(1, alignment)
    padded_h, padded_w = -(-stream.height // multiple) * multiple, -(-stream.width // multiple) * multiple
    allowed = {(padded_h // k, padded_w // k) for k in (1, 2, 4, 8, 16, 32, 64, 128, 256)
               if padded_h % k == 0 and padded_w % k == 0}
    pairs = list(_pairs(stream.shape))
    if not pairs or any(pair not in allowed for pair in pairs):
        raise BitstreamError(f"{what} is corrupt: its latent shape {str(stream.shape)[:60]} does not follow from its "
                             f"{stream.width}x{stream.height} image size; re-encode the image")


def _pairs(shape: Shape) -> Any:
    if isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(v, int) for v in shape):
        yield shape
    elif isinstance(shape, tuple):
        for part in shape:
            if isinstance(part, int):
                yield (part, -1)  # a lone int is never a valid (h, w)
            else:
                yield from _pairs(part)


#: CompressAI's rANS coder (Rans64 with 32-bit words, also HPCM's) flushes its 64-bit state as two
#: words: every stream it writes is a whole number of words, at least two, and starts with a state
#: in [2^31, 2^63) (the coder's invariant: RANS64_L <= x < RANS64_L << 32)
RANS_WORD_BYTES = 4
RANS_MIN_BYTES = 8
_RANS_STATE = range(1 << 31, 1 << 63)


def rans_problem(strings: Sequence[Sequence[bytes]]) -> str | None:
    """Why ``strings`` cannot be CompressAI's rANS encoding of one image, or None when they can be.

    One stream per latent (a ``.lic`` file holds one image: more would make the decoder build a
    batch of images), each a whole number of 4-byte words, at least 8 bytes, starting with a
    valid rANS state.
    """
    for g, group in enumerate(strings):
        if len(group) != 1:
            return f"latent {g} has {len(group)} streams, but a .lic file holds exactly one per latent (one image)"
        data = group[0]
        if len(data) < RANS_MIN_BYTES or len(data) % RANS_WORD_BYTES:
            return (f"stream {g} has {len(data)} bytes, too short or misaligned for a rANS encoding "
                    f"(a multiple of {RANS_WORD_BYTES}, at least {RANS_MIN_BYTES})")
        # Rans64DecInit reads two native-endian 32-bit words, low word first.
        state = int.from_bytes(data[:4], sys.byteorder) | int.from_bytes(data[4:8], sys.byteorder) << 32
        if state not in _RANS_STATE:
            return f"stream {g} does not start with a valid rANS state ({state:#x})"
    return None


def check_rans_streams(stream: Bitstream, what: str = "the bitstream") -> None:
    """Refuse streams that cannot be the rANS encoding of one image (:func:`rans_problem`) before the
    decoder reads them: CompressAI's decoder reads without bounds checks and decodes an empty or
    short stream to a plausible-looking image, which nothing else notices in a file without a
    reconstruction checksum.

    Raises:
        BitstreamError: one line naming the stream and the problem.
    """
    problem = rans_problem(stream.strings)
    if problem is not None:
        raise BitstreamError(f"{what} is corrupt: {problem}; re-encode the image")


def unpack(data: bytes, what: str = "the bitstream") -> Bitstream:
    """Parse the bytes of a ``.lic`` file.

    Args:
        data: the whole file.
        what: how messages name the file (e.g. its path).

    Raises:
        BitstreamError: not a ``.lic`` file, a newer format version, truncated, trailing
            bytes, or a checksum mismatch (one-line message).
    """
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        start = data[:8]
        hint = f"it starts with {start!r}" if data else "it is empty"
        raise BitstreamError(
            f"{what} is not a lictrain bitstream ({hint}); pass a .lic file written by lictrain compress"
        )
    r = _Reader(data, what)
    r.pos = len(MAGIC)
    version = r.take(1, "header")[0]
    if version not in _KNOWN_FLAGS:
        raise BitstreamError(
            f"{what} uses bitstream format version {version}; this lictrain reads versions {BASE_VERSION} to "
            f"{FORMAT_VERSION}: decode it with the lictrain version that wrote it"
        )
    # A cut-off file fails while parsing ("truncated"); a complete one with a flipped bit
    # fails the checksum after parsing ("corrupt").
    checksum_ok = len(data) >= 4 and zlib.crc32(data[:-4]) == int.from_bytes(data[-4:], "big")
    flags = r.take(1, "header")[0]
    try:
        name_len = r.varint("model name", _MAX_NAME)
        model = r.take(name_len, "model name").decode("utf-8")
        quality = r.varint("quality", 1 << 16)
        fingerprint = r.take(FINGERPRINT_BYTES, "weights fingerprint")
        names = [b"", b""]
        if version >= 2 and flags & _FLAG_CHECKPOINT:
            names = [r.take(r.varint(field, MAX_CHECKPOINT_NAME), field) for field in ("checkpoint name", "run name")]
        height = r.varint("image height", _MAX_SIDE)
        width = r.varint("image width", _MAX_SIDE)
        shape = _decode_shape(r)
        n_groups = r.varint("stream count", _MAX_STREAMS)
        lengths: list[list[int]] = []
        for _ in range(n_groups):
            n = r.varint("stream count", _MAX_STREAMS)
            lengths.append([r.varint("stream length", 1 << 40) for _ in range(n)])
        recon_crc = int.from_bytes(r.take(4, "reconstruction checksum"), "big") if flags & _FLAG_RECON_CRC else None
        strings = [[r.take(n, "payload") for n in group] for group in lengths]
        r.take(4, "file checksum")
    except UnicodeDecodeError:
        raise r.corrupt("the model name is not UTF-8") from None
    if r.pos != len(data):
        raise BitstreamError(
            f"{what} has {len(data) - r.pos} unexpected bytes after the end of the bitstream; "
            "it was altered or concatenated with other data"
        )
    if not checksum_ok:
        raise r.corrupt("checksum mismatch: the file was altered or damaged")
    if flags & ~_KNOWN_FLAGS[version]:
        raise r.corrupt(f"unknown flags {flags:#x}")
    if height == 0 or width == 0:
        raise r.corrupt(f"an empty image size {width}x{height}")
    if not model.isprintable():  # messages quote it: a newline would split them
        raise r.corrupt(f"an unprintable model name {model[:40]!r}")
    checkpoint, run = (_checked_name(raw, r) for raw in names)
    if flags & _FLAG_CHECKPOINT and checkpoint is None:
        raise r.corrupt("an empty checkpoint name")
    return Bitstream(model, quality, fingerprint, height, width, shape, strings, recon_crc, bool(flags & _FLAG_CENTRED),
                     checkpoint, run)


def _checked_name(raw: bytes, r: _Reader) -> str | None:
    """A stored checkpoint or run name, None when empty; corrupt unless :func:`storable_name` keeps it as is
    (a hostile file must not put a newline or a terminal escape into our messages)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise r.corrupt("a checkpoint or run name that is not UTF-8") from None
    if text and storable_name(text) != text:
        raise r.corrupt(f"an unprintable checkpoint or run name {text[:40]!r}")
    return text or None


def reconstruction_crc(pixels_bytes: bytes) -> int:
    """CRC32 of a reconstruction's raw uint8 bytes (C order, (3, H, W))."""
    return zlib.crc32(pixels_bytes)
