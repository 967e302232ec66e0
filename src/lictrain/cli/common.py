"""Shared CLI plumbing: a parser whose errors are one line with exit code 2, dual-spelling flags."""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from typing import TYPE_CHECKING, Any, NoReturn, Sequence

from lictrain.cli.config_file import config_defaults, config_path
from lictrain.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


class FriendlyParser(argparse.ArgumentParser):
    """ArgumentParser that reports a bad flag as one line (and exit code 2), no usage dump.

    Abbreviations are off: with two spellings of every flag (``--save_path``/``--save-path``),
    argparse would call ``--save`` "ambiguous" between them, and a prefix that works today
    could break when a flag is added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's; a ``--config FILE`` among ``args`` first sets this parser's defaults from
        the file, so that the flags given win over it."""
        arg_list = list(sys.argv[1:] if args is None else args)
        self._given = arg_list  # for the hint of error(): which subcommand ran
        path = config_path(arg_list) if "--config" in self._option_string_actions else None
        if path is not None:
            try:
                self.set_defaults(**config_defaults(self, path))
            except ConfigError as exc:
                self.exit(2, f"{self.prog}: error: {' '.join(str(exc).split())}\n")
        return super().parse_known_args(arg_list, namespace)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{self._suggestion(message)} (see {self.prog} --help)\n")

    def _suggestion(self, message: str) -> str:
        """``; did you mean --lambda?`` for a misspelt flag (``--lamda``)."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        known = set(self._option_string_actions)
        given = getattr(self, "_given", [])
        for action in self._actions:  # the subcommand's flags: its unknown ones reach the top parser
            if isinstance(action, argparse._SubParsersAction):
                used = [name for name in action.choices if name in given[:1]] or list(action.choices)
                for name in used:
                    known.update(action.choices[name]._option_string_actions)
        hints = []
        for word in message[len(prefix):].split():
            flag = word.split("=", 1)[0]
            if flag.startswith("--") and flag not in known:
                close = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.75)
                if close:
                    hints.append(f"{close[0]} (for {flag})")
        return f"; did you mean {', '.join(hints)}?" if hints else ""


def add_flag(parser: argparse.ArgumentParser, name: str, *aliases: str, **kwargs: Any) -> None:
    """Add ``--name`` under both spellings: ``--save_path``/``--save-path`` share one dest."""
    spellings = [f"--{name}"]
    for variant in (name.replace("_", "-"), name.replace("-", "_")):
        if f"--{variant}" not in spellings:
            spellings.append(f"--{variant}")
    spellings += [a for a in aliases if a not in spellings]
    kwargs.setdefault("dest", name.replace("-", "_"))
    parser.add_argument(*spellings, **kwargs)


def setup_logging(verbose: bool = False) -> None:
    """Messages to stderr, plain (the summary lines are for people)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "wandb", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def check_output(out: "Path", *, named: bool, force: bool, inputs: "Sequence[Path]" = (), flag: str = "-o") -> None:
    """Refuse to write ``out`` where that would destroy a file the user did not ask to replace.

    Args:
        out: the file about to be written.
        named: the user named it (``-o``); otherwise it is a default derived from an input.
        force: ``--force`` was given.
        inputs: files the command reads: never replaced, ``--force`` or not.

    Raises:
        ConfigError: ``out`` is an input, a directory, or an existing file without ``--force``.
    """
    from pathlib import Path

    from lictrain.errors import ConfigError

    out = Path(out)
    for source in inputs:
        try:
            if out.exists() and Path(source).exists() and out.resolve() == Path(source).resolve():
                raise ConfigError(f"{flag} {out} would replace its input {source}; name another output file")
        except OSError:
            continue
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name")
    if out.exists() and not force:
        if named:
            raise ConfigError(f"{out} already exists; pass --force to replace it, or name another file with {flag}")
        raise ConfigError(f"the default output {out} already exists (the original?); name the output with {flag} "
                          "NEW_FILE, or pass --force to replace it")
