"""``--batch-size auto``: the largest training batch that fits the GPU, measured with real steps.

A throwaway copy of the run (same model, strategy, crop size, precision) takes one real
training step per candidate size on random crops: doubling from :data:`START` until a step runs
out of memory (or :data:`LIMIT`), then bisecting between the last size that fitted and the first
that did not. The run trains at :data:`MARGIN` of the largest fitting size, which leaves room for
the allocator's fragmentation over a long run and for the test pass. On the CPU there is no
device memory to measure: the run keeps the default batch and says so.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch

from lictrain.config import TrainConfig
from lictrain.errors import ConfigError
from lictrain.training.budget import synchronize
from lictrain.training.build import build_parts
from lictrain.training.distributed import DistInfo, gather_objects

log = logging.getLogger(__name__)

START = 8
LIMIT = 1024
MARGIN = 0.9
#: the batch of ``--batch-size auto`` on the CPU (the default batch)
CPU_BATCH = TrainConfig.batch_size


@dataclass(frozen=True)
class AutoBatch:
    """What ``--batch-size auto`` measured and chose (recorded in run.json)."""

    batch_size: int
    largest_fit: int | None
    tried: list[int]
    margin: float
    device: str
    total_memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (its own class, or the older RuntimeError message)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def search_batch_size(fits: Callable[[int], bool], start: int = START, limit: int = LIMIT) -> tuple[int | None, list[int]]:
    """The largest ``n`` in ``[1, limit]`` with ``fits(n)``, assuming fitting is monotone.

    Returns:
        (largest fitting size or ``None`` when not even 1 fits, the sizes tried in order).
    """
    tried: list[int] = []

    def check(n: int) -> bool:
        tried.append(n)
        return fits(n)

    low, high = 0, None  # low fits (0: nothing known), high does not
    n = min(start, limit)
    while True:  # grow (or shrink, when the start does not fit) until the boundary is bracketed
        if check(n):
            low = n
            if n >= limit:
                return n, tried
            n = min(n * 2, limit)
        else:
            high = n
            break
    if low == 0:  # the start did not fit: bisect below it
        lo, hi = 0, high
    else:
        lo, hi = low, high
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid):
            lo = mid
        else:
            hi = mid
    return (lo or None), tried


def auto_batch_size(cfg: TrainConfig, device: torch.device, dist: Any, alignment: int) -> AutoBatch:
    """Measure and choose the batch of ``--batch-size auto`` (see the module docstring).

    Under DDP every rank measures and all take the smallest choice.

    Raises:
        ConfigError: not even one crop fits (the message names --patch-size).
    """
    if device.type != "cuda":
        log.warning("--batch-size auto sizes the batch to GPU memory; on the %s it trains at batch %d (pass a "
                    "number to choose)", device.type.upper(), CPU_BATCH)
        return AutoBatch(CPU_BATCH, None, [], MARGIN, device.type)
    largest, tried = _measure(cfg, device, alignment)
    torch.cuda.empty_cache()  # the probe is gone: give its memory back before the run allocates
    if largest is None:
        raise ConfigError(f"not even one {cfg.patch_size}x{cfg.patch_size} crop fits in the GPU's memory for "
                          f"{cfg.model}; use a smaller --patch-size or --precision bf16")
    chosen = max(1, math.floor(largest * MARGIN))
    chosen = int(min(gather_objects(chosen, dist)))
    total = torch.cuda.get_device_properties(device).total_memory
    found = AutoBatch(chosen, largest, tried, MARGIN, torch.cuda.get_device_name(device), total)
    log.info("--batch-size auto: %d crops of %d px fit (tried %s); training at %d (%.0f%%)", largest,
             cfg.patch_size, ", ".join(map(str, tried)), chosen, 100 * MARGIN)
    return found


def _measure(cfg: TrainConfig, device: torch.device, alignment: int) -> tuple[int | None, list[int]]:
    """Search with a throwaway copy of the run (freed when this returns)."""
    probe = build_parts(replace(cfg, batch_size=1, epochs=1, pretrained=None), device, DistInfo(), alignment)

    def fits(n: int) -> bool:
        batch = torch.rand(n, 3, cfg.patch_size, cfg.patch_size, device=device)
        try:
            probe.strategy.step(batch)
            synchronize(device)
            return True
        except Exception as exc:  # only out-of-memory means "too large"; anything else is a real error
            if not is_out_of_memory(exc):
                raise
            return False
        finally:
            del batch
            for group in probe.strategy.optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return search_batch_size(fits)
