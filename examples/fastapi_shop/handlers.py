"""The handlers a ``dramatiq`` worker runs, and the wiring.

``EVENTBUS_HANDLERS=examples.fastapi_shop.handlers:HANDLERS`` in the service and the worker.
"""

from __future__ import annotations

import logging

from dramatiq_eventbus import Handler, current_context

from .events import OrderPlaced

logger = logging.getLogger(__name__)


class OrderConfirmation(Handler):
    """E-mails the customer (here, logs the e-mail), with the request's correlation id."""

    def interested(self, event: OrderPlaced) -> bool:
        return event.total > 0  # free orders get no e-mail; asked in the service, before anything is sent

    def handle_event(self, event: OrderPlaced) -> str:
        context = current_context()
        request = context.correlation_id if context is not None else "-"
        text = f"Order {event.order_id} is confirmed: {event.total} EUR"
        logger.info("E-mail to %s: %s (request %s)", event.email, text, request)
        return text


HANDLERS = {OrderPlaced: [OrderConfirmation]}
