"""Fixtures of the transaction tests: PostgreSQL (a schema per run), Redis (database 3), a bus per test."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import dramatiq.broker
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

import dramatiq_eventbus
from dramatiq_eventbus import EventBus
from dramatiq_eventbus.transactions import Outbox
from tests.support.servers import require_postgres, require_redis

from .handlers import HANDLERS
from .support import ACTOR_OPTIONS, REDIS_DB, BrokerView, Records, scratch_table, unique, with_db


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    engine = create_engine(require_postgres(), pool_size=10, max_overflow=20)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def schema(engine: Engine) -> Iterator[str]:
    """A schema of this run's own, dropped with everything in it at the end."""
    name = unique("eventbus_tx")
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))


@pytest.fixture
def outbox(engine: Engine, schema: str) -> Iterator[Outbox]:
    box = Outbox(f"{schema}.{unique('outbox')}")
    box.create(engine)
    yield box
    box.drop(engine)


@pytest.fixture
def accounts(engine: Engine, schema: str) -> Iterator[str]:
    """A table the publishers write to in the same transaction as their publish()."""
    with scratch_table(engine, schema, "accounts", "id SERIAL PRIMARY KEY, name TEXT NOT NULL") as table:
        yield table


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return with_db(require_redis(), REDIS_DB)


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """Unique to the test: in its queue names, its partition keys, its record lists."""
    return unique(request.node.name.split("[")[0][:30])


@pytest.fixture
def queues(tag: str) -> tuple[str, str]:
    return (f"{tag}_q", f"{tag}_pq")


@pytest.fixture
def view(redis_url: str, queues: tuple[str, str], tag: str) -> Iterator[BrokerView]:
    broker_view = BrokerView(redis_url, queues)
    yield broker_view
    broker_view.delete(tag)
    broker_view.close()


@pytest.fixture
def records(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Records]:
    store = Records(redis_url)
    for name, value in store.env().items():
        monkeypatch.setenv(name, value)
    yield store
    store.delete()


@pytest.fixture
def bus(redis_url: str, queues: tuple[str, str], view: BrokerView) -> Iterator[EventBus]:
    """A bus of its own on the tests' Redis, with this test's queues."""
    made = EventBus().configure(
        handlers=HANDLERS,
        broker=redis_url,
        queue=queues[0],
        partitioned_queue=queues[1],
        default_actor_options=ACTOR_OPTIONS,
    )
    yield made
    made.broker.close()
    # Workers on this broker leave its id in the shared heartbeat set.
    view.client.zrem("dramatiq:__heartbeats__", getattr(made.broker, "broker_id", ""))


@pytest.fixture
def default_bus_on_redis(redis_url: str, queues: tuple[str, str], view: BrokerView) -> Iterator[EventBus]:
    """The default bus configured like ``bus``; Dramatiq's global broker is put back afterwards."""
    previous = dramatiq.broker.global_broker
    made = dramatiq_eventbus.configure(
        handlers=HANDLERS, broker=redis_url, queue=queues[0], partitioned_queue=queues[1]
    )
    try:
        yield made
    finally:
        made.broker.close()
        dramatiq.broker.global_broker = previous
