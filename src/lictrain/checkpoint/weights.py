"""Model weights out of whatever a user points at: checkpoint, run directory, state_dict, safetensors.

One reader for every consumer of weights (``--pretrained``, ``lictrain eval``/``compress``,
``lictrain export``), so they accept the same files and fail with the same messages.

Foreign files are read too, as their authors' tools write them:

* CompressAI's ``examples/train.py`` (``{"state_dict": ...}``) and the other layouts CompressAI
  reads (``network``, ``model_state_dict``), with or without DataParallel's ``module.`` prefix;
* the official HPCM release (``lyq133/LIC-HPCM``), detected by its parameter names and
  converted to ``hpcm-base-official``/``hpcm-large-official``
  (:mod:`lictrain.models.hpcm.official`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lictrain.checkpoint.locate import load_checkpoint, resolve_checkpoint
from lictrain.checkpoint.tracking import rank_best, scan_directory
from lictrain.errors import CheckpointError

log = logging.getLogger(__name__)

#: ``RUN:best`` / ``RUN:latest`` pick a run folder's checkpoint explicitly
SELECTORS = ("best", "latest")


def resolve_weights(path: str | Path) -> Path:
    """The checkpoint file whose weights ``path`` means.

    A file is itself. A run folder means its **best** checkpoint (ranked by the run's
    ``--best-metric``), or its latest when no epoch was ranked (none finished with a finite
    value). ``RUN:best`` and ``RUN:latest`` choose explicitly (``--resume`` always continues
    from the latest).

    Raises:
        CheckpointError: the path does not exist, the folder holds no checkpoint, or ``RUN:best``
            of a run with no ranked checkpoint.
    """
    text = str(path)
    p, selector = Path(text).expanduser(), None
    if not p.exists() and ":" in text:
        head, _, tail = text.rpartition(":")
        if tail in SELECTORS and Path(head).expanduser().is_dir():
            p, selector = Path(head).expanduser(), tail
    if not p.is_dir() or selector == "latest":
        return resolve_checkpoint(p)
    records, tracking = scan_directory(p, quiet=True)
    metric = tracking.get("metric_name")
    if not isinstance(metric, str):  # no tracking file: the metric the checkpoints recorded
        names = [r.metric_name for r in records.values() if r.metric_name]
        metric = max(set(names), key=names.count) if names else "loss"
    best = rank_best(records, metric, bool(tracking.get("higher_is_better", False)))
    if best:
        log.info("%s: its best checkpoint by %s, %s (%s:latest for the latest)", p, metric, best[0].name, p)
        return p / best[0].name
    if selector == "best":
        raise CheckpointError(f"{p} holds no ranked best checkpoint (no tested epoch with a finite {metric}); use "
                              f"{p}:latest")
    return resolve_checkpoint(p)

__all__ = ["FOREIGN_KEYS", "Weights", "check_resumable", "load_weights", "model_state_of", "read_weights"]

#: where training scripts other than lictrain keep the model's state dict (CompressAI's
#: train.py writes ``state_dict``; CompressAI's loaders also accept the others)
FOREIGN_KEYS = ("state_dict", "model_state_dict", "network", "model")


@dataclass
class Weights:
    """A state dict and what is known about it.

    ``origin``: ``lictrain`` (a lictrain checkpoint), ``safetensors``, ``compressai`` (a
    foreign training checkpoint), ``hpcm-official`` (converted), or ``state_dict`` (bare).
    ``model``/``quality``: the architecture when the file records or implies it.
    """

    state: dict[str, Any]
    file: Path
    origin: str
    model: str | None = None
    quality: int | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)  # the lictrain checkpoint dict, else {}


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    """Drop DataParallel/DDP's ``module.`` prefix when every key has it."""
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def model_state_of(ckpt: dict[str, Any], source: Path, accepted: str) -> dict[str, Any]:
    """The model's state dict in a loaded checkpoint: lictrain's ``model_state``, a foreign
    layout (:data:`FOREIGN_KEYS`), or the dict itself when it is a bare state dict.

    Args:
        ckpt: what :func:`load_checkpoint` returned.
        source: the file it came from (for messages).
        accepted: what the caller accepts, for the error message ("a lictrain checkpoint or ...").

    Raises:
        CheckpointError: no state dict found.
    """
    if "model_state" in ckpt:
        state = ckpt["model_state"]
        if not isinstance(state, dict):
            raise CheckpointError(f"'model_state' in {source} is a {type(state).__name__}, not a state dict")
        return state
    for key in FOREIGN_KEYS:
        if _is_state_dict(ckpt.get(key)):
            return _strip_module(ckpt[key])
    if _is_state_dict(ckpt):
        return _strip_module(ckpt)  # a bare state_dict saved with torch.save
    raise CheckpointError(f"{source} holds no model weights ('model_state', 'state_dict', 'network' or "
                          f"'model_state_dict', or a bare state dict); pass {accepted}")


