"""Model weights out of whatever a user points at: checkpoint, run directory, state_dict, safetensors.

One reader for every consumer of weights (``--pretrained``, ``lictrain eval``/``compress``,
``lictrain export``), so they accept the same files and fail with the same messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lictrain.checkpoint.io import load_checkpoint, resolve_checkpoint
from lictrain.errors import CheckpointError

__all__ = ["model_state_of", "read_weights"]


def model_state_of(ckpt: dict[str, Any], source: Path, accepted: str) -> dict[str, Any]:
    """The ``model_state`` of a loaded checkpoint, or the dict itself when it is a bare state_dict.

    Args:
        ckpt: what :func:`load_checkpoint` returned.
        source: the file it came from (for messages).
        accepted: what the caller accepts, for the error message ("a lictrain checkpoint or ...").

    Raises:
        CheckpointError: neither a ``model_state`` dict nor a dict of tensors.
    """
    if "model_state" in ckpt:
        state = ckpt["model_state"]
        if not isinstance(state, dict):
            raise CheckpointError(f"'model_state' in {source} is a {type(state).__name__}, not a state dict")
        return state
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt  # a bare state_dict saved with torch.save
    raise CheckpointError(f"{source} holds no 'model_state'; pass {accepted}")


def read_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``(state_dict, checkpoint dict, file read)`` on the CPU.

    ``path``: a lictrain checkpoint, a run directory (its latest checkpoint), a bare
    ``state_dict`` file, or a ``.safetensors`` file (then the checkpoint dict is empty).

    Raises:
        CheckpointError: missing, unreadable, unsafe file, or no weights in it.
    """
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"weights file {path} does not exist; pass an existing .safetensors file")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu"), {}, path
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); export it again with lictrain export") from exc
    file = resolve_checkpoint(path)  # a run directory stands for its latest checkpoint
    ckpt = load_checkpoint(file, map_location="cpu")
    state = model_state_of(ckpt, file, "a lictrain checkpoint, a state_dict or a .safetensors file")
    return state, ckpt if state is not ckpt else {}, file
