"""``--config FILE``: a command's flags from a YAML, TOML or JSON file (and ``--print-config``).

Keys are the command's flag names in either spelling (``save-path``, ``save_path``, ``lambda``,
``learning-rate``), or its settings' names; flat, or grouped under the ``--help`` groups
(``data:``, ``optimisation:``, ... or the group's title). Flags on the command line win over the
file; for ``train`` a ``--recipe`` sits below both. A run's own ``run.json`` is a valid file for
``train``: its ``config`` is the run's settings (less where it was saved and how it was
resumed; a budgeted run becomes the ``--steps``/``--lr-plan`` replay of what it trained).

The file is untrusted input: at most :data:`MAX_BYTES`, parsed by safe loaders only, every key
must be a flag of the command (a misspelt one is a one-line error naming the closest).
"""

from __future__ import annotations

import argparse
import difflib
import json
import tomllib
from pathlib import Path
from typing import Any

from lictrain.errors import ConfigError
from lictrain.settings import GROUPS, parse_bool, setting_of

#: a config file larger than this is refused (settings are a few kB)
MAX_BYTES = 1 << 20
#: run.json settings that say where a run was saved and how it was resumed: a re-run sets its own
RUN_PLACE = ("resume", "auto_resume", "save_path")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in ``path`` (``.yaml``/``.yml``, ``.toml``, ``.json``; others: JSON, then YAML).

    Raises:
        ConfigError: missing, too large, not parseable, or not a mapping.
    """
    import yaml

    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_BYTES:
            raise ConfigError(f"--config {file}: larger than {MAX_BYTES >> 10} KiB; a settings file is a few kB")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"--config {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {file}: cannot be read ({exc})") from None
    suffix = file.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)  # YAML 1.1 is a superset of JSON here
    except (ValueError, yaml.YAMLError) as exc:
        kind = {".toml": "TOML", ".json": "JSON"}.get(suffix, "YAML")
        reason = " ".join(str(exc).split())[:200]
        raise ConfigError(f"--config {file}: not valid {kind} ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config {file}: expected a mapping of settings (key: value), got a {type(data).__name__}")
    return data


def is_run_record(data: dict[str, Any]) -> bool:
    """A run's ``run.json`` (its settings under ``config``) rather than a settings file."""
    return isinstance(data.get("config"), dict) and ("status" in data or "versions" in data)


def run_record_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The settings that train a recorded run again: its ``config`` less :data:`RUN_PLACE`; a
    budgeted run's length replaced by the steps it trained and its LR plan (no clock)."""
    settings = {k: v for k, v in record["config"].items() if k not in RUN_PLACE}
    summary = record.get("summary") if isinstance(record.get("summary"), dict) else {}
    steps = summary.get("trained_steps")
    budget = record.get("budget") if isinstance(record.get("budget"), dict) else {}
    if settings.get("budget_minutes") is not None and isinstance(steps, int):
        plan = record.get("lr_plan") or str(budget.get("steps") or steps)
        settings.update(budget_minutes=None, epochs=None, steps=steps, lr_plan=str(plan))
    return settings


# -- mapping keys to the parser's actions ------------------------------------------------------------
def _norm(key: str) -> str:
    return str(key).strip().lstrip("-").replace("-", "_").replace(" ", "_")


def _actions_by_key(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.Action, bool]]:
    """Every long option (normalised) -> (its action, False); every dest not spelt as an option
    -> (the action that stores it, True): a dest's value is the value itself (``final_eval:
    false``), an option's is what the option means (``no_final_eval: true``)."""
    table: dict[str, tuple[argparse.Action, bool]] = {}
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                table.setdefault(_norm(option), (action, False))
    stores = [a for a in parser._actions if a.option_strings and type(a) is argparse._StoreAction]
    switches = [a for a in parser._actions if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))]
    optional_positionals = [a for a in parser._actions if not a.option_strings and a.nargs in ("*", "?")]
    for action in stores + switches + optional_positionals:  # eval's checkpoints: CKPT... from a file too
        table.setdefault(action.dest, (action, True))
    return table


def _group_keys(parser: argparse.ArgumentParser) -> set[str]:
    keys = {_norm(title) for title in (g.title for g in parser._action_groups) if title}
    keys |= {key for key, _ in GROUPS} | {_norm(title) for _, title in GROUPS}
    return keys


