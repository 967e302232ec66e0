"""Capture and restore every random number generator a training run draws from.

The state is packed in *weights-only-safe* form (tensors, ints, floats, strings, lists and
dicts), so it rides inside a checkpoint that ``torch.load(..., weights_only=True)`` accepts:

* ``torch``: the CPU generator (a ``uint8`` tensor);
* ``cuda``: one ``uint8`` tensor per visible GPU, when CUDA is available;
* ``numpy``: numpy's *global* ``MT19937`` state, its 624-word key as an ``int64`` tensor plus
  ``pos``, ``has_gauss`` and ``cached_gaussian``;
* ``python``: :mod:`random`'s state, its 625 words as an ``int64`` tensor plus ``gauss_next``;
* ``generators``: the states of named :class:`torch.Generator` objects you pass in (the one
  that shuffles the data loader, for example), so the data order resumes too.

Example::

    ckpt_extra = {"rng": capture_rng_state(generators={"data": loader_generator})}
    ...
    restore_rng_state(ckpt["rng"], generators={"data": loader_generator})
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from lictrain.errors import CheckpointError

__all__ = ["capture_rng_state", "restore_rng_state"]

log = logging.getLogger(__name__)

_FORMAT = 1


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Snapshot torch (CPU and CUDA), numpy-global and python ``random`` generator states.

    Args:
        generators: Optional named :class:`torch.Generator` objects to include (for example
            the generator a ``DataLoader`` shuffles with).

    Returns:
        A dict of tensors and plain values, loadable with ``weights_only=True``.
    """
    state: dict[str, Any] = {"format": _FORMAT, "torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        state["cuda"] = [s.clone() for s in torch.cuda.get_rng_state_all()]
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state["numpy"] = {
        "bit_generator": str(name),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    version, internal, gauss_next = random.getstate()
    state["python"] = {
        "version": int(version),
        "state": torch.tensor(list(internal), dtype=torch.int64),
        "gauss_next": None if gauss_next is None else float(gauss_next),
    }
    if generators:
        state["generators"] = {str(k): g.get_state().clone() for k, g in generators.items()}
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Put back generator states captured by :func:`capture_rng_state`.

    Parts missing from ``state`` are left alone. CUDA states are restored only when the
    number of visible GPUs matches (a warning is logged otherwise).

    Args:
        state: What :func:`capture_rng_state` returned (possibly after a checkpoint round trip).
        generators: Named :class:`torch.Generator` objects to restore, by the same names used
            at capture; a name absent from ``state`` is warned about and left alone.

    Raises:
        CheckpointError: If ``state`` is not a captured RNG state.
    """
    if not isinstance(state, Mapping) or "torch" not in state:
        raise CheckpointError(
            "the checkpoint's RNG state is not one lictrain.checkpoint.capture_rng_state() "
            "wrote; resume without restoring RNG state or re-save the checkpoint"
        )
    try:
        torch.set_rng_state(_as_byte_tensor(state["torch"]))
        cuda = state.get("cuda")
        if cuda is not None:
            if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
                torch.cuda.set_rng_state_all([_as_byte_tensor(s) for s in cuda])
            else:
                have = torch.cuda.device_count() if torch.cuda.is_available() else 0
                log.warning(
                    "checkpoint holds CUDA RNG states for %d GPU(s) but %d are visible; "
                    "CUDA RNG state not restored", len(cuda), have,
                )
        npst = state.get("numpy")
        if npst is not None:
            keys = _as_int_array(npst["keys"]).astype(np.uint32)
            np.random.set_state(
                (
                    str(npst.get("bit_generator", "MT19937")),
                    keys,
                    int(npst["pos"]),
                    int(npst.get("has_gauss", 0)),
                    float(npst.get("cached_gaussian", 0.0)),
                )
            )
        pyst = state.get("python")
        if pyst is not None:
            internal = tuple(int(v) for v in _as_int_array(pyst["state"]).tolist())
            gauss_next = pyst.get("gauss_next")
            random.setstate(
                (int(pyst["version"]), internal, None if gauss_next is None else float(gauss_next))
            )
    except Exception as exc:  # KeyError, IndexError, ValueError, RuntimeError, ...
        raise CheckpointError(
            f"the checkpoint's RNG state is damaged ({type(exc).__name__}: {exc}); "
            "resume without restoring RNG state or from another checkpoint"
        ) from exc
    if generators:
        saved = state.get("generators") or {}
        for name, gen in generators.items():
            if name in saved:
                gen.set_state(_as_byte_tensor(saved[name]))
            else:
                log.warning("checkpoint holds no RNG state for generator %r; left as is", name)


def _as_byte_tensor(value: Any) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return t.detach().to(device="cpu", dtype=torch.uint8).contiguous()


def _as_int_array(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().astype(np.int64)
    return np.asarray(value, dtype=np.int64)
