"""A trained model as a codec: image -> ``.lic`` bytes -> image.

Any registered model with CompressAI's coding API works: ``update(force=True)`` once (builds
the entropy coder's CDF tables), ``compress(x) -> {"strings", "shape"}`` and
``decompress(strings, shape) -> {"x_hat"}``.

The pixel path:

1. ``uint8 (3, H, W)`` -> float in [0, 1] -> padded on the right and bottom to a multiple of
   the model's alignment (registry ``alignment``) by **replicating the edge pixels**.
   Replication adds no artificial edge, so the padding costs fewer bits than zero padding;
   a model whose alignment is 1 (it pads internally) gets the image as is.
2. ``compress`` -> the ``.lic`` bytes (:mod:`lictrain.evaluation.bitstream`).
3. ``decompress`` -> crop to ``H x W`` -> clamp to [0, 1] -> ``round(255·x)`` as ``uint8``.

The encoder decodes its own streams once (``verify=True``) and stores the CRC32 of that
reconstruction in the file, so a decoder that reproduces a different image (another
device, another numeric library -- the classic failure of learned codecs) reports it as an
error instead of handing over a garbage image.

This module encodes and decodes; loading a checkpoint as a codec is
:mod:`lictrain.evaluation.loading` and the pixel path :mod:`lictrain.evaluation.pixels`
(their names are re-exported here).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lictrain.checkpoint.io import atomic_write
from lictrain.data import read_image
from lictrain.device import resolve_device  # noqa: F401 (re-exported: its old home)
from lictrain.errors import BitstreamError, ConfigError, LictrainError
from lictrain.evaluation import bitstream as bs
from lictrain.evaluation.loading import (  # noqa: F401 (re-exported)
    MAX_ENTROPY_RANGE, MAX_PROBE_LATENT, CodecInfo, codec_from_model, load_codec, weights_fingerprint)
from lictrain.evaluation.pixels import (  # noqa: F401 (re-exported)
    OFFICIAL_PAD_MULTIPLE, PAD_MODES, pad_to, to_input, to_uint8)
from lictrain.limits import max_pixels
from lictrain.models.gains import rate_gains, set_gain


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- encode / decode


@dataclass(frozen=True)
class Encoded:
    """One encoded image.

    Attributes:
        data: the whole ``.lic`` file.
        payload_bytes: bytes of entropy-coded streams (``len(data)`` minus header and checksums).
        reconstruction: the encoder's own decode (uint8, (3, H, W)) when ``verify`` was on.
        encode_s: seconds for padding + ``compress`` + packing (without the verification decode).
        verify_s: seconds of the verification decode (0 when off).
    """

    data: bytes
    payload_bytes: int
    reconstruction: torch.Tensor | None
    encode_s: float
    verify_s: float


def encode_image(model: torch.nn.Module, info: CodecInfo, pixels: torch.Tensor, *, verify: bool = True,
                 name_checkpoint: bool = True, lmbda: float | None = None) -> Encoded:
    """Compress a uint8 (3, H, W) image into ``.lic`` bytes.

    With ``verify`` the encoder decodes its own streams once and stores the CRC32 of that
    reconstruction in the file (see the module docstring). With ``name_checkpoint`` the file
    records ``info.checkpoint`` and ``info.run`` (when known), so a decoder given other weights can
    say which file it needs.

    ``lmbda``: the rate of a variable-rate model (required there, refused for a fixed-rate one);
    the file records it, so decoding needs no rate.

    Raises:
        BitstreamError: the model's streams are not CompressAI rANS streams of one image (no
            decoder here could read them back).
        ConfigError: a rate missing for a variable-rate model, given to a fixed-rate one, or outside
            the trained range.
    """
    gain = use_rate(model, lmbda)
    device = torch.device(info.device)
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        x = to_input(pixels, info.alignment, device, info.pad)
        out = model.compress(x)
        strings, shape = out["strings"], out["shape"]
        _sync(device)
        encode_s = time.perf_counter() - t0
        recon, verify_s, crc = None, 0.0, None
        if verify:
            t1 = time.perf_counter()
            recon = to_uint8(model.decompress(strings, shape)["x_hat"], height, width, info.pad == "official")
            verify_s = time.perf_counter() - t1
            crc = bs.reconstruction_crc(recon.numpy().tobytes())
    t2 = time.perf_counter()
    checkpoint, run = (info.checkpoint, info.run) if name_checkpoint and info.checkpoint else (None, None)
    data = bs.pack(model=info.model, quality=info.quality, fingerprint=info.fingerprint, height=height,
                   width=width, shape=shape, strings=strings, recon_crc=crc, centred=info.pad == "official",
                   checkpoint=checkpoint, run=run, gain=gain, lmbda=lmbda if gain is not None else None)
    encode_s += time.perf_counter() - t2
    problem = bs.rans_problem(strings)
    if problem is not None:  # a file no decoder here could read back: refuse to write it
        raise BitstreamError(f"{info.model}'s compress() returned streams that are not CompressAI rANS streams of "
                             f"one image ({problem}); a .lic file holds nothing else")
    payload = sum(len(s) for group in strings for s in group)
    return Encoded(data, payload, recon, encode_s, verify_s)


def use_rate(model: torch.nn.Module, lmbda: float | None) -> float | None:
    """Set a variable-rate model's gain for ``lmbda``; the gain as stored (float32), None for a fixed-rate model."""
    gains = rate_gains(model)
    if gains is None:
        if lmbda is not None:
            raise ConfigError(f"λ={lmbda:g} given, but this is a fixed-rate model (trained at one λ): drop the rate, "
                              "or train a variable-rate one with --lambdas")
        return None
    if lmbda is None:
        low, high = gains.range
        raise ConfigError(f"this is a variable-rate model (λ {low:g}..{high:g}): pass --lambda X in that range "
                          "or --target-bpp B")
    with torch.no_grad():
        # exactly the float32 the file stores
        gain = float(torch.tensor(float(gains.gain_at(lmbda).detach()), dtype=torch.float32))
    set_gain(model, torch.tensor(gain, dtype=torch.float32, device=gains.log_gains.device))
    return gain


