"""The testing toolkit with bound sessions: a test sees what a handler would, when a handler would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

import dramatiq_eventbus
from dramatiq_eventbus import EventBus
from dramatiq_eventbus.testing import (
    EventMailbox,
    StubWorker,
    assert_event_published,
    published_events,
    refute_event_published,
    set_event_bus_mode,
)
from dramatiq_eventbus.transactions import Outbox, SessionBinding, bind_session

from .handlers import Noted
from .support import Records


@pytest.fixture(params=["after commit", "outbox"])
def bound_default_bus(
    request: pytest.FixtureRequest,
    default_bus_on_redis: EventBus,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
) -> Iterator[SessionBinding]:
    with bind_session(session_factory, outbox=outbox if request.param == "outbox" else None) as binding:
        yield binding


def outbox_rows(engine: Engine, outbox: Outbox) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(outbox.table)).scalar_one())


def test_strict_mode_sees_an_event_once_its_transaction_commits_and_never_one_rolled_back(
    bound_default_bus: SessionBinding,
    event_bus: EventMailbox,
    session_factory: sessionmaker[Session],
    engine: Engine,
    outbox: Outbox,
    tag: str,
) -> None:
    set_event_bus_mode("strict")
    with session_factory.begin():
        dramatiq_eventbus.publish(Noted(tag, "staff", 1))
        assert published_events() == []  # not yet: a handler would not have it either
    assert_event_published(Noted, tag=tag, n=1)

    with session_factory() as session, session.begin():
        dramatiq_eventbus.publish(Noted(tag, "staff", 2))
        with session.begin_nested():
            dramatiq_eventbus.publish(Noted(tag, "staff", 3))
        session.rollback()
    refute_event_published(Noted, tag=tag, n=2)
    refute_event_published(Noted, tag=tag, n=3)
    assert outbox_rows(engine, outbox) == 0  # recorded for the test, not written for a relay


def test_a_stub_worker_runs_handlers_of_a_committed_transaction(
    default_bus_on_redis: EventBus,
    stub_worker: StubWorker,
    session_factory: sessionmaker[Session],
    outbox: Outbox,
    records: Records,
    tag: str,
) -> None:
    with bind_session(session_factory, outbox=outbox):
        with session_factory.begin():
            dramatiq_eventbus.publish(Noted(tag, "staff", 1))
        with session_factory() as session, session.begin():
            dramatiq_eventbus.publish(Noted(tag, "staff", 2))
            session.rollback()
        stub_worker.drain()
    assert sorted((line["handler"], line["n"]) for line in records.of(tag)) == [("Everyone", 1), ("StaffOnly", 1)]
