"""The inline backend: handlers run synchronously in the publisher."""

from __future__ import annotations

from collections.abc import Sequence

from ..actors import delivery_context, handle_payload
from ..codecs import Codec
from ..delivery import Delivery


class InlineBackend:
    """Runs each interested handler in the caller, for development and seed scripts.

    The event still makes the codec's round trip, so what works here works in a worker.
    Unlike the reference, which ignores results here, an ``Error(reason)`` raises
    :class:`~dramatiq_eventbus.errors.HandlerFailed`, and exceptions propagate, so a
    failure is never silent. An async handler is run to completion before the next: on a
    new event loop, or, when publish() is called from a coroutine, on a loop of its own in
    another thread while the caller waits (see :func:`~dramatiq_eventbus.actors.run_to_completion`).

    Parameters:
      codec(Codec): The bus's codec.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        """Run each delivery's handler on its event, in order.

        Parameters:
          deliveries(Sequence[Delivery]): The interested handlers of one publish() call.

        Raises:
          HandlerFailed: A handler returned ``Error(reason)``; the handlers after it do not run.
          Exception: Whatever a handler raised.
        """
        for delivery in deliveries:
            handle_payload(delivery.handler, self.codec, delivery.payload, delivery_context(delivery))
