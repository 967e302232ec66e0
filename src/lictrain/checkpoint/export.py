"""Export a checkpoint's model weights as a ``.safetensors`` file.

safetensors holds tensors only and cannot run code when loaded, so it is the format to hand
weights to other tools (``safetensors.torch.load_file(path)`` gives the ``state_dict`` back).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from lictrain.checkpoint.io import atomic_write
from lictrain.checkpoint.weights import load_weights
from lictrain.errors import CheckpointError

__all__ = ["export_safetensors"]

log = logging.getLogger(__name__)


def export_safetensors(
    ckpt_path: str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> Path:
    """Write the model weights of a checkpoint to ``out_path`` in safetensors format.

    Args:
        ckpt_path: A lictrain checkpoint file, a run directory (its latest checkpoint), or a
            plain ``state_dict`` saved with ``torch.save``. Loaded with ``weights_only=True``.
        out_path: The ``.safetensors`` file to write (replaced atomically if it exists).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: If the checkpoint is missing, corrupt, unsafe, or holds no tensors.
    """
    from safetensors.torch import save as st_save

    weights = load_weights(ckpt_path)  # lictrain, CompressAI, official HPCM (converted) or bare
    src, ckpt, state = weights.file, weights.checkpoint, weights.state
    tensors: dict[str, torch.Tensor] = {}
    skipped = []
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            # Contiguous, standalone copies: safetensors refuses tensors sharing storage.
            tensors[str(k)] = v.detach().cpu().contiguous().clone()
        else:
            skipped.append(str(k))
    if skipped:
        log.warning("not exported (not tensors): %s", ", ".join(skipped))
    if not tensors:
        raise CheckpointError(f"'model_state' in {src} holds no tensors; nothing to export")

    metadata = {"format": "pt", "source": src.name}
    if weights.model:  # lets eval/compress/--pretrained build the model without --model/--quality
        metadata["model"] = str(weights.model)
    if weights.quality is not None:
        metadata["quality"] = str(weights.quality)
    for key in ("epoch", "metric", "metric_value"):
        value: Any = ckpt.get(key)
        if isinstance(value, (int, str)) or (isinstance(value, float) and math.isfinite(value)):
            metadata[key] = str(value)
    data = st_save(tensors, metadata=metadata)
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a directory; give a file name such as model.safetensors")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda f: f.write(data), fsync=True)
    except OSError as exc:
        raise CheckpointError(f"cannot write {out}: {exc}; choose a writable path") from exc
    return out