def decode_rate(model: torch.nn.Module, stream: bs.Bitstream, what: str) -> None:
    """Set the gain ``stream`` was coded with (a variable-rate model's file carries it)."""
    gains = rate_gains(model)
    if (gains is None) != (stream.gain is None):
        kind = "a variable-rate model's rate" if stream.gain is not None else "no rate (a fixed-rate model's file)"
        raise BitstreamError(f"{what} carries {kind}, but the checkpoint given is "
                             f"{'fixed' if gains is None else 'variable'}-rate: decode with the checkpoint that coded it")
    if gains is not None:
        set_gain(model, torch.tensor(stream.gain, dtype=torch.float32, device=gains.log_gains.device))


@dataclass(frozen=True)
class Decoded:
    """One decoded image: ``pixels`` uint8 (3, H, W); ``matches_encoder`` is None without a stored CRC."""

    pixels: torch.Tensor
    stream: bs.Bitstream
    decode_s: float
    matches_encoder: bool | None


def check_compatible(stream: bs.Bitstream, info: CodecInfo, what: str) -> None:
    """Raise BitstreamError when ``stream`` was encoded by another model or other weights; when the
    stream names its checkpoint (format version 2) the message names that file."""
    same_model = stream.model == info.model and stream.quality == info.quality
    if same_model and stream.fingerprint == info.fingerprint:
        return
    if stream.coded_with is not None:
        ours = (f"holds other weights (fingerprint {info.fingerprint.hex()})" if same_model
                else f"is {info.model} quality {info.quality}")
        raise BitstreamError(
            f"{what} was coded with {stream.coded_with} ({stream.model} quality {stream.quality}, weights fingerprint "
            f"{stream.fingerprint.hex()}), but the checkpoint {info.source} {ours}; {_pass_hint(stream, info)}"
        )
    if not same_model:
        raise BitstreamError(
            f"{what} was encoded with {stream.model} quality {stream.quality}, but the checkpoint "
            f"{info.source} is {info.model} quality {info.quality}; decode it with the checkpoint that encoded it"
        )
    raise BitstreamError(
        f"{what} was encoded with other weights (fingerprint {stream.fingerprint.hex()}, the checkpoint "
        f"{info.source} has {info.fingerprint.hex()}); decode it with the checkpoint that encoded it"
    )


def _pass_hint(stream: bs.Bitstream, info: CodecInfo) -> str:
    """"pass <path> with -c" when the named checkpoint sits beside the one given, else "pass that file with -c"."""
    given = Path(info.source)
    beside = given.parent / str(stream.checkpoint)
    try:
        found = (beside.name != given.name and beside.is_file()
                 and (stream.run is None or given.resolve().parent.name == stream.run))
    except OSError:
        found = False
    return f"pass {beside} with -c" if found else "pass that file with -c"


