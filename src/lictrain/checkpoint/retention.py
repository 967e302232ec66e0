"""Retention: which checkpoints of a run directory stay after a save (last N plus best M).

The rule, the tracking file's text for it, and shrinking best checkpoints that dropped out of
the last N to weights only. Pure bookkeeping over :class:`~lictrain.checkpoint.tracking.Record`
objects: the manager owns the records, the lock and the write order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lictrain.checkpoint.io import atomic_write, load_checkpoint_file
from lictrain.checkpoint.snapshot import weights_only_payload
from lictrain.checkpoint.tracking import KIND_WEIGHTS, Record, rank_best, select_last, tracking_text
from lictrain.checkpoint.writer import save_payload
from lictrain.errors import CheckpointError

__all__ = ["RetentionPolicy", "shrink_to_weights"]

# The manager's logger: records keep the name they had before the split.
log = logging.getLogger("lictrain.checkpoint.manager")


@dataclass(frozen=True)
class RetentionPolicy:
    """Keep the last ``keep_last_n`` saved and the best ``keep_best`` by ``metric``."""

    keep_last_n: int
    keep_best: int
    metric: str
    higher_is_better: bool

    def last(self, records: Mapping[str, Record]) -> list[Record]:
        """The kept recent records, oldest first."""
        return select_last(records, self.keep_last_n)

    def best(self, records: Mapping[str, Record]) -> list[Record]:
        """The kept best records, best first."""
        return rank_best(records, self.metric, self.higher_is_better)[: self.keep_best]

    def split(self, records: Mapping[str, Record]) -> tuple[list[Record], list[Record]]:
        """``(kept, dropped)`` records: kept is the union of the last N and the best M."""
        keep_names = {r.name for r in self.last(records)}
        keep_names.update(r.name for r in self.best(records))
        keep = [r for r in records.values() if r.name in keep_names]
        drop = [r for r in records.values() if r.name not in keep_names]
        return keep, drop

    def tracking_text(self, records: Mapping[str, Record], next_seq: int) -> str:
        """The tracking file's JSON text for ``records`` under this policy."""
        return tracking_text(
            records,
            self.last(records),
            self.best(records),
            metric=self.metric,
            higher_is_better=self.higher_is_better,
            keep_last_n=self.keep_last_n,
            keep_best=self.keep_best,
            next_seq=next_seq,
        )


def shrink_to_weights(save_dir: Path, record: Record, *, fsync: bool) -> None:
    """Rewrite ``record``'s file as weights only (model state, tensor-free metadata).

    A failure is logged and leaves the full checkpoint in place: a best checkpoint too large
    beats a lost one.
    """
    path = save_dir / record.name
    try:
        ckpt = load_checkpoint_file(path, mmap=True)
        slim = weights_only_payload(ckpt)
        atomic_write(path, lambda f: save_payload(slim, f), fsync=fsync)
        del ckpt, slim
    except (CheckpointError, OSError) as exc:
        log.warning("could not shrink best checkpoint %s to weights only: %s", path, exc)
        return
    record.kind = KIND_WEIGHTS
    record.stamp(path)
