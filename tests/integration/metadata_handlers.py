"""Handlers that record their event's metadata, for the metadata tests' ``dramatiq`` worker.

The worker imports this module through ``EVENTBUS_HANDLERS=tests.integration.metadata_handlers:HANDLERS``
(see tests/integration/test_metadata.py). A chain of three hops: ``Started`` (two handlers,
one of which publishes ``Continued``), ``Continued`` (an async handler, which publishes the
partitioned ``Ended``) and ``Ended``. Every handler records ``current_context()`` as one JSON
line under the event's tag; ``Retried`` fails its first two attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq_eventbus
from dramatiq_eventbus import Handler, current_context
from tests.integration.async_handlers import attempts
from tests.integration.handlers import Flush, FlushHandler, record


def record_context(handler: Handler, tag: str, **fields: Any) -> None:
    context = current_context()
    assert context is not None, "a handler runs with its event's context"
    record(
        handler,
        tag,
        event_id=context.event_id,
        correlation_id=context.correlation_id,
        causation_id=context.causation_id,
        published_at=context.published_at.isoformat(),
        attempt=context.attempt,
        context_handler=context.handler,
        partition_key=context.partition_key,
        message_id=context.message_id,
        **fields,
    )


@dataclass(frozen=True)
class Started:
    tag: str


@dataclass(frozen=True)
class Continued:
    tag: str


@dataclass(frozen=True)
class Ended:
    tag: str

    def partition_key(self) -> str:
        return self.tag


@dataclass(frozen=True)
class Retried:
    tag: str


class StartRecorder(Handler):
    def handle_event(self, event: Started) -> None:
        record_context(self, event.tag, hop=1)


class StartPublisher(Handler):
    def handle_event(self, event: Started) -> None:
        record_context(self, event.tag, hop=1)
        dramatiq_eventbus.publish(Continued(event.tag))


class ContinuePublisher(Handler):
    async def handle_event(self, event: Continued) -> None:
        record_context(self, event.tag, hop=2)
        dramatiq_eventbus.publish(Ended(event.tag))


class EndRecorder(Handler):
    def handle_event(self, event: Ended) -> None:
        record_context(self, event.tag, hop=3)


class FailsTwice(Handler):
    def handle_event(self, event: Retried) -> None:
        record_context(self, event.tag)
        if attempts(event.tag) < 3:
            raise RuntimeError("not yet")


HANDLERS = {
    Started: [StartRecorder, StartPublisher],
    Continued: [ContinuePublisher],
    Ended: [EndRecorder],
    Retried: [FailsTwice],
    Flush: [FlushHandler],
}
