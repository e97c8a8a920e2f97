"""The inline backend: handlers run synchronously in the publisher."""

from __future__ import annotations

from collections.abc import Sequence

from ..actors import handle_payload
from ..codecs import Codec
from ..delivery import Delivery


class InlineBackend:
    """Runs each interested handler in the caller, for development and seed scripts.

    The event still makes the codec's round trip, so what works here works in a worker.
    Unlike the reference, which ignores results here, an ``Error(reason)`` raises
    :class:`~dramatiq_eventbus.errors.HandlerFailed`, and exceptions propagate, so a
    failure is never silent.

    Parameters:
      codec(Codec): The bus's codec.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            handle_payload(delivery.handler, self.codec, delivery.payload)
