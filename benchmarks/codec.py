"""Codec benchmark: ``python -m benchmarks.codec``.

For the typical event of issue 3 (ten fields, a Decimal, a datetime, a nested list of
five dataclasses) it prints the time of one encode plus one decode, and the payload's
size as JSON, for the typed codec, the pickle codec (dill, base64, HMAC-SHA256) and
the standard ``json`` module on an equivalent dict of str, int and lists.

"codec" times the codec alone; "+ json" adds the ``json.dumps``/``json.loads`` that
Dramatiq's envelope does anyway, so the three columns compare what a message costs.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from dramatiq_eventbus.codecs import Codec, CustomTypes, make_codec

SECRET_KEY = "benchmark-secret-key-not-for-production"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer_id: str
    total: Decimal
    placed_at: datetime
    currency: str
    channel: str
    items: int
    gift: bool
    note: str | None
    lines: list[Line]


def typical_event() -> OrderPlaced:
    lines = [Line(f"SKU-{i:04d}", i + 1, Decimal(f"{i + 1}9.99")) for i in range(5)]
    return OrderPlaced(
        order_id="ord_8f14e45fceea167a",
        customer_id="cus_c9f0f895fb98ab91",
        total=sum((line.unit_price * line.quantity for line in lines), Decimal("0")),
        placed_at=datetime(2026, 11, 27, 10, 32, 26, 830947, tzinfo=timezone.utc),
        currency="EUR",
        channel="web",
        items=sum(line.quantity for line in lines),
        gift=False,
        note=None,
        lines=lines,
    )


def as_plain_dict(event: OrderPlaced) -> dict[str, Any]:
    """What a hand-written JSON schema would send: strings for Decimal and datetime."""
    return {
        "order_id": event.order_id,
        "customer_id": event.customer_id,
        "total": str(event.total),
        "placed_at": event.placed_at.isoformat(),
        "currency": event.currency,
        "channel": event.channel,
        "items": event.items,
        "gift": event.gift,
        "note": event.note,
        "lines": [{"sku": li.sku, "quantity": li.quantity, "unit_price": str(li.unit_price)} for li in event.lines],
    }


def per_call_us(function: Callable[[], object], *, seconds: float = 0.5) -> float:
    """The best of five runs of as many calls as fit in ``seconds``, per call, in microseconds."""
    calls = 1
    while True:
        started = time.perf_counter()
        for _ in range(calls):
            function()
        if time.perf_counter() - started > seconds / 10:
            break
        calls *= 2
    best = min(_timed(function, calls) for _ in range(5))
    return best / calls * 1e6


def _timed(function: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return time.perf_counter() - started


def measure() -> list[tuple[str, float, float, int]]:
    """(name, codec µs, codec + json µs, payload bytes) for typed, pickle and plain json."""
    event = typical_event()
    rows: list[tuple[str, float, float, int]] = []
    for name in ("typed", "pickle"):
        codec = make_codec(name, event_classes=[OrderPlaced], custom_types=CustomTypes(), secret_key=SECRET_KEY)
        text = json.dumps(codec.encode(event))
        assert codec.decode(json.loads(text)) == event
        rows.append(
            (name, per_call_us(_codec_trip(codec, event)), per_call_us(_json_trip(codec, event)), len(text.encode()))
        )
    plain = as_plain_dict(event)
    text = json.dumps(plain)
    rows.append(("plain json of a dict", 0.0, per_call_us(lambda: json.loads(json.dumps(plain))), len(text.encode())))
    return rows


def _codec_trip(codec: Codec, event: object) -> Callable[[], object]:
    return lambda: codec.decode(codec.encode(event))


def _json_trip(codec: Codec, event: object) -> Callable[[], object]:
    return lambda: codec.decode(json.loads(json.dumps(codec.encode(event))))


def main() -> None:
    rows = measure()
    print(f"Python {sys.version.split()[0]}; one encode + one decode of a 10-field event with 5 nested lines")
    print(f"{'mode':<22}{'codec µs':>10}{'+ json µs':>11}{'bytes':>8}")
    for name, codec_only, with_json, size in rows:
        shown = f"{codec_only:10.1f}" if codec_only else f"{'-':>10}"
        print(f"{name:<22}{shown}{with_json:11.1f}{size:8d}")
    typed, pickled = rows[0], rows[1]
    print(f"typed / pickle time: {typed[1] / pickled[1]:.2f}x (codec), {typed[2] / pickled[2]:.2f}x (+ json)")


if __name__ == "__main__":
    # Run from the module imported under its own name, so the event classes are
    # benchmarks.codec's, as a worker would import them, not __main__'s.
    from benchmarks.codec import main as imported_main

    imported_main()
