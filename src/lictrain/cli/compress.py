"""``lictrain compress``: an image to a ``.lic`` file with a trained model.

Example::

    lictrain compress photo.png -o photo.lic --checkpoint outputs/run      # the run's best checkpoint
    lictrain compress photo.png --checkpoint model.safetensors --model mbt2018-mean --quality 3
    lictrain compress photo.png -c outputs/vr-run --lambda 0.004        # a variable-rate model, any λ in range
    lictrain compress photo.png -c outputs/vr-run --target-bpp 0.3      # the λ that gives 0.3 bpp
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from lictrain.cli.common import add_flag, check_output

log = logging.getLogger(__name__)

HELP = "compress an image to a .lic bitstream with a trained checkpoint"


def add_codec_flags(p: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--model``, ``--quality``, ``--device`` (shared with decompress)."""
    add_flag(p, "checkpoint", "-c", metavar="CKPT", required=True,
             help="checkpoint file, run directory (its best checkpoint; RUN:latest) or .safetensors file")
    add_flag(p, "model", "-m", help="architecture, for weights-only files (.safetensors, bare state dicts)")
    add_flag(p, "quality", "-q", type=int, help="quality, for weights-only files")
    add_flag(p, "device", default="cpu",
             help="cpu (default), cuda or auto; decode on the same device type you encoded on")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compress", help=HELP, description=HELP + ". The file records the model, its weights' "
                              "fingerprint and a checksum of the reconstruction, so decoding checks it got the same image.")
    p.add_argument("image", metavar="IMAGE", help="PNG, JPEG, WebP, BMP, TIFF or PPM (converted to RGB)")
    add_flag(p, "output", "-o", metavar="FILE", help="output .lic file (default: IMAGE with suffix .lic)")
    add_flag(p, "force", action="store_true", help="replace an existing output file")
    rate = p.add_mutually_exclusive_group()
    add_flag(rate, "lambda", dest="lmbda", type=float, metavar="X",
             help="variable-rate models: code at λ=X (any value in the trained range; the file records it)")
    add_flag(rate, "target_bpp", type=float, metavar="B",
             help="variable-rate models: find the λ that codes this image at B bpp (within 2%%)")
    add_codec_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lictrain.evaluation.codec import compress_file, load_codec

    out = Path(args.output) if args.output else Path(args.image).with_suffix(".lic")
    check_output(out, named=bool(args.output), force=args.force, inputs=[Path(args.image)])
    model, info = load_codec(args.checkpoint, args.device, model=args.model, quality=args.quality)
    lmbda, searched = args.lmbda, ""
    if args.target_bpp is not None:
        from lictrain.data import read_image
        from lictrain.evaluation.rate_search import encode_at_bpp

        found = encode_at_bpp(model, info, read_image(Path(args.image).expanduser()), args.target_bpp)
        lmbda, searched = found.lmbda, f" (--target-bpp {args.target_bpp:g}: {found.encodes} encodes)"
    enc, height, width = compress_file(model, info, args.image, out, lmbda=lmbda)
    bits = 8 * len(enc.data)
    rate = f", λ={lmbda:.5g}{searched}" if lmbda is not None else ""
    print(f"wrote {out}: {len(enc.data)} bytes, {bits / (height * width):.4f} bpp "
          f"({width}x{height}, payload {8 * enc.payload_bytes / (height * width):.4f} bpp), "
          f"{info.label}{rate}, encoded in {enc.encode_s:.2f} s")
    # The full path, after success (a failure stays one line): a run directory stands for its best
    # checkpoint, which retention may delete later; the file records only the name.
    log.info("coded with checkpoint %s (weights fingerprint %s); decode with that file: the .lic names it",
             Path(info.source).resolve(), info.fingerprint.hex())
    return 0
