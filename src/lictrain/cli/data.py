"""``lictrain data``: look at a data set the way training will, and write it as shards.

Examples::

    lictrain data info ~/data/flickr2w                 # photos per split, listing time
    lictrain data prepare ~/data/flickr2w /fast/f2w-shards
    lictrain data prepare ~/data/DIV2K_png /fast/div2k-tiles --tile 512   # PNG: decode-free tiles
    lictrain train --dataset /fast/f2w-shards ...      # or an http(s)/pipe: URL of that folder
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from lictrain.cli.config_file import add_config_flags
from lictrain.cli.common import FriendlyParser, add_flag

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``data`` subcommand (``info``, ``prepare``) to ``subparsers``."""
    p = subparsers.add_parser("data", help="inspect a data set or write it as WebDataset shards",
                              description="Inspect a data set or write it as WebDataset shards.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=FriendlyParser)
    info = sub.add_parser("info", help="what training will see in DATASET (nothing decoded)")
    info.add_argument("dataset", metavar="DATASET", help="folder, file list (.txt) or prepared shards (folder or URL)")
    prep = sub.add_parser("prepare", help="write SRC's training photos as tar shards in OUT (a new folder)")
    add_config_flags(prep)
    prep.add_argument("src", metavar="SRC", help="folder (CompressAI layout or flat) or file list")
    prep.add_argument("out", metavar="OUT", help="new folder for the shards, index.json and test/")
    add_flag(prep, "tile", type=int, metavar="PX",
             help="cut each photo into PX x PX tiles (lossless; for PNG sources, decode-free with npy)")
    add_flag(prep, "tile_format", default="npy", help="npy (raw, no decode when training; default) or png")
    add_flag(prep, "shard_samples", type=int, default=1000, metavar="N", help="samples per shard (default 1000)")
    add_flag(prep, "shard_megabytes", type=float, default=512, metavar="MB", help="bytes per shard (default 512 MB)")
    p.set_defaults(func=run, parser=p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        from lictrain.data.prepare import prepare_shards

        summary = prepare_shards(args.src, args.out, tile=args.tile, tile_format=args.tile_format,
                                 shard_samples=args.shard_samples, shard_megabytes=args.shard_megabytes)
        print(f"{summary.samples} samples in {summary.shards} shard(s), {summary.bytes / 1e6:.1f} MB, "
              f"{summary.test_photos} test photo(s) -> {args.out}"
              + (f" ({summary.skipped} photo(s) skipped)" if summary.skipped else ""))
        print(f"train from them with: lictrain train --dataset {args.out}")
        return 0
    if args.data_command == "info":
        return _info(args.dataset)
    args.parser.print_help()
    return 2


def _info(dataset: str) -> int:
    from lictrain.data.shards import read_index
    from lictrain.data.sources import is_shard_dataset, resolve_files

    started = time.perf_counter()
    if is_shard_dataset(dataset):
        index = read_index(dataset)
        print(f"shards: {len(index.shards)} in {index.base}, {index.samples} samples"
              + (f" ({index.tile} px tiles)" if index.tile else " (whole photos)"))
        print(f"test photos: {index.test or 'none'}")
    else:
        source = resolve_files(dataset)
        seconds = time.perf_counter() - started
        print(f"{source.description}")
        print(f"train: {len(source.train)} photos (first: {source.train.name(0)})")
        print(f"test:  {len(source.test)} photos (first: {source.test.name(0)})")
        print(f"listed in {seconds:.2f} s; one epoch = one pass over the {len(source.train)} training photos "
              "(--epoch-size caps it)")
    return 0
