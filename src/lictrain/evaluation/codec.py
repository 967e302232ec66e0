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
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lictrain.limits import max_pixels
from lictrain.errors import BitstreamError, CheckpointError, ConfigError, LictrainError
from lictrain.evaluation import bitstream as bs

log = logging.getLogger(__name__)

#: state-dict entries derived by ``update()`` from the weights (not part of the fingerprint)
_DERIVED_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


@dataclass(frozen=True)
class CodecInfo:
    """What a loaded codec is.

    Attributes:
        model: registry name.
        quality: ``--quality``.
        fingerprint: 8 bytes of sha256 over the weights (:func:`weights_fingerprint`).
        alignment: the input multiple the model needs (from the registry).
        source: the file the weights came from.
        epoch: the checkpoint's epoch, when known.
        lmbda: the training λ, when known.
        device: where the model runs.
        pad: how images are padded to the model's input multiple (:data:`PAD_MODES`).
        checkpoint: the weights file's name, recorded in the ``.lic`` files it writes (None: in memory).
        run: the name of that file's run directory (lictrain checkpoints), else None.
    """

    model: str
    quality: int
    fingerprint: bytes
    alignment: int
    source: str
    epoch: int | None = None
    lmbda: float | None = None
    device: str = "cpu"
    pad: str = "replicate"  # see PAD_MODES
    checkpoint: str | None = None
    run: str | None = None

    @property
    def label(self) -> str:
        """A short name for tables: ``model q<quality>[ λ=...][ ep<epoch>]``."""
        parts = [f"{self.model} q{self.quality}"]
        if self.lmbda is not None:
            parts.append(f"λ={self.lmbda:g}")
        if self.epoch is not None:
            parts.append(f"ep{self.epoch}")
        return " ".join(parts)


def weights_fingerprint(model: torch.nn.Module) -> bytes:
    """First 8 bytes of sha256 over the state dict in sorted key order (name, dtype, shape, bytes).

    The entropy coder's CDF tables are left out: ``update()`` derives them from the weights.
    """
    h = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        if key.rsplit(".", 1)[-1] in _DERIVED_BUFFERS:
            continue
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()[: bs.FINGERPRINT_BYTES]


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is visible; use --device auto or cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


# --------------------------------------------------------------------------- loading


def load_codec(
    checkpoint_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    model: str | None = None,
    quality: int | None = None,
) -> tuple[torch.nn.Module, CodecInfo]:
    """Build the model a checkpoint was trained as, load its weights, ``update()`` it, move it to ``device``.

    Args:
        checkpoint_path: a lictrain checkpoint, a run directory (its latest checkpoint), a
            bare ``state_dict`` file, or a ``.safetensors`` file from ``lictrain export``.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a :class:`torch.device`.
        model, quality: the architecture, required for files that do not record it
            (safetensors, bare state dicts); for a checkpoint they must agree with its config.

    Returns:
        ``(model, info)``: the model in eval mode with its CDF tables built, and a :class:`CodecInfo`.

    Raises:
        CheckpointError: missing, corrupt or unsafe file, or weights that do not fit the model.
        ConfigError: model/quality missing or contradicting the checkpoint; unknown model; bad device.
    """
    from lictrain.checkpoint.weights import read_weights
    from lictrain.models import build_model, get_spec

    path = Path(checkpoint_path).expanduser()
    dev = resolve_device(device)
    state, ckpt, path = read_weights(path)
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    name, q = config.get("model"), config.get("quality")
    if name is None or q is None:
        if model is None or quality is None:
            what = "a safetensors file" if path.suffix == ".safetensors" else "this file"
            raise ConfigError(
                f"{path} does not record its architecture ({what} holds weights only); "
                "pass --model NAME --quality Q (see lictrain models)"
            )
        name, q = model, quality
    else:
        if model is not None and model != name:
            _accept_recorded_model(path, str(name), model)
        if quality is not None and int(quality) != int(q):
            raise ConfigError(f"--quality {quality} contradicts {path}, which was trained at quality {q}; drop --quality")
    q = int(q)
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:  # NaN weights make the entropy coder's tables (and its loops) meaningless: refuse up front
        raise CheckpointError(f"the weights in {path} hold NaN or infinite values ({bad[0]}, {len(bad)} tensor(s)): "
                              "the run diverged; evaluate an earlier checkpoint or retrain with a lower --lr")
    spec = get_spec(str(name))
    net = build_model(spec.name, q)
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise CheckpointError(
            f"the weights in {path} do not fit {spec.name} quality {q} ({detail}); "
            "pass the --model/--quality they were trained with"
        ) from exc
    net.eval()
    _check_entropy_ranges(net, path)
    net.update(force=True)  # CDF tables built on the CPU: the same tables on every device
    fingerprint = weights_fingerprint(net)
    net.to(dev)
    epoch = ckpt.get("epoch")
    lmbda = config.get("lmbda")
    run = path.resolve().parent.name if "model_state" in ckpt else None  # a lictrain checkpoint lives in its run
    info = CodecInfo(
        model=spec.name, quality=q, fingerprint=fingerprint, alignment=spec.alignment,
        source=str(path),
        epoch=int(epoch) if isinstance(epoch, int) else None,
        lmbda=float(lmbda) if isinstance(lmbda, (int, float)) else None, device=str(dev),
        checkpoint=bs.storable_name(path.name), run=bs.storable_name(run),
    )
    return net, info


