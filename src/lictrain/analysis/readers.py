"""Run readers: W&B offline runs, W&B synced runs and lictrain ``run.json``, offline and fast.

Three sources describe a training run, and a results folder may hold any mix of them:

* **W&B offline runs** -- ``offline-run-<time>-<id>/run-<id>.wandb``. The run's config, history,
  summary and exit code live only in this binary transaction log: a LevelDB-style log
  (7-byte file header ``:W&B`` + magic ``0xBEE1`` + version ``0``; 32 KiB blocks of records, each
  ``crc32 | length | type`` then the payload, a record split across blocks as FIRST/MIDDLE/LAST
  chunks; the CRC is IEEE CRC-32 seeded with the chunk-type byte). Each payload is one
  ``wandb.proto.wandb_internal_pb2.Record`` -- wandb's own protobuf definition, which we use
  to decode it. (wandb <= 0.22 shipped a Python reader, ``wandb.sdk.internal.datastore``;
  newer versions moved it into the Go ``wandb-core`` binary, so :func:`iter_wandb_log` reads the
  framing here and leaves every field to wandb's protobuf classes.)
* **W&B synced runs** -- ``run-<time>-<id>/files/config.yaml`` (each key wrapped as
  ``{value: ...}``) and ``files/wandb-summary.json``.
* **lictrain runs** -- ``run.json`` (config, status, summary, W&B run id) next to
  ``metrics.jsonl``.

:func:`scan_runs` walks a folder once, reads every source, and merges what belongs to one run
into one :class:`RunData`: W&B runs sharing a run id (a resumed offline run writes a new
``offline-run-*`` folder with the same id) are folded in time order, and a lictrain run
directory's ``run.json`` is merged with its own W&B run -- ``run.json`` wins, W&B fills gaps.
W&B's ``latest-run`` symlink is never followed, so no run is counted twice.

Layout: :mod:`lictrain.analysis.wandb_log` reads and writes the ``.wandb`` framing,
:mod:`lictrain.analysis.wandb_offline` decodes offline runs, :mod:`lictrain.analysis.wandb_synced`
reads synced folders and :mod:`lictrain.analysis.run_data` holds :class:`RunData`; this module
finds the runs, reads ``run.json`` and merges, and re-exports the others' names.

Speed: only the records that matter (run, config, summary, exit) are decoded, located by
peeking at each record's field tags; history rows are skipped unless asked for. Summary values
stay raw bytes until the last update of each key is known. Many files are read by forked
worker processes (the work is CPU-bound Python, which threads would serialise).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# The readers of each source live in their own modules; their names are re-exported here so that
# ``from lictrain.analysis.readers import ...`` keeps working.
from lictrain.analysis.run_data import (  # noqa: F401 (re-exported)
    RUN_DIR_RE, CorruptRunError, PartialRun, RunData, clean_summary, flatten, missing)
from lictrain.analysis.wandb_log import (  # noqa: F401 (re-exported)
    BLOCK_SIZE, CHUNK, CONFIG, EXIT, FIRST, FULL, HEADER, HEADER_IDENT, HEADER_MAGIC, HEADER_VERSION, HISTORY, LAST,
    MIDDLE, RUN, SUMMARY, encode_wandb_log, iter_wandb_log, record_type, split_log)
from lictrain.analysis.wandb_offline import TAIL_RECORDS, proto, read_wandb_offline, wandb_state  # noqa: F401
from lictrain.analysis.wandb_synced import read_wandb_synced
from lictrain.errors import DataError
from lictrain.tracking.records import effective_status, is_step_row, run_completed

__all__ = [
    "RunData", "CorruptRunError", "iter_wandb_log", "encode_wandb_log", "read_wandb_offline",
    "read_wandb_synced", "read_lictrain_run", "scan_runs", "flatten",
]

log = logging.getLogger(__name__)

#: run.json status -> row state
STATE_OF_STATUS = {"finished": "finished", "failed": "failed", "running": "running",
                   "interrupted": "stopped", "stopped": "stopped", "crashed": "failed"}


def read_lictrain_run(run_dir: str | os.PathLike[str], history: bool = False) -> RunData:
    """Read a lictrain run directory's ``run.json`` (and ``metrics.jsonl`` when ``history``).

    ``lmbda`` becomes ``lambda`` (the W&B name). A ``running`` run that no live process holds
    (:func:`~lictrain.tracking.records.effective_status`) is reported as ``failed`` (status
    ``crashed``).

    Raises:
        CorruptRunError: For unreadable JSON.
    """
    run_dir = Path(run_dir)
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptRunError(f"{run_dir / 'run.json'}: unreadable ({exc})") from exc
    if not isinstance(record, dict):
        raise CorruptRunError(f"{run_dir / 'run.json'}: not a JSON object")
    for key in ("config", "summary"):
        if not isinstance(record.get(key) or {}, dict):
            raise CorruptRunError(f"{run_dir / 'run.json'}: '{key}' is not a JSON object")
    config = dict(record.get("config") or {})
    if "lmbda" in config:
        config["lambda"] = config.pop("lmbda")
    status = effective_status(run_dir, record)
    rows = None
    if history:
        path = run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        rows = [row for row in rows if not is_step_row(row)]  # --log-every rows: not epochs
    state = STATE_OF_STATUS.get(status, "failed")
    if run_completed(status, record.get("summary")):
        state = "finished"  # also a run --early-stop ended: complete, unlike a pruned or interrupted one
    return RunData(run_id=record.get("wandb_run_id"), path=run_dir, source="run.json", config=flatten(config),
                   summary={k: v for k, v in flatten(record.get("summary") or {}).items()},
                   state=state, status=status, name=run_dir.name,
                   history=rows, started=record.get("started"))


# -- the folder walk ---------------------------------------------------------------------------
@dataclass
class _Found:
    lictrain: list[Path] = field(default_factory=list)
    offline: list[str] = field(default_factory=list)  # .wandb files
    synced: list[str] = field(default_factory=list)  # run dirs with files/ but no .wandb


def _walk(root: Path) -> _Found:
    """Find run files below ``root`` without following links or entering W&B run folders twice."""
    found = _Found()
    stack = [str(root)]
    while stack:
        top = stack.pop()
        try:
            entries = list(os.scandir(top))
        except OSError as exc:
            log.warning("cannot read %s (%s); skipped", top, exc.strerror)
            continue
        names = {e.name for e in entries}
        base = os.path.basename(top)
        match = RUN_DIR_RE.match(base)
        if match:  # a W&B run folder: its .wandb log and/or files/, nothing deeper
            log_name = f"run-{match.group(2)}.wandb"
            if log_name in names:
                found.offline.append(os.path.join(top, log_name))
            elif "files" in names and (os.path.isfile(os.path.join(top, "files", "config.yaml"))
                                       or os.path.isfile(os.path.join(top, "files", "wandb-summary.json"))):
                found.synced.append(top)
            continue
        if "run.json" in names:
            found.lictrain.append(Path(top))
        for entry in entries:
            if entry.name.startswith(".") or entry.name in ("__pycache__", "files", "logs", "tmp"):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            except OSError:
                continue
    return found


def scan_runs(root: str | os.PathLike[str], history: bool = False, workers: int | None = None,
              ) -> tuple[list[RunData], list[str]]:
    """Read every run below ``root``; return (runs, warnings).

    Each run appears once: W&B folders with the same run id are folded (later ones win), and a
    lictrain run directory's ``run.json`` is merged with the W&B run it names. W&B runs inside a
    lictrain run directory that ``run.json`` does not name are earlier, discarded attempts of
    that directory and are dropped. Unreadable files become warnings naming them.

    Raises:
        DataError: If ``root`` does not exist or is not a folder.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"results folder {root} does not exist; pass the --out folder of a sweep or a runs folder")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass the folder that holds the runs")
    found = _walk(root)
    jobs = ([("offline", p) for p in found.offline] + [("synced", p) for p in found.synced]
            + [("lictrain", p) for p in found.lictrain])
    if workers is None:  # processes pay off only with spare cores (forking and pickling cost ~0.1 s)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = 1 if cpus <= 2 else min(cpus, 8)
    results: list[tuple[RunData | None, str | None]] = []
    if workers > 1 and len(jobs) >= PARALLEL_MIN_RUNS and _can_fork():
        proto()  # imported before the fork, so every worker has it for free
        chunks = [jobs[i::workers] for i in range(workers)]
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for part in pool.map(_read_jobs, chunks, [history] * workers):
                    results.extend(part)
        except (OSError, RuntimeError) as exc:  # no processes here (a sandbox): read in this one
            log.debug("parallel read failed (%s); reading serially", exc)
            results = _read_jobs(jobs, history)
    else:
        results = _read_jobs(jobs, history)
    runs = [run for run, _ in results if run is not None]
    warnings = [w for _, w in results if w]
    wandb_runs = [r for r in runs if r.source != "run.json"]
    ours = [r for r in runs if r.source == "run.json"]
    return _merge(wandb_runs, ours), warnings


