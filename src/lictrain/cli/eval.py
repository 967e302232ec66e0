"""``lictrain eval``: checkpoints (and classical anchors) on images with real bitstreams.

Examples::

    lictrain eval outputs/run-a outputs/run-b/checkpoint_epoch00099.pt --name ours
    lictrain eval run/ckpt.pt --dataset ~/data/kodak --anchors jpeg420,jpeg444,webp --out-dir results/
    lictrain eval --anchors all                      # anchors only, on the built-in test photos
    lictrain eval model.safetensors --model mbt2018-mean --quality 3
    lictrain eval run/ --check-decode --estimate    # + decode twice (determinism) and the estimated bpp
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from lictrain.cli.config_file import add_config_flags
from lictrain.settings import parse_floats
from lictrain.cli.common import add_flag

log = logging.getLogger(__name__)

HELP = "evaluate checkpoints (and JPEG/WebP/AVIF anchors) with real bitstreams: bpp, PSNR, MS-SSIM"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help=HELP, description=HELP + ". Each checkpoint is one R-D point of one curve; "
                              "each anchor is a curve over a quality sweep. Writes <name>.json and <name>.csv per curve.")
    add_config_flags(p)
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="checkpoint files, run directories (their best checkpoint; RUN:latest for the latest) or .safetensors files")
    add_flag(p, "dataset", "-d", metavar="DIR",
             help="folder of images (its test/ subfolder if it has one) or one image; default: built-in test photos")
    rates = p.add_mutually_exclusive_group()
    add_flag(rates, "lambdas", type=parse_floats, metavar="L1,L2,...",
             help="variable-rate checkpoints: code at these λ (default: the trained λ, one curve)")
    add_flag(rates, "rates", type=int, metavar="N", help="variable-rate checkpoints: N log-spaced λ over the trained range")
    add_flag(p, "all_images", action="store_true",
             help="score every image of a flat --dataset folder, even when a checkpoint trained on it (default: "
                  "the test split that training held out)")
    add_flag(p, "out_dir", "-o", metavar="DIR", default="outputs/eval",
             help="where results go (default outputs/eval): <name>.json, <name>.csv, bitstreams/")
    add_flag(p, "device", default="auto", help="auto, cpu or cuda (default auto)")
    add_flag(p, "name", metavar="NAME", help="name of the checkpoints' curve (default: the model name)")
    add_flag(p, "model", "-m", help="architecture of weights-only files (.safetensors, bare state dicts)")
    add_flag(p, "quality", "-q", type=int, help="quality of weights-only files")
    add_flag(p, "anchors", "-a", metavar="LIST",
             help="classical anchors to evaluate too: comma list of jpeg420, jpeg444, webp, avif, or all")
    add_flag(p, "anchor_qualities", metavar="LIST", default=None,
             help="anchor quality sweep, e.g. 10,30,50,70,90 or 10:95:5 (default 10,20,...,90,95)")
    add_flag(p, "pad", default="replicate",
             help="replicate (default: right/bottom edge replication to the model's multiple) or official (zeros, "
                  "centred, multiples of 256: the official HPCM test protocol, to reproduce published numbers)")
    add_flag(p, "force", action="store_true", help="replace results of the same curve names in --out-dir")
    add_flag(p, "no_bitstreams", action="store_true", help="do not keep the .lic files (they are still written and read back in memory)")
    add_flag(p, "estimate", action="store_true",
             help="also the model's estimated bpp (one forward pass per image, about 0.3x more time)")
    add_flag(p, "no_estimate", action="store_true", help=argparse.SUPPRESS)  # the default since 0.1: kept for scripts
    add_flag(p, "check_decode", action="store_true",
             help="decode every file twice (encoder and decoder) and fail if the pixels differ: proves the decoder "
                  "deterministic on this device (about 0.4x more time); default: one encode and one decode per "
                  "image, as CompressAI's eval_model")
    add_flag(p, "quiet", action="store_true", help="no per-image lines (the progress bar stays)")
    p.set_defaults(func=run)
    return p


def _check_results_free(args: argparse.Namespace, anchors: list[str], out_dir: Any) -> None:
    """Refuse, before any evaluation, to replace earlier results of the same curve names."""
    if args.force:
        return
    from lictrain.cli.common import check_output
    from lictrain.evaluation.results import safe_name

    names = list(anchors)
    if args.checkpoints:
        name = args.name or _default_curve_name(args.checkpoints[0], args.model)
        if name:
            names.append(str(name))
    for name in names:
        for suffix in (".json", ".csv"):
            check_output(out_dir / f"{safe_name(name)}{suffix}", named=True, force=False, flag="--out-dir")


def _default_curve_name(checkpoint: str, model: str | None) -> str | None:
    """The model the first checkpoint holds (the curve's default name), as load_codec will see it:
    ``--model`` for weights-only files, the recorded model otherwise (``--model hpcm-base`` on
    official HPCM weights evaluates ``hpcm-base-official``)."""
    from lictrain.models.hpcm.official import official_variant

    if model is not None and official_variant(model) is None:
        return model  # the file must record this very model, or load_codec refuses it
    from lictrain.checkpoint.weights import load_weights

    try:
        return load_weights(checkpoint).model or model
    except Exception:  # unreadable: load_codec reports it properly later
        return model


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lictrain.errors import BitstreamError, ConfigError
    from lictrain.evaluation.anchors import DEFAULT_QUALITIES, evaluate_anchor, parse_anchor_list, parse_qualities
    from lictrain.evaluation.evaluate import (check_paths_exist, evaluate_checkpoints, load_eval_images,
                                              training_datasets)
    from lictrain.evaluation.report import results_table
    from lictrain.evaluation.results import write_curve

    from lictrain.evaluation.codec import PAD_MODES

    if args.pad not in PAD_MODES:
        raise ConfigError(f"--pad must be one of {', '.join(PAD_MODES)}, got {args.pad!r}")
    if not args.checkpoints and not args.anchors:
        raise ConfigError("nothing to evaluate: pass checkpoint files or run directories, and/or --anchors jpeg420,webp")
    anchors = parse_anchor_list(args.anchors) if args.anchors else []
    qualities = parse_qualities(args.anchor_qualities) if args.anchor_qualities else list(DEFAULT_QUALITIES)
    check_paths_exist(args.checkpoints)
    out_dir = Path(args.out_dir).expanduser()
    _check_results_free(args, anchors, out_dir)
    images, source = load_eval_images(args.dataset, training_datasets(args.checkpoints), args.all_images)
    log.info("evaluating on %d image(s) from %s", len(images), source)

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(args.checkpoints) * len(images), desc="eval", unit="image", dynamic_ncols=True,
               disable=None)  # tqdm: shown on a terminal only

    def progress(point, im) -> None:  # noqa: ANN001
        bar.update(1)
        if not args.quiet:
            estimated = f" (estimated {im.bpp_estimated:.4f})" if args.estimate else ""
            log.info("  %s  %s: %.4f bpp%s, PSNR %.2f dB, encode %.2f s, decode %.2f s%s", point.label, im.image,
                     im.bpp, estimated, im.psnr, im.encode_s, im.decode_s,
                     "  DECODES DIFFER" if im.deterministic is False else "")

    curves = []
    if args.checkpoints:
        with logging_redirect_tqdm(), bar:  # per-image lines above the bar, not through it
            curve = evaluate_checkpoints(
                args.checkpoints, images, device=args.device, name=args.name, model=args.model, quality=args.quality,
                bitstream_dir=None if args.no_bitstreams else out_dir / "bitstreams" / (args.name or "learned"),
                estimate=args.estimate, on_image=progress, pad=args.pad, check_decode=args.check_decode,
                rates=args.lambdas if args.lambdas is not None else args.rates,
                description=f"lictrain eval on {source}" + (", official padding" if args.pad == "official" else ""),
            )
        curves.append(curve)
    else:
        bar.close()
    for name in anchors:
        if not args.quiet:
            log.info("  anchor %s, quality %s", name, ",".join(map(str, qualities)))
        curves.append(evaluate_anchor(name, images, qualities))
    print(results_table(curves))
    for curve in curves:
        json_path, csv_path = write_curve(curve, out_dir)
        print(f"wrote {json_path} and {csv_path}")
    bad = [(c.name, label, image) for c in curves for label, image in c.nondeterministic()]
    if bad:
        listed = ", ".join(f"{label} on {image}" for _, label, image in bad[:4])
        raise BitstreamError(
            f"decoding the same bytes twice gave different pixels ({listed}{', ...' if len(bad) > 4 else ''}): "
            "the decoder is not deterministic on this device, so its bitstreams are not usable"
        )
    return 0
