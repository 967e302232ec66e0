"""``lictrain decompress``: a ``.lic`` file back to an image.

Example::

    lictrain decompress photo.lic -o photo_decoded.png --checkpoint outputs/run
"""

from __future__ import annotations

import argparse
from typing import Any

from lictrain.cli.common import add_flag, check_output
from lictrain.cli.compress import add_codec_flags

HELP = "decompress a .lic bitstream to an image (PNG) with the checkpoint that encoded it"

#: lossless formats Pillow writes; a lossy one would change the decoded pixels again
LOSSLESS_SUFFIXES = {".png": "PNG", ".ppm": "PPM", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("decompress", help=HELP, description=HELP + ". A truncated, foreign or "
                              "altered file, or another checkpoint, is an error, never a garbage image.")
    p.add_argument("bitstream", metavar="FILE", help=".lic file written by lictrain compress")
    add_flag(p, "output", "-o", metavar="IMAGE", help="output image: .png (default: FILE with suffix .png), .ppm, .bmp, .tif")
    add_flag(p, "force", action="store_true", help="replace an existing output image")
    add_codec_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from lictrain.errors import ConfigError
    from lictrain.evaluation.bitstream import unpack
    from lictrain.evaluation.codec import decode_bytes, load_codec, read_bitstream_file

    out = Path(args.output) if args.output else Path(args.bitstream).with_suffix(".png")
    fmt = LOSSLESS_SUFFIXES.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"-o {out}: write a lossless image ({', '.join(LOSSLESS_SUFFIXES)}); "
                          "a lossy format would change the decoded pixels")
    check_output(out, named=bool(args.output), force=args.force, inputs=[Path(args.bitstream)])
    data = read_bitstream_file(args.bitstream)
    header = unpack(data, args.bitstream)  # a bad file fails before the model is loaded
    model_name, quality = args.model, args.quality
    if str(args.checkpoint).endswith(".safetensors") and model_name is None and quality is None:
        model_name, quality = header.model, header.quality  # the file says what encoded it
    model, info = load_codec(args.checkpoint, args.device, model=model_name, quality=quality)
    dec = decode_bytes(model, info, data, what=args.bitstream)
    if out.is_dir():
        raise ConfigError(f"-o {out} is a directory; give a file name such as image.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(dec.pixels.permute(1, 2, 0).numpy())).save(out, format=fmt)
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror or exc}; choose a writable path") from exc
    check = "matches the encoder's reconstruction" if dec.matches_encoder else "no reconstruction checksum in the file"
    print(f"wrote {out}: {dec.stream.width}x{dec.stream.height}, {info.label}, decoded in {dec.decode_s:.2f} s ({check})")
    return 0
