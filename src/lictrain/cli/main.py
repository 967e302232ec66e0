"""``lictrain`` command line: one parser, one module per subcommand.

Every :class:`lictrain.errors.LictrainError` becomes ``lictrain <cmd>: error: <message>`` on
stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from lictrain.cli.common import FriendlyParser, setup_logging
from lictrain.errors import LictrainError
from lictrain.settings import parse_positive_int

#: subcommand -> module in lictrain.cli exposing add_parser(subparsers) and run(args) -> int
SUBCOMMANDS = {
    "train": "train",
    "models": "models",
    "gamma-plot": "gamma_plot",
    "export": "export",
    "eval": "eval",
    "rd": "rd",
    "compress": "compress",
    "decompress": "decompress",
    "sweep": "sweep",
    "analyze": "analyze",
    "data": "data",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lictrain")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def build_parser() -> FriendlyParser:
    parser = FriendlyParser(prog="lictrain", description="Train and evaluate learned image codecs with balanced R-D optimisation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"lictrain {_version()}")
    parser.add_argument("--max-pixels", "--max_pixels", dest="max_pixels", type=parse_positive_int, metavar="N",
                        help="largest image (or .lic image size) any command decodes, in pixels (default 40000000; "
                             "also LICTRAIN_MAX_PIXELS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=FriendlyParser)
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(f"lictrain.cli.{module_name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before a command took over (imports, setup): no traceback
        print("lictrain: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lictrain models | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging(getattr(args, "verbose", False))
    if args.max_pixels is not None:
        from lictrain.limits import set_max_pixels

        set_max_pixels(args.max_pixels)
    # CompressAI triggers this on import; it is not the user's to act on.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=FutureWarning)
    try:
        return int(args.func(args) or 0)
    except LictrainError as exc:
        message = " ".join(str(exc).split())  # one line, whatever a library put into the text
        print(f"lictrain {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code  # 2 (bad input), or 74 when the run's files could not be written


if __name__ == "__main__":
    sys.exit(main())
