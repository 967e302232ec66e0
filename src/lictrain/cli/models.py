"""``lictrain models``: list the registered architectures."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model architectures lictrain can train")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lictrain.models import available_models, get_spec

    print(f"{'model':24s} {'qualities':10s} {'input multiple':16s} description")
    for name in available_models():
        spec = get_spec(name)
        print(f"{name:24s} {f'{spec.qualities[0]}..{spec.qualities[-1]}':10s} {spec.alignment:<16d} {spec.description}")
    return 0
