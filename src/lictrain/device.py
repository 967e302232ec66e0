"""The one place a ``--device`` name becomes a :class:`torch.device` (training and evaluation alike)."""

from __future__ import annotations

import re

import torch

from lictrain.errors import ConfigError

__all__ = ["resolve_device"]

_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as named.

    A :class:`torch.device` is returned as it is.

    Raises:
        ConfigError: For another name, CUDA asked for where no CUDA GPU is visible, or a GPU
            index beyond the visible ones (one line each, naming the fix).
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE_RE.match(name)
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if match.group(1) == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for, but no CUDA GPU is visible; use --device auto or cpu")
        count = torch.cuda.device_count()
        if match.group(2) is not None and int(match.group(2)) >= count:
            raise ConfigError(f"--device {name} asked for, but only {count} CUDA GPU(s) are visible "
                              f"(cuda:0 to cuda:{count - 1}); pick one of those or --device cuda")
    return torch.device(name)
