"""Test helpers: a mailbox that records published events, modes, assertions, run_event and a stub worker.

With pytest, the plugin is loaded through the ``pytest11`` entry point: a test requests
the ``event_bus`` fixture and calls the helpers below. Without pytest, ``with
recording():`` installs the same mailbox.
"""

from ..errors import HandlerFailed
from .assertions import (
    assert_event_published,
    assert_no_pending_strict_events,
    get_event_bus_mode,
    published_events,
    refute_event_published,
    set_event_bus_mode,
)
from .mailbox import MODES, EventMailbox, Mode, RecordedEvent, current_mailbox, recording
from .run_event import Outcome, run_event
from .stub_worker import StubWorker, stub_worker

__all__ = [
    "MODES",
    "EventMailbox",
    "HandlerFailed",
    "Mode",
    "Outcome",
    "RecordedEvent",
    "StubWorker",
    "assert_event_published",
    "assert_no_pending_strict_events",
    "current_mailbox",
    "get_event_bus_mode",
    "published_events",
    "recording",
    "refute_event_published",
    "run_event",
    "set_event_bus_mode",
    "stub_worker",
]
