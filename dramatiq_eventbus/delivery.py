"""A delivery: one event routed to one handler, ready for a backend."""

from __future__ import annotations

from dataclasses import dataclass

from .codecs import JSONValue
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
    """

    handler: HandlerSpec
    event: object
    payload: JSONValue
    partition_key: str | None
    queue_name: str
