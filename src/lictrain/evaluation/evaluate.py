"""Evaluating learned codecs with real bitstreams.

Per image, as CompressAI's ``eval_model`` does: pad, ``compress``, pack the ``.lic`` bytes,
decode those bytes, crop, round to ``uint8``; bpp from the byte count of the whole file, PSNR
and MS-SSIM on the ``uint8`` images, encode/decode seconds. The kept file carries the CRC32 of
that decode, so ``lictrain decompress`` can prove it reproduces the same image.

Two more passes are optional (each costs about one more decode or forward): ``check_decode``
lets the encoder decode its own streams too and requires both decodes to give identical pixels
(``deterministic``; callers treat a difference as a failure: such a decoder's bitstreams are not
usable); ``estimate`` adds the model's rate estimate from a forward pass beside the real bpp.
"""

from __future__ import annotations

import dataclasses
import json

import logging
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from lictrain.data import NamedImage, load_builtin
from lictrain.data.images import list_images, load_images
from lictrain.data.loaders import load_test_images
from lictrain.data.sources import LIST_SUFFIXES, is_shard_dataset
from lictrain.errors import CheckpointError, ConfigError, DataError
from lictrain.evaluation.codec import decode_bytes, encode_image, with_reconstruction_crc
from lictrain.evaluation.loading import CodecInfo, load_codec
from lictrain.evaluation.pixels import to_input
from lictrain.evaluation.metrics import bpp, ms_ssim_uint8, psnr_uint8
from lictrain.evaluation.results import CurveResult, ImageResult, PointResult, safe_name
from lictrain.models.gains import rate_gains

log = logging.getLogger(__name__)

OnImage = Callable[[PointResult, ImageResult], None]


def load_eval_images(dataset: str | os.PathLike[str] | None, trained_on: Sequence[str] = (),
                     all_images: bool = False) -> tuple[list[NamedImage], str]:
    """Images to evaluate on, and a description of where they came from.

    ``None``: the built-in test photos (chelsea, coffee). A folder: its ``test/`` subfolder
    when it has one (CompressAI's layout), else every image directly inside it — except a flat
    folder named in ``trained_on`` (the checkpoints' training data sets), which gives its test
    split (what ``train`` held out) unless ``all_images``. A file list or prepared shards: their
    test split. An image file: that image.

    Raises:
        DataError: missing path, no images, or none readable.
    """
    if dataset is None:
        return load_builtin("test"), "built-in test photos (chelsea, coffee)"
    root = Path(dataset).expanduser()
    if is_shard_dataset(dataset) or (root.is_file() and root.suffix.lower() in LIST_SUFFIXES):
        return load_test_images(str(dataset)), f"test split of {dataset}"
    if root.is_file():
        return load_images([root], what="evaluation"), str(root)
    if not root.exists():
        raise DataError(f"dataset {root} does not exist; pass a folder of images (or omit --dataset for the built-in photos)")
    if not (root / "test").is_dir() and not all_images and any(_same_path(root, d) for d in trained_on):
        # a flat folder some checkpoint trained on: its 90/10 split, as `train` made it
        return load_test_images(str(root)), (f"the test split of {root} (the checkpoint trained on its other photos; "
                                             "--all-images scores every image)")
    folder = root / "test" if (root / "test").is_dir() else root
    paths = list_images(folder)
    if not paths:
        raise DataError(f"no images (png, jpg, webp, ...) in {folder}; pass a folder of images")
    return load_images(paths, what="evaluation"), str(folder)


def check_paths_exist(checkpoints: Sequence[str | os.PathLike[str]]) -> None:
    """CheckpointError naming the first path that does not exist."""
    for ckpt in checkpoints:
        if not Path(ckpt).expanduser().exists():
            raise CheckpointError(f"checkpoint {ckpt} does not exist; pass a checkpoint file, run directory or .safetensors file")


def estimated_bpp(model: torch.nn.Module, info: CodecInfo, pixels: torch.Tensor) -> float:
    """The model's rate estimate, ``Σ -log2(likelihoods) / (H·W)``, from one forward pass."""
    x = to_input(pixels, info.alignment, info.device, info.pad)
    with torch.inference_mode():
        out = model(x)
    bits = sum(float(torch.log2(lik).sum().neg()) for lik in out["likelihoods"].values())
    return bits / (pixels.shape[1] * pixels.shape[2])


def evaluate_codec(
    model: torch.nn.Module,
    info: CodecInfo,
    images: Sequence[NamedImage],
    *,
    bitstream_dir: str | os.PathLike[str] | None = None,
    estimate: bool = False,
    on_image: OnImage | None = None,
    check_decode: bool = False,
    lmbda: float | None = None,
) -> PointResult:
    """Evaluate one loaded codec on ``images`` with real bitstreams.

    Args:
        bitstream_dir: write each ``<image>.lic`` there (the bytes decoded are the file's).
        estimate: also run a forward pass for the estimated bpp.
        on_image: called after each image (progress).
        check_decode: decode twice (encoder and decoder) and record whether the pixels agree.
        lmbda: the rate of a variable-rate model (see :func:`rates_to_code`).

    Raises:
        BitstreamError: a stream the model cannot decode, or a mismatching checkpoint.
    """
    params = {"model": info.model, "quality": info.quality, "checkpoint": info.source, "epoch": info.epoch,
              "lmbda": info.lmbda, "fingerprint": info.fingerprint.hex(), "device": info.device, "pad": info.pad}
    point = PointResult(info.label, params)
    out_dir = Path(bitstream_dir).expanduser() if bitstream_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    for im in images:
        h, w = im.height, im.width
        # No checkpoint name in the file: eval measures the codec (the name is metadata that would add
        # its length to every bpp; the results name the checkpoint), and its files stay version 1.
        enc = encode_image(model, info, im.pixels, verify=check_decode, name_checkpoint=False, lmbda=lmbda)
        what = f"the bitstream of {im.name}"
        dec = decode_bytes(model, info, enc.data, what=what, strict=False)
        data = enc.data if check_decode else with_reconstruction_crc(dec.stream, dec.pixels)
        deterministic = bool(torch.equal(dec.pixels, enc.reconstruction)) if check_decode else None
        if deterministic is False:
            log.error("decoding %s twice gave different pixels", what)
        if out_dir is not None:
            (out_dir / f"{safe_name(im.name)}.lic").write_bytes(data)
        result = ImageResult(
            image=im.name, height=h, width=w, bytes=len(data), payload_bytes=enc.payload_bytes,
            bpp=bpp(len(data), h, w), bpp_payload=bpp(enc.payload_bytes, h, w),
            bpp_estimated=estimated_bpp(model, info, im.pixels) if estimate else math.nan,
            psnr=psnr_uint8(im.pixels, dec.pixels), ms_ssim=ms_ssim_uint8(im.pixels, dec.pixels),
            encode_s=enc.encode_s, decode_s=dec.decode_s, deterministic=deterministic,
        )
        point.images.append(result)
        if on_image is not None:
            on_image(point, result)
    return point


