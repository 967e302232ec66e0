"""Benchmark: encode and decode seconds per megapixel of every registered model, with real bitstreams.

Each model is built at quality 1 with random weights (speed does not depend on the weights),
``update()``-ed once, and timed on one centre crop of the built-in ``coffee`` photo through
lictrain's codec path (pad, ``compress``, pack the ``.lic`` bytes / parse, ``decompress``,
crop, round). Encode time excludes the encoder's verification decode. Each figure is the
fastest of ``--repeats`` runs after one warm-up (on shared CPUs the minimum is the figure
least disturbed by other processes); the autoregressive models (mbt2018, cheng2020-anchor),
which code latents one by one in Python, run twice.

Usage::

    python bench/codec_speed.py [--size 192x256] [--repeats 3] [--threads 2] [--device cpu] [--models a,b]

Prints one line per model: s/MP to encode, s/MP to decode, bpp of the (random-weights) file.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

try:
    import lictrain  # noqa: F401
except ImportError:  # run from a checkout without installing
    import pathlib

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))

import torch

from lictrain.data import load_builtin
from lictrain.evaluation.codec import codec_from_model, decode_bytes, encode_image
from lictrain.models import available_models, build_model

SLOW = {"mbt2018", "cheng2020-anchor"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="192x256", help="HxW crop of the coffee photo (default 192x256)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=None, help="comma list (default: every registered model)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    coffee = next(im for im in load_builtin("test") if im.name == "coffee").pixels
    top, left = (coffee.shape[1] - h) // 2, (coffee.shape[2] - w) // 2
    pixels = coffee[:, top:top + h, left:left + w].contiguous()
    mp = h * w / 1e6
    names = args.models.split(",") if args.models else available_models()
    print(f"{'model':24s} {'encode s/MP':>12s} {'decode s/MP':>12s} {'bpp':>7s}   "
          f"({h}x{w} crop of coffee, quality 1, {args.device}, {torch.get_num_threads()} threads)")
    t_all = time.perf_counter()
    for name in names:
        torch.manual_seed(0)
        try:
            model = build_model(name, 1).to(args.device)
            info = codec_from_model(model, name, 1)
        except Exception as exc:  # a model that cannot be built here is reported, not fatal
            print(f"{name:24s} skipped: {type(exc).__name__}: {exc}")
            continue
        repeats = min(2, args.repeats) if name in SLOW else args.repeats
        enc = encode_image(model, info, pixels, verify=False)  # warm-up
        decode_bytes(model, info, enc.data)
        enc_times, dec_times = [], []
        for _ in range(repeats):
            enc = encode_image(model, info, pixels, verify=False)
            dec = decode_bytes(model, info, enc.data)
            enc_times.append(enc.encode_s)
            dec_times.append(dec.decode_s)
        bpp = 8 * len(enc.data) / (h * w)
        print(f"{name:24s} {min(enc_times) / mp:12.2f} {min(dec_times) / mp:12.2f} {bpp:7.3f}",
              flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
