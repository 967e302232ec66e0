"""Notes: the list the table functions append their warnings to; each append also goes to a callback."""

from __future__ import annotations

from typing import Callable

__all__ = ["Notes"]


class Notes(list):
    """A list whose appends are also handed to ``warn`` (the analyzer logs and keeps them)."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        super().__init__()
        self._warn = warn

    def append(self, message: str) -> None:  # type: ignore[override]
        super().append(message)
        self._warn(message)
