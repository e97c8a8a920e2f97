"""Events the orders context publishes. Other contexts import only these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderCreated:
    order_id: str
    customer_id: str
    total: Decimal
    placed_at: datetime
    lines: list[OrderLine] = field(default_factory=list)

    def partition_key(self) -> str:
        # Events about one order are handled in order, per handler.
        return self.order_id


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: str

    def partition_key(self) -> str:
        # The same key as the order's OrderCreated: each handler sees the order placed, then
        # cancelled. Without it, a cancellation could be handled before the order it cancels.
        return self.order_id
