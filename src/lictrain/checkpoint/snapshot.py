"""Snapshots of the training state: the copy to CPU that ``save_checkpoint`` waits for.

``save_checkpoint`` copies the state to CPU (tensors detached and copied, containers rebuilt)
and hands the write to a background thread, so training blocks only for the copy. To make
the copy fast, :class:`BufferPool` lends the CPU tensors of the previous, already written
checkpoint (pinned for GPU tensors). Values ``torch.load(weights_only=True)`` could not load
back are refused here, before anything is written. :func:`weights_only_payload` strips a
full checkpoint to its model weights and tensor-free metadata.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch

from lictrain.checkpoint.tracking import KIND_WEIGHTS
from lictrain.errors import CheckpointError

_LEAF_TYPES = (str, bytes, int, float, bool, complex, type(None), torch.dtype, torch.device)


# --------------------------------------------------------------------------- snapshots


class BufferPool:
    """CPU tensors of the last written checkpoint, reused by the next snapshot.

    Copying into memory that is already mapped avoids the page faults of fresh allocations,
    which dominate the copy on many machines (several times a plain memcpy). Buffers for GPU
    tensors are pinned, so the device-to-host copies run asynchronously. The pool holds at
    most one checkpoint's worth of tensors; a buffer is handed out only after the write that
    used it finished, and never twice.
    """

    def __init__(self) -> None:
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(t: torch.Tensor, pinned: bool) -> tuple:
        return (t.dtype, tuple(t.shape), pinned)

    def take(self, t: torch.Tensor, pinned: bool) -> torch.Tensor | None:
        with self._lock:
            free = self._free.get(self._key(t, pinned))
            return free.pop() if free else None

    def refill(self, payload: Any) -> None:
        """Offer the tensors of a payload that has been written (replacing the old pool)."""
        fresh: dict[tuple, list[torch.Tensor]] = {}
        stack = [payload]
        while stack:
            obj = stack.pop()
            if isinstance(obj, torch.Tensor):
                if obj.device.type == "cpu" and obj.numel() > 0 and obj._base is None:
                    fresh.setdefault(self._key(obj, obj.is_pinned()), []).append(obj)
            elif isinstance(obj, Mapping):
                stack.extend(obj.values())
            elif isinstance(obj, (list, tuple, set)):
                stack.extend(obj)
        with self._lock:
            self._free = fresh

    def clear(self) -> None:
        with self._lock:
            self._free = {}


class _SnapshotContext:
    def __init__(self, pool: BufferPool | None) -> None:
        self.pool = pool
        self.cuda = False


def _snapshot(obj: Any, where: str, ctx: _SnapshotContext) -> Any:
    """Deep-copy ``obj`` to CPU: tensors detached and copied, containers rebuilt.

    Raises:
        CheckpointError: For a value ``torch.load(weights_only=True)`` could not load back.
    """
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        on_cuda = t.device.type == "cuda"
        if t.device.type != "cpu" and not on_cuda:
            return t.to("cpu")  # other accelerators: a plain synchronous copy
        buf = ctx.pool.take(t, on_cuda) if ctx.pool is not None else None
        if buf is None:
            if not on_cuda:
                return t.clone()
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        buf.copy_(t, non_blocking=on_cuda)
        ctx.cuda = ctx.cuda or on_cuda
        return buf
    if type(obj) in _LEAF_TYPES or isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, Mapping):
        out: dict = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            if type(k) not in (str, int, float, bool, type(None)):
                raise _unsafe(f"{where} key {k!r}", k)
            out[k] = _snapshot(v, f"{where}[{k!r}]", ctx)
        return out
    if type(obj) in (list, tuple):
        items = [_snapshot(v, f"{where}[{i}]", ctx) for i, v in enumerate(obj)]
        return items if type(obj) is list else tuple(items)
    if type(obj) is set:
        return {_snapshot(v, where, ctx) for v in obj}
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy scalar -> python scalar
    raise _unsafe(where, obj)


def _unsafe(where: str, obj: Any) -> CheckpointError:
    t = type(obj)
    hint = (
        "convert it with torch.from_numpy()" if t.__module__ == "numpy"
        else "store tensors, numbers, strings, lists and dicts only (RNG states: "
        "lictrain.checkpoint.capture_rng_state())"
    )
    return CheckpointError(
        f"cannot checkpoint {where}: a {t.__module__}.{t.__qualname__} could not be loaded "
        f"back with weights_only=True; {hint}"
    )


def _has_tensor(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(_has_tensor(v) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return any(_has_tensor(v) for v in obj)
    return False


def weights_only_payload(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """Strip a full checkpoint to what evaluation needs: model weights plus metadata.

    Kept: ``model_state``, ``epoch``, ``metric``, ``metric_value`` and every other entry that
    holds no tensor (config, names, run ids); dropped: ``optimizer_state`` and every other
    entry holding tensors (other optimisers, RNG states, ...).
    """
    out: dict[str, Any] = {}
    for k, v in ckpt.items():
        if k == "model_state" or (k != "optimizer_state" and not _has_tensor(v)):
            out[k] = v
    meta = dict(ckpt.get("lictrain") or {})
    meta["kind"] = KIND_WEIGHTS
    out["lictrain"] = meta
    return out


def snapshot_payload(
    pool: BufferPool | None,
    epoch: int,
    model_state: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None,
    metric: str,
    value: float | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Copy a checkpoint's entries to CPU (see :func:`_snapshot`); waits for GPU copies.

    Raises:
        CheckpointError: For a value ``torch.load(weights_only=True)`` could not load back.
    """
    ctx = _SnapshotContext(pool)
    payload: dict[str, Any] = {
        "epoch": epoch,
        "model_state": _snapshot(model_state, "model_state", ctx),
        "optimizer_state": _snapshot(optimizer_state, "optimizer_state", ctx),
        "metric": metric,
        "metric_value": value,
    }
    for k, v in extra.items():
        payload[k] = _snapshot(v, k, ctx)
    if ctx.cuda:
        torch.cuda.synchronize()
    return payload