def _accept_recorded_model(path: Path, recorded: str, requested: str) -> None:
    """Allow ``--model hpcm-base`` for weights recorded as its official variant (one log line says
    so: the variant is the same architecture with the official code's s2 placement, the only one
    those weights run correctly in); any other difference is a ConfigError."""
    from lictrain.models.hpcm.official import official_variant

    if official_variant(requested) != recorded:
        raise ConfigError(f"--model {requested} contradicts {path}, which was trained as {recorded}; drop --model")
    log.info("%s holds official HPCM weights: using %s (%s with the official code's s2 placement)",
             path, recorded, requested)


#: widest value range (in quantisation bins) a factorized entropy model may span; CompressAI's
#: ``update()`` builds a CDF table that long per channel, so a diverged model's 1e20 would hang it
MAX_ENTROPY_RANGE = 1 << 16


#: largest latent magnitude a sane codec produces for a grey probe image; CompressAI's rANS
#: encoder loops without end on symbols near the int32 limits
MAX_PROBE_LATENT = 1e6


def _check_entropy_ranges(net: torch.nn.Module, path: Path) -> None:
    """Refuse weights of a diverged run: EntropyBottleneck quantiles over an absurd range, or an
    analysis transform whose latent for a plain grey image is not finite or enormous (either
    would hang CompressAI's table building or rANS encoder)."""
    g_a = getattr(net, "g_a", None)
    if isinstance(g_a, torch.nn.Module):
        with torch.inference_mode():
            latent = g_a(torch.full((1, 3, 64, 64), 0.5))
        peak = latent.abs().max()
        if not bool(torch.isfinite(peak)) or float(peak) > MAX_PROBE_LATENT:
            raise CheckpointError(f"the weights in {path} give latents of {float(peak):.3g} for a grey image: the run "
                                  "diverged; evaluate an earlier checkpoint or retrain with a lower --lr")
    for name, module in net.named_modules():
        quantiles = getattr(module, "quantiles", None)
        if not isinstance(quantiles, torch.Tensor) or quantiles.dim() != 3 or quantiles.shape[-1] != 3:
            continue
        span = (quantiles[..., 2] - quantiles[..., 0]).detach().abs().max()
        if not bool(torch.isfinite(span)) or float(span) > MAX_ENTROPY_RANGE:
            raise CheckpointError(f"the entropy model {name} in {path} spans {float(span):.3g} quantisation bins: the "
                                  "run diverged; evaluate an earlier checkpoint or retrain with a lower --lr")


def codec_from_model(model: torch.nn.Module, name: str, quality: int, *, source: str = "<in memory>") -> CodecInfo:
    """``update()`` an in-memory model and describe it (for tests, benchmarks and the trainer)."""
    from lictrain.models import get_spec

    spec = get_spec(name)
    model.eval()
    device = next(model.parameters()).device
    model.to("cpu").update(force=True)
    fingerprint = weights_fingerprint(model)
    model.to(device)
    return CodecInfo(name, int(quality), fingerprint, spec.alignment, source, device=str(device))


# --------------------------------------------------------------------------- pixels


