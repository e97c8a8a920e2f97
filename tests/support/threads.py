"""Running threads so that they interleave as much as they can."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable


def run_interleaved(calls: list[Callable[[], object]]) -> None:
    """Run each call in a thread of its own, all at once, switching between threads every
    microsecond (Python's default: every 5 ms), so that a race between them shows."""
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=call) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switching)