def _flatten(data: dict[str, Any], groups: set[str], table: dict[str, tuple[argparse.Action, bool]]
             ) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        norm = _norm(key)
        if isinstance(value, dict) and norm in groups and not _takes_mapping(table.get(norm, (None, False))[0]):
            items += [(str(k), v) for k, v in value.items()]
        else:
            items.append((str(key), value))
    return items


def _takes_mapping(action: argparse.Action | None) -> bool:
    return action is not None and action.nargs == "+"


def _convert(action: argparse.Action, by_dest: bool, key: str, value: Any, where: str) -> Any:
    """``value`` from the file as argparse would have stored it from the command line."""
    try:
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            on = value if isinstance(value, bool) else parse_bool(str(value))
            return on if by_dest or isinstance(action, argparse._StoreTrueAction) else not on
        if isinstance(action, argparse._StoreConstAction):
            return action.const
        if value is None:
            return None
        if action.nargs == "+":
            if isinstance(value, dict):  # grid: {gamma: [0.003, 0.01]}, lr_groups: {g_a: 1e-5}
                value = [f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in value.items()]
            items = value if isinstance(value, list) else [value]
            return [_typed(action, item) for item in items]
        return _typed(action, value)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"--config {where}: {key}: {exc}") from None


def _typed(action: argparse.Action, value: Any) -> Any:
    """A string goes through the flag's parser (YAML reads 1e-4 as a string); typed values stay,
    except that a number for a text flag becomes its text."""
    if isinstance(value, str) and action.type is not None:
        return action.type(value)
    if action.type in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return action.type(value) if action.type is float or float(value).is_integer() else value
    if action.type is None and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and action.type is not None and all(isinstance(v, str) for v in value):
        return action.type(",".join(value))  # --unfreeze a,b / --stop-signals as a YAML list
    return value


def config_defaults(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """``path``'s settings as ``{dest: value}`` for ``parser.set_defaults`` (the command line wins).

    Raises:
        ConfigError: an unreadable file, an unknown key (with the closest valid one), a bad value.
    """
    data = read_config_file(path)
    table = _actions_by_key(parser)
    if is_run_record(data):
        if "steps" not in table:
            raise ConfigError(f"--config {path}: a run.json holds training settings: use it with lictrain train")
        data = run_record_settings(data)
    values: dict[str, Any] = {}
    for key, value in _flatten(data, _group_keys(parser), table):
        found = table.get(_norm(key))
        if found is None:
            raise ConfigError(f"--config {path}: unknown setting {key!r}{_closest(key, table)}")
        action, by_dest = found
        values[action.dest] = _convert(action, by_dest, key, value, path)
    return values


def _closest(key: str, table: dict[str, tuple[argparse.Action, bool]]) -> str:
    names = sorted({name.replace("_", "-") for name in table})
    close = difflib.get_close_matches(_norm(key).replace("_", "-"), names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else "; the settings are the flags of --help"


def config_path(args: list[str]) -> str | None:
    """The value of the last ``--config`` in ``args`` (``--config F`` or ``--config=F``)."""
    found = None
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            found = args[i + 1]
        elif arg.startswith("--config="):
            found = arg.split("=", 1)[1]
    return found


def add_config_flags(parser: argparse.ArgumentParser, *, print_config: bool = False) -> None:
    """``--config FILE`` (and, for ``train``, ``--print-config``)."""
    parser.add_argument("--config", metavar="FILE", dest="config_file",
                        help="read flags from a YAML, TOML or JSON file (keys: flag names, flat or grouped as here; "
                             "a run's run.json re-runs it); flags on the command line win")
    if print_config:
        parser.add_argument("--print-config", "--print_config", dest="print_config", action="store_true",
                            help="print the effective settings (recipe + file + flags) as YAML, which --config "
                                 "accepts, and exit")



def settings_yaml(cfg: Any) -> str:
    """``cfg`` (a :class:`TrainConfig`) as YAML grouped as ``--help`` groups it; ``--config`` reads it back."""
    import dataclasses

    import yaml

    grouped: dict[str, dict[str, Any]] = {key: {} for key, _ in GROUPS}
    for f in dataclasses.fields(cfg):
        decl = setting_of(f)
        key = f.name if decl.action == "store_false" else (decl.flag or f.name)
        grouped[decl.group][key] = getattr(cfg, f.name)
    lines = ["# lictrain train settings: lictrain train --config THIS_FILE (flags on the command line win)"]
    for key, title in GROUPS:
        lines.append(f"# {title}")
        lines.append(yaml.safe_dump({key: grouped[key]}, sort_keys=False, default_flow_style=False, width=100).rstrip())
    return "\n".join(lines) + "\n"
