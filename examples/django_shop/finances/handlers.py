"""The finances app's handlers: they run in the workers (manage.py rundramatiq)."""

from __future__ import annotations

from dramatiq_eventbus import Handler

from .models import Invoice


class CreateInvoice(Handler):
    """Invoice each placed order, once: a redelivered event finds its invoice there."""

    def handle_event(self, event) -> None:  # event: orders.events.OrderPlaced
        Invoice.objects.get_or_create(
            order_id=event.order_id,
            defaults={"customer": event.customer, "amount_cents": event.amount_cents},
        )
