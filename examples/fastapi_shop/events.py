"""The orders context's events."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    email: str
    total: Decimal

    def partition_key(self) -> str:
        return self.order_id
