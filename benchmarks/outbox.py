"""Outbox benchmark: ``python -m benchmarks.outbox`` (a few seconds; needs PostgreSQL and Redis).

It measures, in one run, on the local PostgreSQL (``POSTGRES_URL``) and Redis (``REDIS_URL``):

- publish() of one event with one handler: sent directly to the Redis broker, and written
  through the outbox inside an open transaction (one INSERT per publish());
- a whole transaction that inserts one application row and publishes one event: published
  directly after the commit, delivered after commit by a bound session, and through the
  outbox (the INSERT and the NOTIFY trigger, no broker);
- how fast one relay then moves the outbox rows to Redis.

Nothing is consumed: the messages stay in queues of the run's own, deleted at the end,
with the PostgreSQL schema the run made.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from dramatiq_eventbus import EventBus, Handler
from dramatiq_eventbus.transactions import Outbox, OutboxRelay, bind_session

POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: Calls per timed round, for publish() alone and for whole transactions; each figure is the best of three rounds.
CALLS = 400
TRANSACTIONS = 150


@dataclass(frozen=True)
class AccountOpened:
    account_id: int
    owner: str


class Welcome(Handler):
    def handle_event(self, event: AccountOpened) -> None:
        pass


def best_per_call_us(function: Callable[[int], object], calls: int = CALLS, rounds: int = 3) -> float:
    """The best of ``rounds`` rounds of ``calls`` calls (each given its index), per call, in microseconds."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for n in range(calls):
            function(n)
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


def measure(engine: Engine, schema: str, bus: EventBus) -> dict[str, float]:
    outbox = Outbox(f"{schema}.outbox")
    outbox.create(engine)
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {schema}.accounts (id SERIAL PRIMARY KEY, owner TEXT)"))
    factory = sessionmaker(engine)
    event = AccountOpened(1, "alice")
    results: dict[str, float] = {}

    def open_account(session: Session, n: int) -> None:
        session.execute(text(f"INSERT INTO {schema}.accounts (owner) VALUES (:owner)"), {"owner": f"o{n}"})

    results["publish, direct"] = best_per_call_us(lambda n: bus.publish(event))
    with bind_session(factory, bus=bus, outbox=outbox), factory.begin():
        # One open transaction: each publish() is one INSERT of its row.
        results["publish, outbox (in an open transaction)"] = best_per_call_us(lambda n: bus.publish(event))

    def direct_after(n: int) -> None:
        with factory.begin() as session:
            open_account(session, n)
        bus.publish(event)

    def in_transaction(n: int) -> None:
        with factory.begin() as session:
            open_account(session, n)
            bus.publish(event)

    results["transaction + publish, direct after commit"] = best_per_call_us(direct_after, TRANSACTIONS)
    with bind_session(factory, bus=bus):
        results["transaction + publish, after commit (bound)"] = best_per_call_us(in_transaction, TRANSACTIONS)
    with bind_session(factory, bus=bus, outbox=outbox):
        results["transaction + publish, outbox"] = best_per_call_us(in_transaction, TRANSACTIONS)

    relay = OutboxRelay(outbox, engine, bus=bus)
    started = time.perf_counter()
    relayed = relay.relay_pending()
    results["relay rows/s"] = relayed / (time.perf_counter() - started)
    return results


def main() -> int:
    run = uuid.uuid4().hex[:10]
    schema = f"bench_outbox_{run}"
    queue = f"bench_outbox_{run}"
    try:
        engine = create_engine(POSTGRES_URL)
        with engine.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        client = redis.Redis.from_url(REDIS_URL)
        client.ping()
    except Exception as exc:
        print(f"benchmarks.outbox needs PostgreSQL ({POSTGRES_URL}) and Redis ({REDIS_URL}): {exc}", file=sys.stderr)
        return 1
    bus = EventBus().configure(
        handlers={AccountOpened: [Welcome]}, broker=REDIS_URL, queue=queue, partitioned_queue=f"{queue}_p"
    )
    try:
        results = measure(engine, schema, bus)
    finally:
        bus.broker.close()
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()
        client.delete(*[f"dramatiq:{name}{suffix}" for name in (queue, f"{queue}_p") for suffix in ("", ".msgs")])
        client.close()

    relay_rate = results.pop("relay rows/s")
    print(f"Python {sys.version.split()[0]}; one event, one handler; PostgreSQL and Redis on loopback")
    print(f"{'':<48}{'µs per call':>12}")
    for name, micros in results.items():
        print(f"{name:<48}{micros:12.0f}")
    direct = results["publish, direct"]
    outbox = results["publish, outbox (in an open transaction)"]
    baseline = results["transaction + publish, direct after commit"]
    whole = results["transaction + publish, outbox"]
    print(f"publish() through the outbox / direct publish(): {outbox / direct:.2f}x")
    print(f"a transaction with one publish() through the outbox / with a direct publish(): {whole / baseline:.2f}x")
    print(f"one relay moved the rows to Redis at {relay_rate:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    # Run from the module imported under its own name, so the event class is
    # benchmarks.outbox's, as a worker would import it, not __main__'s.
    from benchmarks.outbox import main as imported_main

    sys.exit(imported_main())