def _safe_strings(stream: bs.Bitstream) -> list[list[bytes]]:
    """The streams with a tail of zero bytes the rANS decoder may read into.

    CompressAI's rANS decoder (C++, also HPCM's) reads its input without bounds checks: a crafted
    short or empty stream made it read past the buffer (a segfault, or an image made of memory).
    Each symbol renormalises at most once (4 bytes), and a latent has at most ~1.25 symbols per
    image pixel (HPCM: 320 channels at 1/16 of each side), so ``5 * padded pixels + 64`` zero
    bytes bound every read; a stream that needs them decodes to garbage that the reconstruction
    checksum then rejects.
    """
    multiple = 256 if stream.centred else 64
    padded = (-(-stream.height // multiple) * multiple) * (-(-stream.width // multiple) * multiple)
    tail = bytes(5 * padded + 64)
    return [[s + tail for s in group] for group in stream.strings]


def decode_bytes(model: torch.nn.Module, info: CodecInfo, data: bytes, *, what: str = "the bitstream",
                 strict: bool = True) -> Decoded:
    """Parse ``.lic`` bytes, check they belong to this codec, decompress, crop, round.

    Args:
        strict: raise when the file's reconstruction checksum disagrees with the decoded image
            (otherwise report it in ``matches_encoder``).

    Raises:
        BitstreamError: truncated, foreign or corrupt file, another model/weights, a decoder
            failure, or (``strict``) a reconstruction that differs from the encoder's.
    """
    device = torch.device(info.device)
    _sync(device)
    t0 = time.perf_counter()
    stream = bs.unpack(data, what)
    check_compatible(stream, info, what)
    bs.check_consistent(stream, info.alignment, limit=max_pixels(), what=what)
    bs.check_rans_streams(stream, what)
    decode_rate(model, stream, what)
    try:
        with torch.inference_mode():
            x_hat = model.decompress(_safe_strings(stream), stream.shape)["x_hat"]
    except LictrainError:
        raise
    except Exception as exc:  # the entropy decoder or the network rejected the streams
        raise BitstreamError(f"{what} could not be decoded ({type(exc).__name__}: {' '.join(str(exc).split())[:160]}); re-encode the image") from exc
    pixels = to_uint8(x_hat, stream.height, stream.width, stream.centred)  # the file says how it was padded
    _sync(device)
    decode_s = time.perf_counter() - t0
    matches = None
    if stream.recon_crc is not None:
        matches = bs.reconstruction_crc(pixels.numpy().tobytes()) == stream.recon_crc
        if strict and not matches:
            raise BitstreamError(
                f"decoding {what} on {info.device} gave a different image than the encoder's: its streams are damaged, "
                "or it was encoded on another device type or library version (learned codecs decode bit-exactly only "
                "there): decode where it was encoded"
            )
    return Decoded(pixels, stream, decode_s, matches)


def with_reconstruction_crc(stream: bs.Bitstream, pixels: torch.Tensor) -> bytes:
    """``stream``'s ``.lic`` bytes again, now carrying the CRC32 of ``pixels`` (its decode): what the
    encoder's own verification decode would have stored, without a second decode."""
    return bs.pack(model=stream.model, quality=stream.quality, fingerprint=stream.fingerprint, height=stream.height,
                   width=stream.width, shape=stream.shape, strings=stream.strings,
                   recon_crc=bs.reconstruction_crc(pixels.numpy().tobytes()), centred=stream.centred,
                   checkpoint=stream.checkpoint, run=stream.run)


# --------------------------------------------------------------------------- files


def compress_file(model: torch.nn.Module, info: CodecInfo, image_path: str | os.PathLike[str],
                  out_path: str | os.PathLike[str], lmbda: float | None = None) -> tuple[Encoded, int, int]:
    """Encode an image file to a ``.lic`` file (at ``lmbda`` for a variable-rate model); returns
    (encoded, height, width)."""
    pixels = read_image(Path(image_path).expanduser())
    enc = encode_image(model, info, pixels, verify=True, lmbda=lmbda)
    out = Path(out_path).expanduser()
    _write_bytes(out, enc.data)
    return enc, int(pixels.shape[1]), int(pixels.shape[2])


def read_bitstream_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a ``.lic`` file (BitstreamError when missing or unreadable)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise BitstreamError(f"{p} is a directory; pass a .lic file written by lictrain compress")
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise BitstreamError(f"bitstream file {p} does not exist; pass a .lic file written by lictrain compress") from None
    except OSError as exc:
        raise BitstreamError(f"cannot read {p}: {exc.strerror or exc}") from exc


def _write_bytes(path: Path, data: bytes) -> None:
    if path.is_dir():
        raise ConfigError(f"-o {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: handle.write(data), fsync=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; choose a writable path") from exc
