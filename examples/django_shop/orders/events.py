"""The orders app's events: what other apps may react to."""

from dataclasses import dataclass


@dataclass(frozen=True)
class OrderPlaced:
    order_id: int
    customer: str
    amount_cents: int
