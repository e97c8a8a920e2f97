"""``make demo``: the shop, end to end, on a StubBroker with an in-process Dramatiq worker.

The same code runs against Redis or RabbitMQ with a ``dramatiq`` worker; see the README.
"""

from __future__ import annotations

import logging
import sys
from decimal import Decimal

from dramatiq import Worker

import dramatiq_eventbus as eventbus
from examples.shop.orders.events import OrderLine
from examples.shop.orders.service import cancel_order, place_order


def main() -> None:
    # Handlers log what they do; one stream keeps the threads' lines whole and in order.
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(name)-20s %(message)s")
    logging.getLogger("shop").setLevel(logging.INFO)
    bus = eventbus.configure(
        handlers="examples.shop.handlers:HANDLERS",
        broker="stub",
        # Retry after 50-200 ms instead of Dramatiq's 15 s, so the demo's retry shows quickly.
        default_actor_options={"min_backoff": 50, "max_backoff": 200},
    )
    broker = bus.broker
    worker = Worker(broker, worker_timeout=50)
    worker.start()
    try:
        print("publishing: order A-1 (2 lines), free order A-2, then cancelling A-1")
        place_order("A-1", "alice", [OrderLine("book", 2, Decimal("12.50")), OrderLine("pen", 1, Decimal("1.99"))])
        place_order("A-2", "bob", [OrderLine("sample", 1, Decimal("0"))])
        cancel_order("A-1", "changed my mind")
        for queue in (bus.config.queues.default, bus.config.queues.partitioned):
            broker.join(queue, timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    print(
        "done: every handler ran, and saw A-1 placed before it was cancelled (its events share a partition "
        "key); A-2 sent no message to finances because it was not interested"
    )


if __name__ == "__main__":
    main()
