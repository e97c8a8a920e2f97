"""The orders context: it publishes events and knows nothing of who handles them."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import dramatiq_eventbus as eventbus

from .events import OrderCancelled, OrderCreated, OrderLine


def place_order(order_id: str, customer_id: str, lines: list[OrderLine]) -> OrderCreated:
    total = sum((line.unit_price * line.quantity for line in lines), Decimal("0"))
    event = OrderCreated(order_id, customer_id, total, datetime.now(timezone.utc), lines)
    eventbus.publish(event)
    return event


def cancel_order(order_id: str, reason: str) -> None:
    eventbus.publish(OrderCancelled(order_id, reason))
