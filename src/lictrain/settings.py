"""How a setting is declared: once, as a :class:`~lictrain.config.TrainConfig` field with a :class:`Setting`.

One declaration carries everything about a ``lictrain train`` setting — its flag spellings,
help, group, how the command line and config files parse it, the check of its value, whether
``--resume`` may change it and whether a sweep may search it. The parser
(:func:`lictrain.cli.train.add_train_arguments`), :meth:`TrainConfig.validate`, config files
(:mod:`lictrain.config_files`), ``--print-config``, recipes and sweeps all read it; nothing else
lists settings. Parsing and checking helpers live here so that every reader shares them.

Why not a library: jsonargparse, tyro and simple-parsing generate the parser from a dataclass,
but each brings its own flag spellings, help layout and error format — we must keep every
existing spelling (``--save_path``/``--save-path``, ``-lr``, ``--learning-rate``, CompressAI's
``--checkpoint``), one-line exit-2 errors and the "did you mean" hints, and their config-file
actions would replace ours. OmegaConf merges config files well but makes no parser. A field's
``metadata`` (the pattern simple-parsing uses) plus argparse gives the one declaration with none
of that; files are read by PyYAML (already installed with W&B), ``tomllib`` and ``json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any, Callable

from lictrain.errors import ConfigError

#: --help groups in order: (config-file key, title shown by --help)
GROUPS: tuple[tuple[str, str], ...] = (
    ("recipe", "recipe"),
    ("data", "data"),
    ("model", "model and loss"),
    ("optimisation", "optimisation"),
    ("speed", "speed"),
    ("balanced", "balanced R-D (Zhang et al., CVPR 2025)"),
    ("gamma_schedule", "adaptive gamma"),
    ("records", "run records and checkpoints"),
)

Check = Callable[[str, Any], None]


@dataclass(frozen=True)
class Setting:
    """Everything about one setting except its name, type and default (the field's).

    ``flag``: the canonical flag when it is not the field name (``lambda`` for ``lmbda``);
    ``aliases``: further spellings (both ``_``/``-`` forms of ``flag`` are always accepted);
    ``parse``: argparse's ``type`` (also applied to strings read from config files);
    ``check``: validates the final value (raises :class:`ConfigError`); ``choices``: the
    allowed values, imported from the module that owns them; ``resume``: ``--resume`` may
    change it; ``search``: a sweep may search it; ``local``: says where or how this machine
    runs the job, not what it trains (may differ between a sweep's workers).
    """

    group: str
    help: str
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    nargs: str | None = None
    action: str | None = None
    check: Check | None = None
    choices: tuple[Any, ...] | None = None
    resume: bool = False
    search: bool = True
    local: bool = False


def setting(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
    """A dataclass field declared with its :class:`Setting`."""
    meta = {"setting": Setting(**kwargs)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_of(field: dataclasses.Field) -> Setting:
    return field.metadata["setting"]


def flag_name(name: str, decl: Setting | None = None) -> str:
    """The canonical ``--flag`` of field ``name`` (dashed)."""
    return "--" + ((decl.flag if decl and decl.flag else name).replace("_", "-"))


def spellings(name: str, decl: Setting) -> list[str]:
    """Every option string of a setting: ``--x_y`` and ``--x-y`` of its flag, then its aliases."""
    base = decl.flag or name
    out = [f"--{base}"]
    for variant in (base.replace("_", "-"), base.replace("-", "_")):
        if f"--{variant}" not in out:
            out.append(f"--{variant}")
    return out + [a for a in decl.aliases if a not in out]


# -- checks: each raises ConfigError naming the flag -----------------------------------------------
def _flag(name: str) -> str:
    return "--lambda" if name == "lmbda" else "--" + name.replace("_", "-")


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (``numbers.Real``, numpy's too) but not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A real number (:func:`is_real`) that is finite."""
    return is_real(value) and math.isfinite(value)


def positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{_flag(name)} must be a positive integer, got {value}")


def positive_float(name: str, value: Any) -> None:
    if not (is_finite(value) and value > 0):
        raise ConfigError(f"{_flag(name)} must be a positive number, got {value}")


def optional(check: Check) -> Check:
    """``check`` for a value that may also be ``None`` (not set)."""
    def checked(name: str, value: Any) -> None:
        if value is not None:
            check(name, value)
    return checked


def whole_at_least(low: int, what: str = "") -> Check:
    def checked(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{_flag(name)} must be a whole number >= {low}{what}, got {value}")
    return checked


def real_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False, what: str = "") -> Check:
    """A finite number in the interval (``low_open``/``high_open`` exclude an end)."""
    def checked(name: str, value: Any) -> None:
        ok = is_finite(value) and (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
        if not ok:
            interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise ConfigError(f"{_flag(name)} must be {what or 'a number in ' + interval}, got {value}")
    return checked


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{_flag(name)} must be one of {', '.join(map(str, choices))}; got {value!r}")


# -- the checks of single settings that need more than a type and a range ---------------------------
def check_seed(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ConfigError(f"--seed must be a whole number from 0 to 2**63-1, got {value}")


def check_device(name: str, value: Any) -> None:
    if not (value in ("auto", "cpu", "cuda") or (isinstance(value, str) and re.fullmatch(r"cuda:\d+", value))):
        raise ConfigError(f"--device must be one of auto, cpu, cuda, cuda:N; got {value!r}")


def check_lr_groups(name: str, value: Any) -> None:
    bad = not isinstance(value, dict) or not value or any(not (is_finite(v) and v >= 0) for v in value.values())
    if bad:
        raise ConfigError(f"--lr-groups takes GROUP=LR pairs with LR >= 0, such as g_a=1e-5 context=5e-5; got {value}")


def check_unfreeze(name: str, value: Any) -> None:
    if not isinstance(value, list) or not value or len(set(value)) != len(value):
        raise ConfigError(f"--unfreeze takes distinct module groups in unfreezing order, such as "
                          f"entropy,context,g_s,g_a; got {value}")


def check_gamma_scales(name: str, value: Any) -> None:
    bad = {k: v for k, v in dict(value).items() if not (is_finite(v) and v > 0)}
    if bad:
        raise ConfigError(f"--gamma-scale values must be positive numbers, got {bad}")


def check_lambda_set(name: str, value: Any) -> None:
    """Two or more distinct positive λ, kept sorted (a variable-rate model's rates)."""
    if not isinstance(value, list) or not all(is_finite(v) for v in value):
        raise ConfigError(f"--lambdas takes numbers such as 0.0018,0.0067,0.0483; got {value}")
    values = sorted(float(v) for v in value)
    if len(values) < 2 or len(set(values)) != len(values) or values[0] <= 0:
        raise ConfigError(f"--lambdas needs two or more distinct positive values (one λ: --lambda), got {value}")
    value[:] = values


def check_step_epochs(name: str, value: Any) -> None:
    if not isinstance(value, list) or any(not isinstance(e, int) or e < 0 for e in value):
        raise ConfigError(f"--step_epochs must be non-negative epochs, got {value}")


# -- parsers (argparse types; also applied to strings from config files) --------------------------
def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no`` -> bool (for flags like ``--cautious false``)."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_positive_int(text: str) -> int:
    """A whole number > 0 (``--max-pixels``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_workers(text: str) -> int | None:
    if str(text).strip().lower() == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 or auto, got {text!r}")
    return value


def parse_batch_size(text: str) -> int | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def parse_pair(example: str) -> Callable[[str], tuple[str, float]]:
    """``NAME=NUMBER`` (``--lr-groups g_a=1e-5``, ``--gamma-scale s1=0.008``)."""
    def parse(text: str) -> tuple[str, float]:
        name, sep, value = str(text).partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            return name.strip(), float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {example}, got {text!r}") from None
    return parse


def parse_floats(text: str) -> list[float]:
    """``0.0018,0.0035`` -> ``[0.0018, 0.0035]``."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}")
    return values


def parse_names(text: str) -> list[str]:
    """``a,b,c`` -> ``["a", "b", "c"]``."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected module groups separated by commas, got {text!r}")
    return names


def config_error_as_type_error(parse: Callable[[str], Any], prefix: str) -> Callable[[str], Any]:
    """A parser raising :class:`ConfigError` as argparse's one-line type error (``prefix`` dropped)."""
    def wrapped(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(prefix)) from None
    return wrapped
