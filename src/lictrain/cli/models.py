"""``lictrain models``: list the registered architectures; ``--groups MODEL``: its module groups."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the model architectures lictrain can train")
    parser.add_argument("--groups", metavar="MODEL",
                        help="list MODEL's module groups for --lr-groups/--unfreeze, with their parameter counts")
    parser.add_argument("--quality", "-q", type=int, default=None, help="with --groups: the quality (default: lowest)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lictrain.models import available_models, get_spec

    if args.groups:
        return print_groups(args.groups, args.quality)
    print(f"{'model':24s} {'qualities':10s} {'parameters':12s} {'input multiple':15s} description")
    for name in available_models():
        spec = get_spec(name)
        print(f"{name:24s} {f'{spec.qualities[0]}..{spec.qualities[-1]}':10s} {spec.size_text():12s} "
              f"{spec.alignment:<15d} {spec.description}")
    return 0


def print_groups(name: str, quality: int | None) -> int:
    """Each group ``--lr-groups``/``--unfreeze`` accept for ``name``, with its parameters."""
    from lictrain.models import build_model, get_spec
    from lictrain.training.param_groups import ALIASES, available_groups, group_members

    spec = get_spec(name)
    model = build_model(name, quality if quality is not None else spec.qualities[0])
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    print(f"{'group':22s} {'parameters':>12s}  members")
    for group in available_groups(model):
        members, _ = group_members(model, group)
        tops = sorted({m.split(".")[0] for m in members})
        what = f"alias of {', '.join(tops)}" if group in ALIASES else "module"
        print(f"{group:22s} {sum(sizes[m] for m in members):>12,d}  {what}")
    print("deeper module paths (such as g_a.0) work too; a parameter takes the most specific group's LR")
    return 0