def evaluate_checkpoints(
    checkpoints: Sequence[str | os.PathLike[str]],
    images: Sequence[NamedImage],
    *,
    device: str | torch.device = "cpu",
    name: str | None = None,
    model: str | None = None,
    quality: int | None = None,
    bitstream_dir: str | os.PathLike[str] | None = None,
    estimate: bool = False,
    on_image: OnImage | None = None,
    description: str = "",
    pad: str = "replicate",
    check_decode: bool = False,
    rates: Sequence[float] | int | None = None,
) -> CurveResult:
    """Evaluate several checkpoints (one R-D point each) as one curve.

    Args:
        pad: the padding protocol (:data:`lictrain.evaluation.codec.PAD_MODES`); ``official``
            reproduces the official HPCM test script (zeros, centred, multiples of 256).
        name: the curve's name (default: the first checkpoint's model name).
        model, quality: for weights-only files (safetensors, bare state dicts).
        bitstream_dir: keep the ``.lic`` files under ``<dir>/<point index>-<label>/``.
        estimate, check_decode: the optional passes (see the module docstring).
        rates: for a variable-rate checkpoint, the λ to code (one point each): ``None`` its
            trained λ, an int N that many log-spaced over its range, or a list of λ.

    Raises:
        CheckpointError, ConfigError, BitstreamError: see :func:`load_codec` and :func:`evaluate_codec`.
    """
    check_paths_exist(checkpoints)  # fail before the first (possibly long) evaluation
    points: list[PointResult] = []
    for i, ckpt in enumerate(checkpoints):
        net, info = load_codec(ckpt, device, model=model, quality=quality)
        info = dataclasses.replace(info, pad=pad)
        for lmbda in rates_to_code(net, rates):
            point_info = info if lmbda is None else dataclasses.replace(info, lmbda=lmbda)
            sub = None
            if bitstream_dir is not None:
                sub = Path(bitstream_dir) / f"{len(points):02d}-{safe_name(point_info.label.replace(' ', '-'))}"
            points.append(evaluate_codec(net, point_info, images, bitstream_dir=sub, estimate=estimate,
                                         on_image=on_image, check_decode=check_decode, lmbda=lmbda))
        del net
    curve_name = name or (points[0].params["model"] if points else "learned")
    return CurveResult(curve_name, "learned", points, description, [im.name for im in images])


def rates_to_code(model: torch.nn.Module, rates: Sequence[float] | int | None) -> list[float | None]:
    """The λ at which to code ``model``: ``[None]`` for a fixed-rate model (its one rate); for a
    variable-rate one its trained λ (``rates`` None), ``rates`` log-spaced λ (an int), or ``rates``.

    Raises:
        ConfigError: rates for a fixed-rate model, fewer than 2 log-spaced rates, a λ out of range.
    """
    gains = rate_gains(model)
    if gains is None:
        if rates is not None:
            raise ConfigError("--lambdas/--rates choose the rates of a variable-rate checkpoint; this one has one rate")
        return [None]
    low, high = gains.range
    if rates is None:
        return [gains.lambda_of(k) for k in range(gains.count)]
    if isinstance(rates, int):
        if rates < 2:
            raise ConfigError(f"--rates must be 2 or more (log-spaced λ over {low:g}..{high:g}), got {rates}")
        return [math.exp(math.log(low) + (math.log(high) - math.log(low)) * k / (rates - 1)) for k in range(rates)]
    for lmbda in rates:
        gains.gain_at(lmbda)  # a λ outside the trained range: its one-line error now, not mid-evaluation
    return sorted(float(v) for v in rates)


def _same_path(a: Path, b: str) -> bool:
    """Whether ``a`` and the path ``b`` (``~`` expanded) name the same file or folder; False when unresolvable."""
    try:
        return a.resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def training_datasets(checkpoints: Sequence[str]) -> list[str]:
    """The ``--dataset`` each lictrain checkpoint trained on, from its run's ``run.json`` (cheap:
    no checkpoint is read; relative paths were relative to where training ran, so also tried as is)."""
    found = []
    for checkpoint in checkpoints:
        path = Path(checkpoint).expanduser()
        if not path.exists() and ":" in str(checkpoint):  # RUN:best, RUN:latest
            path = Path(str(checkpoint).rsplit(":", 1)[0]).expanduser()
        run_dir = path if path.is_dir() else path.parent
        try:
            config = json.loads((run_dir / "run.json").read_text()).get("config") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(config.get("dataset"), str):
            found.append(config["dataset"])
    return found
