"""The finances context: invoices for orders that cost something, refunds for cancellations."""

from __future__ import annotations

import logging
from decimal import Decimal

from dramatiq_eventbus import Handler
from examples.shop.orders.events import OrderCancelled, OrderCreated

#: Invoices by order id; a real context would use its own tables.
INVOICES: dict[str, Decimal] = {}


logger = logging.getLogger("shop.finances")


class FinanceEventHandler(Handler):
    actor_options = {"priority": 3, "max_retries": 9}

    def interested(self, event: object) -> bool:
        # Free orders need no invoice: no message is even sent for them.
        return not isinstance(event, OrderCreated) or event.total > 0

    def handle_event(self, event: object) -> Decimal | None:
        if isinstance(event, OrderCreated):
            INVOICES[event.order_id] = event.total
            logger.info(f"invoice for order {event.order_id}: {event.total} ({len(event.lines)} lines)")
            return event.total
        if isinstance(event, OrderCancelled):
            refund = INVOICES.pop(event.order_id, Decimal("0"))
            logger.info(f"order {event.order_id} cancelled ({event.reason}); refund {refund}")
            return refund
        return None
