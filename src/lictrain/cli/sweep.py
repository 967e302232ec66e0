"""``lictrain sweep`` (being written)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("sweep", help="grid or Optuna hyperparameter sweep")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return 2
