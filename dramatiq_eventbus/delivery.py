"""A delivery: one event routed to one handler, ready for a backend; and a buffer of publish() calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .codecs import JSONValue
from .metadata import EventMetadata
from .registry import HandlerSpec


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message's worth of work: ``handler`` must handle ``event``.

    Parameters:
      handler(HandlerSpec): The interested handler.
      event(object): The event as published.
      payload(JSONValue): The event as the codec encoded it; what a worker decodes.
      partition_key(str | None): The event's partition key.
      queue_name(str): The queue the route chose.
      metadata(EventMetadata | None): The event's id, time, correlation and causation: the
        same object for every handler of one event. None only in deliveries built by hand.
    """

    handler: HandlerSpec
    event: object
    payload: JSONValue
    partition_key: str | None
    queue_name: str
    metadata: EventMetadata | None = None


class PublishBuffer:
    """publish() calls kept to be handed on together later: their events in order, and their deliveries.

    A recorder in the bus's sense (it has ``published()``), so a publish() can be handed to it.
    """

    __slots__ = ("deliveries", "events", "metadata")

    def __init__(self) -> None:
        self.events: list[object] = []
        self.deliveries: list[Delivery] = []
        self.metadata: list[EventMetadata] = []

    def published(
        self, events: Sequence[object], deliveries: Sequence[Delivery], metadata: Sequence[EventMetadata] = ()
    ) -> None:
        self.events.extend(events)
        self.deliveries.extend(deliveries)
        self.metadata.extend(metadata)
