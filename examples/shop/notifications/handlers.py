"""The notifications context: e-mails customers, through mail servers that are sometimes busy."""

from __future__ import annotations

import logging
from collections import Counter

from dramatiq_eventbus import Error, Handler
from examples.shop.orders.events import OrderCancelled, OrderCreated

ATTEMPTS: Counter[str] = Counter()

#: Customers whose mail server turns a first delivery away ("greylisting"): their e-mail is retried.
GREYLISTING = frozenset({"bob"})


logger = logging.getLogger("shop.notifications")


class NotificationHandler(Handler):
    def handle_event(self, event: object) -> Error | None:
        if isinstance(event, OrderCreated):
            ATTEMPTS[event.order_id] += 1
            if event.customer_id in GREYLISTING and ATTEMPTS[event.order_id] == 1:
                # The first try fails; Dramatiq retries it after a backoff.
                logger.info(f"mail server busy for order {event.order_id}, will retry")
                return Error("mail server busy")
            logger.info(f"e-mailed {event.customer_id} about order {event.order_id}")
        elif isinstance(event, OrderCancelled):
            logger.info(f"told the customer order {event.order_id} is cancelled")
        return None
