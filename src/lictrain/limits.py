"""Resource limits applied to everything lictrain reads (images, bitstreams).

An image or ``.lic`` file is untrusted input: a 100-byte header can claim a 20000x20000 image.
Every command checks the pixel count *before* decoding. The limit is
:data:`DEFAULT_MAX_PIXELS` (40 megapixels: an 8K photo is 33 MP); raise it with
``lictrain --max-pixels N ...`` or the ``LICTRAIN_MAX_PIXELS`` environment variable.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_MAX_PIXELS", "max_pixels", "set_max_pixels"]

DEFAULT_MAX_PIXELS = 40_000_000
_override: int | None = None


def max_pixels() -> int:
    """The pixel limit in force: ``--max-pixels``, else ``LICTRAIN_MAX_PIXELS``, else the default."""
    if _override is not None:
        return _override
    env = os.environ.get("LICTRAIN_MAX_PIXELS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else DEFAULT_MAX_PIXELS


def set_max_pixels(value: int | None) -> None:
    """Set (or with ``None`` clear) the process-wide pixel limit."""
    global _override
    if value is not None and value <= 0:
        raise ValueError("the pixel limit must be positive")
    _override = value