#: padding protocols: ``replicate`` (default) pads on the right/bottom to the model's multiple by
#: edge replication (the fewest extra pixels, no hard edge to code); ``official`` pads with zeros,
#: centred, to a multiple of 256 -- the official HPCM test script's protocol, needed to reproduce
#: its published numbers on images whose sides are not multiples of 256 (CLIC, Tecnick)
PAD_MODES = ("replicate", "official")
OFFICIAL_PAD_MULTIPLE = 256


def pad_to(x: torch.Tensor, alignment: int, mode: str = "replicate") -> torch.Tensor:
    """Pad a (N, C, H, W) batch to a multiple of ``alignment`` (``replicate``: right/bottom, edge
    replication) or of ``max(alignment, 256)`` (``official``: zeros, centred)."""
    h, w = x.shape[-2:]
    if mode == "official":
        multiple = max(alignment, OFFICIAL_PAD_MULTIPLE)
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="constant", value=0.0)
    ph, pw = (-h) % alignment, (-w) % alignment
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def to_input(pixels: torch.Tensor, alignment: int, device: torch.device | str, pad: str = "replicate") -> torch.Tensor:
    """uint8 (3, H, W) -> padded float (1, 3, H', W') in [0, 1] on ``device``."""
    if pixels.dtype != torch.uint8 or pixels.dim() != 3 or pixels.shape[0] != 3:
        raise ValueError(f"expected a uint8 (3, H, W) image, got {pixels.dtype} {tuple(pixels.shape)}")
    x = pixels.to(device).float().div_(255.0).unsqueeze(0)
    return pad_to(x, max(1, alignment), pad)


def to_uint8(x_hat: torch.Tensor, height: int, width: int, centred: bool = False) -> torch.Tensor:
    """Decoder output (1, 3, H', W') -> cropped (the top-left, or the centre for centred padding),
    clamped, rounded uint8 (3, H, W) on the CPU."""
    if x_hat.dim() != 4 or x_hat.shape[0] != 1 or x_hat.shape[1] != 3:
        raise BitstreamError(f"the decoder returned x_hat of shape {tuple(x_hat.shape)}, expected (1, 3, H, W)")
    if x_hat.shape[-2] < height or x_hat.shape[-1] < width:
        raise BitstreamError(
            f"the decoder returned a {x_hat.shape[-1]}x{x_hat.shape[-2]} image for a {width}x{height} original"
        )
    top = (x_hat.shape[-2] - height) // 2 if centred else 0
    left = (x_hat.shape[-1] - width) // 2 if centred else 0
    out = x_hat[0, :, top : top + height, left : left + width].float().clamp(0.0, 1.0).mul(255.0).round()
    return out.to(torch.uint8).cpu().contiguous()


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
                 name_checkpoint: bool = True) -> Encoded:
    """Compress a uint8 (3, H, W) image into ``.lic`` bytes.

    With ``verify`` the encoder decodes its own streams once and stores the CRC32 of that
    reconstruction in the file (see the module docstring). With ``name_checkpoint`` the file
    records ``info.checkpoint`` and ``info.run`` (when known), so a decoder given other weights can
    say which file it needs.

    Raises:
        BitstreamError: the model's streams are not CompressAI rANS streams of one image (no
            decoder here could read them back).
    """
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
                   checkpoint=checkpoint, run=run)
    encode_s += time.perf_counter() - t2
    problem = bs.rans_problem(strings)
    if problem is not None:  # a file no decoder here could read back: refuse to write it
        raise BitstreamError(f"{info.model}'s compress() returned streams that are not CompressAI rANS streams of "
                             f"one image ({problem}); a .lic file holds nothing else")
    payload = sum(len(s) for group in strings for s in group)
    return Encoded(data, payload, recon, encode_s, verify_s)


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
                  out_path: str | os.PathLike[str]) -> tuple[Encoded, int, int]:
    """Encode an image file to a ``.lic`` file; returns (encoded, height, width)."""
    from lictrain.data import read_image

    pixels = read_image(Path(image_path).expanduser())
    enc = encode_image(model, info, pixels, verify=True)
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
    from lictrain.checkpoint.io import atomic_write

    if path.is_dir():
        raise ConfigError(f"-o {path} is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: handle.write(data), fsync=False)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}; choose a writable path") from exc
