"""Placing orders: each order and its OrderPlaced event commit together, or not at all."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import dramatiq_eventbus

from .events import OrderPlaced
from .models import Order

#: An order above this is refused, after its row was written and its event published.
CREDIT_LIMIT_CENTS = 100_000


class OverCreditLimit(Exception):
    pass


def _place(customer: str, amount_cents: int) -> Order:
    """Write the order and publish its event; both are undone if the amount is over the limit."""
    order = Order.objects.create(customer=customer, amount_cents=amount_cents)
    # Inside transaction.atomic(): sent when the transaction commits, dropped if it rolls back.
    dramatiq_eventbus.publish(OrderPlaced(order.id, customer, amount_cents))
    if amount_cents > CREDIT_LIMIT_CENTS:
        raise OverCreditLimit(f"{amount_cents} cents is over the credit limit")
    return order


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """POST {"customer": ..., "amount_cents": ...}: 201 with the order's id, or 422 (nothing kept, nothing sent)."""
    body = json.loads(request.body)
    try:
        with transaction.atomic():
            order = _place(body["customer"], int(body["amount_cents"]))
    except OverCreditLimit as exc:
        return JsonResponse({"error": str(exc)}, status=422)
    return JsonResponse({"order_id": order.id}, status=201)


@csrf_exempt
@require_POST
def place_orders(request: HttpRequest) -> JsonResponse:
    """POST {"orders": [...]}: one transaction, each order in a savepoint; a refused one is rolled
    back alone, with its event, and the others commit together."""
    body = json.loads(request.body)
    placed, refused = [], []
    with transaction.atomic():
        for position, item in enumerate(body["orders"]):
            try:
                with transaction.atomic():  # a savepoint
                    placed.append(_place(item["customer"], int(item["amount_cents"])).id)
            except OverCreditLimit:
                refused.append(position)
    return JsonResponse({"placed": placed, "refused": refused}, status=201)
