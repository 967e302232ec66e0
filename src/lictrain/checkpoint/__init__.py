"""lictrain.checkpoint: crash-safe retention of the last N + best M checkpoints.

See ``docs/checkpoints.md``.
"""

from lictrain.checkpoint.export import export_safetensors
from lictrain.checkpoint.integrity import (
    CorruptCheckpointError,
    nonfinite_tensors,
    verify_checkpoint_file,
)
from lictrain.checkpoint.lock import LOCK_NAME, RunDirLock
from lictrain.checkpoint.manager import (
    TRACKING_FILE,
    CheckpointManager,
    checkpoint_filename,
    load_checkpoint,
    resolve_checkpoint,
)
from lictrain.checkpoint.resume import load_latest_valid
from lictrain.checkpoint.rng import capture_rng_state, restore_rng_state

__all__ = [
    "LOCK_NAME",
    "TRACKING_FILE",
    "CheckpointManager",
    "CorruptCheckpointError",
    "RunDirLock",
    "capture_rng_state",
    "checkpoint_filename",
    "export_safetensors",
    "load_checkpoint",
    "load_latest_valid",
    "nonfinite_tensors",
    "resolve_checkpoint",
    "restore_rng_state",
    "verify_checkpoint_file",
]