def _official(state: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    try:
        from lictrain.models.hpcm.official import convert_official_hpcm, detect_official_hpcm
    except ImportError:  # pragma: no cover - the converter ships with the package
        return None
    if detect_official_hpcm(state) is None:
        return None
    return convert_official_hpcm(state)


def load_weights(path: str | Path) -> Weights:
    """Read the weights at ``path`` on the CPU.

    ``path``: a lictrain checkpoint, a run directory (its best checkpoint: :func:`resolve_weights`;
    ``RUN:latest`` for its latest), a foreign training
    checkpoint (CompressAI's layouts), an official HPCM checkpoint, a bare ``state_dict`` file,
    or a ``.safetensors`` file (its metadata may name the model).

    Raises:
        CheckpointError: missing, unreadable, unsafe file, or no weights in it.
    """
    if Path(path).expanduser().suffix == ".safetensors":
        return _load_safetensors(Path(path).expanduser())
    file = resolve_weights(path)
    ckpt = load_checkpoint(file, map_location="cpu")
    state = model_state_of(ckpt, file, "a lictrain checkpoint, a CompressAI checkpoint, a state_dict or a "
                                       ".safetensors file")
    if "model_state" in ckpt:
        config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
        quality = config.get("quality")
        return Weights(state, file, "lictrain", config.get("model"), int(quality) if isinstance(quality, int) else None,
                       ckpt)
    converted = _official(state)
    if converted is not None:
        name, ours = converted
        return Weights(ours, file, "hpcm-official", name, 1)
    origin = "compressai" if any(_is_state_dict(ckpt.get(k)) for k in FOREIGN_KEYS) else "state_dict"
    return Weights(state, file, origin)


def _load_safetensors(path: Path) -> Weights:
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; pass an existing .safetensors file")
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); export it again with lictrain export") from exc
    quality = meta.get("quality")
    return Weights(state, path, "safetensors", meta.get("model"),
                   int(quality) if quality and quality.isdigit() else None)


def read_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """``(state_dict, checkpoint dict, file read)`` on the CPU (see :func:`load_weights`).

    The checkpoint dict is lictrain's own; for other files it holds only a ``config`` with the
    model and quality when the file implies them (an official HPCM release, a safetensors file
    exported by lictrain), else it is empty.

    Raises:
        CheckpointError: missing, unreadable, unsafe file, or no weights in it.
    """
    weights = load_weights(path)
    if weights.checkpoint:
        return weights.state, weights.checkpoint, weights.file
    implied = {"config": {"model": weights.model, "quality": weights.quality}} if weights.model else {}
    return weights.state, implied, weights.file


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise unless ``ckpt`` is a lictrain training checkpoint that ``--resume`` can continue.

    Raises:
        CheckpointError: a weights-only file (lictrain best checkpoint, CompressAI, official
            HPCM, bare state dict), naming ``--pretrained`` as the way to start from it.
    """
    meta = ckpt.get("lictrain") if isinstance(ckpt.get("lictrain"), dict) else {}
    if meta.get("kind") == "weights":
        raise CheckpointError(f"{path} holds weights only (a best checkpoint); resume from the run directory or its "
                              f"latest checkpoint, or fine-tune from it with --pretrained {path}")
    needed = ("model_state", "optimizer_state", "epoch")
    if not all(k in ckpt for k in needed):
        kind = ("a CompressAI training checkpoint" if any(k in ckpt for k in FOREIGN_KEYS)
                else "not a lictrain training checkpoint")
        raise CheckpointError(f"{path} is {kind}: --resume continues lictrain runs only; start from its weights "
                              f"with --pretrained {path}")
