"""An event with a large payload and two handlers, for the test of the worker's log lines' length.

Workers import this module through ``EVENTBUS_HANDLERS=tests.faults.bulky_handlers:HANDLERS``.
``BulkyFailsOnce`` raises on its first attempt (Dramatiq logs "Failed to process message ...
with unhandled exception." and "Retrying message ..."), then records success in the shared
test Redis; ``BulkyTooOld`` has a max_age no message meets, so Dramatiq's AgeLimit skips it
("Message ... was skipped.") and it is dead-lettered.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

from dramatiq_eventbus import Handler

from .handlers import counter_key, records


@dataclass(frozen=True)
class Bulky:
    run: str
    text: str


class BulkyFailsOnce(Handler):
    actor_options: ClassVar[dict[str, Any]] = {"max_retries": 3, "min_backoff": 50, "max_backoff": 200}

    def handle_event(self, event: Bulky) -> None:
        attempt = records().hincrby(counter_key(event.run, "started"), type(self).__name__, 1)
        if attempt == 1:
            raise RuntimeError(f"the first attempt fails on purpose (pid {os.getpid()})")
        records().hincrby(counter_key(event.run, "finished"), type(self).__name__, 1)


class BulkyTooOld(Handler):
    # One millisecond: a message is always older than that when a worker starts it.
    actor_options: ClassVar[dict[str, Any]] = {"max_age": 1, "max_retries": 0}

    def handle_event(self, event: Bulky) -> None:
        records().hincrby(counter_key(event.run, "finished"), type(self).__name__, 1)


HANDLERS: dict[type, list[type]] = {Bulky: [BulkyFailsOnce, BulkyTooOld]}
