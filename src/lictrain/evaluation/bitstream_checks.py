"""Checks of a parsed ``.lic`` file before its streams reach a decoder: image size and latent
shape against the codec, and the streams' rANS framing."""

from __future__ import annotations

import sys
from typing import Any, Sequence

from lictrain.errors import BitstreamError
from lictrain.evaluation.bitstream_format import Bitstream, Shape

__all__ = ["check_consistent", "rans_problem", "check_rans_streams", "RANS_WORD_BYTES", "RANS_MIN_BYTES"]


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
