"""A record of what in-process handlers saw, for tests that run them in the test process."""

from __future__ import annotations

import threading
from typing import Any


class Journal:
    """What handlers saw, in order, with the thread that ran them; shared by worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, Any, int]] = []

    def add(self, who: str, what: Any) -> None:
        with self._lock:
            self.entries.append((who, what, threading.get_ident()))

    def of(self, who: str) -> list[Any]:
        with self._lock:
            return [what for name, what, _ in self.entries if name == who]

    def threads(self) -> set[int]:
        with self._lock:
            return {thread for _, _, thread in self.entries}

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()
