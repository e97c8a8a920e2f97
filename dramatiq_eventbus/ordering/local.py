"""Order within one worker process: the fallback when the bus has no Redis for lanes."""

from __future__ import annotations

import threading
from collections import defaultdict, deque


class LocalLanes:
    """One message at a time per lane in this process, in the order they arrived here.

    This is the reference's OSS mode (``local_limit: 1``): two processes, or two
    machines, may still handle one key at once, and a retry goes to the back of the
    queue. A message waiting for its lane holds its worker thread.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._waiting: defaultdict[str, deque[str]] = defaultdict(deque)

    def enter(self, lane: str, message_id: str) -> None:
        with self._changed:
            queue = self._waiting[lane]
            queue.append(message_id)
            self._changed.wait_for(lambda: queue[0] == message_id)

    def leave(self, lane: str, message_id: str) -> None:
        with self._changed:
            queue = self._waiting[lane]
            if queue and queue[0] == message_id:
                queue.popleft()
            if not queue:
                del self._waiting[lane]
            self._changed.notify_all()
