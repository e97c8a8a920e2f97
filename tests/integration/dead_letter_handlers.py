"""Events and handlers for the dead-letter tests' ``dramatiq`` worker.

A handler fails while its event's "broken" flag is set in the records' Redis, so that a test
dead-letters an event, fixes the handler by deleting the flag, and replays it. The keyed
handler also waits while its event's "gate" is set, to hold its lane's head in place.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dramatiq_eventbus import Handler
from tests.integration import handlers
from tests.integration.handlers import RECORD_PREFIX_VAR, RECORD_URL_VAR, record

#: How long a gated handler waits at most for its gate to open.
GATE_SECONDS = 20.0


def broken_key(prefix: str, tag: str) -> str:
    # Beside the records' lists, not among them: the integration tests read every "<prefix>:*" key as one.
    return f"{prefix}-flag:broken:{tag}"


def gate_key(prefix: str, tag: str) -> str:
    return f"{prefix}-flag:gate:{tag}"


def _is_set(key: str) -> bool:
    return bool(handlers._client(os.environ[RECORD_URL_VAR]).exists(key))


def _prefix() -> str:
    return os.environ[RECORD_PREFIX_VAR]


@dataclass(frozen=True)
class Breakable:
    tag: str


class Fragile(Handler):
    """Fails while the event's flag is set: twice (max_retries=1), so that even RabbitMQ's dead
    letter carries a failure (that of the attempt before the last)."""

    actor_options = {"max_retries": 1}

    def handle_event(self, event: Breakable) -> None:
        if _is_set(broken_key(_prefix(), event.tag)):
            raise RuntimeError(f"broken {event.tag}")
        record(self, event.tag)


@dataclass(frozen=True)
class Keyed:
    tag: str
    key: str
    seq: int

    def partition_key(self) -> str:
        return self.key

    @property
    def name(self) -> str:
        return f"{self.tag}-{self.seq}"


class KeyedHandler(Handler):
    """Fails at once while the event's flag is set; waits while its gate is set (saying so first)."""

    actor_options = {"max_retries": 0}

    def handle_event(self, event: Keyed) -> None:
        if _is_set(broken_key(_prefix(), event.name)):
            raise RuntimeError(f"broken {event.name}")
        if _is_set(gate_key(_prefix(), event.name)):
            record(self, f"{event.tag}-waiting", seq=event.seq)
            deadline = time.monotonic() + GATE_SECONDS
            while _is_set(gate_key(_prefix(), event.name)) and time.monotonic() < deadline:
                time.sleep(0.05)
        record(self, event.tag, seq=event.seq)


HANDLERS = {
    Breakable: [Fragile],
    Keyed: [KeyedHandler],
    handlers.Flush: [handlers.FlushHandler],
}
