"""Data-parallel glue for ``torchrun`` (PyTorch DDP): NCCL on GPUs, gloo on CPU.

``torchrun --nproc_per_node=K -m lictrain train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them. Without them everything here is a no-op
for one process. The global batch is ``--batch-size`` x world size (each rank draws
``--batch-size`` crops per step), and an epoch of ``--epoch-size`` crops is split across ranks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun set up (if any); return the info and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # torchrun's store outlives a restart (--max-restarts): without a prefix per attempt the
        # restarted ranks may read the dead ranks' addresses and fail to connect
        store, rank, world_size = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend=backend, store=dist.PrefixStore(f"lictrain/attempt{attempt}/", store),
                                rank=rank, world_size=world_size)
    info = DistInfo(rank, world_size, local_rank)
    if not info.is_main:
        # one voice on the terminal: other ranks report warnings and errors only
        logging.getLogger("lictrain").setLevel(logging.WARNING)
    log.info("DDP: %d processes (%s), global batch = per-rank batch x %d", world_size, dist.get_backend(), world_size)
    return info, device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over ranks (a detached copy; identity for one process)."""
    if not info.enabled:
        return values.detach()
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def all_reduce_max(value: int, info: DistInfo, device: torch.device) -> int:
    """The largest ``value`` over ranks (a one-element all-reduce: cheap enough for every step)."""
    if not info.enabled:
        return value
    # NCCL reduces only CUDA tensors; gloo only CPU ones
    out = torch.tensor([value], dtype=torch.int32, device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return int(out.item())


def globally_valued(local: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """``local`` with the *value* of its mean over ranks but the *gradient* of the local term.

    The balanced optimiser reads task-loss values (for its weights and logit update) and
    back-propagates through them. Giving every rank the global mean keeps the logits identical
    everywhere, while DDP's gradient averaging turns the local gradients into the global one.
    """
    if not info.enabled:
        return local
    return local + (all_reduce_mean(local, info) - local.detach())


def gather_objects(obj: object, info: DistInfo) -> list[object]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: list[object] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def fingerprint(model: torch.nn.Module, extra: torch.Tensor | None = None) -> tuple[float, float]:
    """A cheap checksum of the parameters (sum and sum of squares, float64) and ``extra``."""
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for tensor in [*model.parameters(), *([extra] if extra is not None else [])]:
            t = tensor.detach().to("cpu", torch.float64)
            total += torch.stack([t.sum(), (t * t).sum()])
    return float(total[0]), float(total[1])


def check_in_sync(model: torch.nn.Module, info: DistInfo, extra: torch.Tensor | None = None) -> None:
    """Raise if parameters (or ``extra``, e.g. the balanced logits) differ between ranks."""
    if not info.enabled:
        return
    prints = gather_objects(fingerprint(model, extra), info)
    if any(p != prints[0] for p in prints):
        raise RuntimeError(f"DDP ranks drifted apart (parameter checksums {prints}); this is a lictrain bug, please report it")
