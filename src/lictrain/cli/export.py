"""``lictrain export``: model weights of a checkpoint as a safetensors file.

Example::

    lictrain export runs/q3/checkpoint_epoch00420.pt --out model.safetensors
    lictrain export runs/q3 --out model.safetensors      # a run directory: its best (RUN:latest: its latest)
"""

from __future__ import annotations

import argparse
from typing import Any

from lictrain.checkpoint.export import export_safetensors

__all__ = ["add_parser", "build_parser", "run"]

HELP = "export a checkpoint's model weights as .safetensors"


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "checkpoint", metavar="CKPT",
        help="checkpoint file, or a run directory (its best checkpoint; RUN:latest for its latest)",
    )
    p.add_argument(
        "--out", "-o", dest="out", required=True, metavar="FILE",
        help="output .safetensors file (an existing file needs --force)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to ``subparsers`` (sets ``func=run``)."""
    p = subparsers.add_parser("export", help=HELP, description=HELP)
    _configure(p)
    p.set_defaults(func=run)
    return p


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser with the ``export`` arguments (for tests and scripts)."""
    return _configure(argparse.ArgumentParser(prog="lictrain export", description=HELP))


def run(args: argparse.Namespace) -> int:
    """Export and print where the file went.

    Returns:
        0 on success.

    Raises:
        CheckpointError: Missing, corrupt or unsafe checkpoint, or an unwritable output.
    """
    from pathlib import Path

    from lictrain.checkpoint.weights import resolve_weights
    from lictrain.cli.common import check_output

    source = Path(args.checkpoint)
    inputs = [source, resolve_weights(args.checkpoint)]
    check_output(Path(args.out), named=True, force=args.force, inputs=inputs, flag="--out")
    out = export_safetensors(args.checkpoint, args.out)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {out} ({size_mb:.1f} MB) from {args.checkpoint}")
    return 0