#: below this many run files, one process reads them all (forking costs more than it saves)
PARALLEL_MIN_RUNS = 200


def _can_fork() -> bool:
    """Fork only where it is the platform's cheap default and no other thread could hold a lock."""
    return hasattr(os, "fork") and os.name == "posix" and threading.active_count() == 1


def _read_jobs(jobs: list[tuple[str, Path]], history: bool) -> list[tuple[RunData | None, str | None]]:
    """Read each (kind, path) job; a problem becomes a warning line instead of an exception."""
    out: list[tuple[RunData | None, str | None]] = []
    for kind, path in jobs:
        try:
            if kind == "offline":
                out.append((read_wandb_offline(path, history=history), None))
            elif kind == "synced":
                out.append((read_wandb_synced(path), None))
            else:
                out.append((read_lictrain_run(path, history=history), None))
        except PartialRun as partial:
            out.append((partial.run, f"{partial.damage}; kept the records before it"))
        except CorruptRunError as exc:
            out.append((None, f"{exc}; skipped"))
    return out


def _merge(wandb_runs: list[RunData], ours: list[RunData]) -> list[RunData]:
    by_id: dict[str, RunData] = {}
    anonymous: list[RunData] = []
    # Fold W&B folders of one run id in time order (a resumed run continues in a new folder).
    for run in sorted(wandb_runs, key=lambda r: (r.started or "", str(r.path))):
        if not run.run_id:
            anonymous.append(run)
            continue
        if run.run_id in by_id:
            earlier = by_id[run.run_id]
            merged = RunData(run_id=run.run_id, path=run.path, source=run.source,
                             config={**earlier.config, **run.config}, summary={**earlier.summary, **run.summary},
                             state=run.state, status=run.status, name=run.name or earlier.name,
                             exit_code=run.exit_code, started=earlier.started,
                             history=(earlier.history or []) + (run.history or [])
                             if earlier.history is not None or run.history is not None else None)
            if run.source != earlier.source:  # offline log + files/ of the same run
                merged.source = "+".join(dict.fromkeys(earlier.source.split("+") + run.source.split("+")))
            by_id[run.run_id] = merged
        else:
            by_id[run.run_id] = run
    rows: list[RunData] = []
    lictrain_dirs = {str(r.path) for r in ours}
    for run in ours:
        mine = by_id.pop(run.run_id, None) if run.run_id else None
        if mine is not None:
            run.fill_from(mine)
        rows.append(run)
    for run in list(by_id.values()) + anonymous:
        owner = _owner(str(run.path), lictrain_dirs) if lictrain_dirs else None
        if owner is not None:
            log.debug("dropping W&B run %s in %s: run.json names another W&B run", run.run_id, owner)
            continue
        rows.append(run)
    return rows


def _owner(path: str, dirs: set[str]) -> str | None:
    """The folder of ``dirs`` that contains ``path`` (string walk up: no pathlib per run)."""
    parent = os.path.dirname(path)
    while parent and parent != path:
        if parent in dirs:
            return parent
        path, parent = parent, os.path.dirname(parent)
    return None
