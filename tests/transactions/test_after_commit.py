"""After-commit delivery: a publish() inside a bound session's transaction waits for the commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from dramatiq_eventbus import ConfigurationError, EventBus
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.transactions import SessionBinding, bind_session

from .handlers import HANDLERS, Noted


class Sent:
    """A backend that keeps what each deliver() call carried: the events' numbers."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        self.calls.append([d.event.n for d in deliveries if d.handler.name.endswith("Everyone")])  # type: ignore[attr-defined]

    @property
    def numbers(self) -> list[int]:
        return [n for call in self.calls for n in call]


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def local_bus(sent: Sent) -> EventBus:
    return EventBus().configure(handlers=HANDLERS, broker="stub", backend=sent)


@pytest.fixture
def bound(local_bus: EventBus, session_factory: sessionmaker[Session]) -> Iterator[SessionBinding]:
    with bind_session(session_factory, bus=local_bus) as binding:
        yield binding


def note(bus: EventBus, n: int) -> None:
    bus.publish(Noted("t", "all", n))


def test_commit_sends_once_after_the_commit_and_rollback_sends_nothing(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session], accounts: str
) -> None:
    with session_factory() as session:
        with session.begin():
            session.execute(text(f"INSERT INTO {accounts} (name) VALUES ('a')"))
            note(local_bus, 1)
            note(local_bus, 2)
            assert sent.calls == []
        assert sent.calls == [[1, 2]]  # together, once

        with session.begin():
            note(local_bus, 3)
            session.rollback()
        with pytest.raises(RuntimeError), session.begin():
            note(local_bus, 4)
            raise RuntimeError("the block failed")
        # Autobegin, then explicit commit() and rollback().
        session.execute(text("SELECT 1"))
        note(local_bus, 5)
        session.commit()
        session.execute(text("SELECT 1"))
        note(local_bus, 6)
        session.rollback()
    assert sent.calls == [[1, 2], [5]]


def test_outside_a_transaction_publish_is_direct(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session]
) -> None:
    note(local_bus, 1)
    with session_factory() as session:
        note(local_bus, 2)  # the session has not begun a transaction yet
        session.execute(text("SELECT 1"))
        session.commit()
        note(local_bus, 3)
    assert sent.calls == [[1], [2], [3]]


def test_savepoints_drop_their_own_events_on_rollback_and_join_the_transaction_on_release(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session, session.begin():
        note(local_bus, 1)
        savepoint = session.begin_nested()
        note(local_bus, 2)
        savepoint.rollback()
        with session.begin_nested():
            note(local_bus, 3)
            with session.begin_nested():
                note(local_bus, 4)
            with pytest.raises(ValueError), session.begin_nested():
                note(local_bus, 5)
                raise ValueError("undo the inner savepoint")
            note(local_bus, 6)
        note(local_bus, 7)
        assert sent.calls == []
    assert sent.calls == [[1, 3, 4, 6, 7]]


def test_a_released_savepoint_is_dropped_with_its_rolled_back_transaction(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        with session.begin():
            with session.begin_nested():
                note(local_bus, 1)
            session.rollback()
        with session.begin():
            note(local_bus, 2)
    assert sent.calls == [[2]]


def test_other_threads_are_not_held_by_this_threads_transaction(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session, session.begin():
        thread = threading.Thread(target=note, args=(local_bus, 1))
        thread.start()
        thread.join()
        assert sent.calls == [[1]]
        note(local_bus, 2)
    assert sent.calls == [[1], [2]]


def test_a_deferred_block_inside_a_transaction_hands_its_events_to_the_transaction(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        with session.begin():
            with local_bus.deferred():
                note(local_bus, 1)
            assert sent.calls == []
        assert sent.calls == [[1]]
        with session.begin():
            with local_bus.deferred():
                note(local_bus, 2)
            session.rollback()
    assert sent.calls == [[1]]


def test_a_session_committed_inside_another_sessions_transaction_sends_regardless_of_the_outer_one(
    local_bus: EventBus, sent: Sent, bound: SessionBinding, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as outer, outer.begin():
        outer.execute(text("SELECT 1"))
        note(local_bus, 1)
        with session_factory() as inner:
            with inner.begin():
                note(local_bus, 2)  # the latest begun transaction takes it
            assert sent.calls == [[2]]  # its data is committed: its events must not wait for the outer one
        outer.rollback()
    assert sent.calls == [[2]]


def test_a_session_scoped_session_and_session_class_can_be_bound(
    local_bus: EventBus, sent: Sent, engine: Engine
) -> None:
    class AppSession(Session):
        pass

    session = Session(engine)
    scoped = scoped_session(sessionmaker(engine))
    for target, make in ((session, lambda: session), (scoped, scoped), (AppSession, lambda: AppSession(engine))):
        with bind_session(target, bus=local_bus):
            current = make()
            with current.begin():
                note(local_bus, 1)
                assert sent.calls == []
            current.close()
        assert sent.calls == [[1]]
        sent.calls.clear()
    scoped.remove()


def test_unbinding_stops_the_holding_and_warns_about_dropped_events(
    local_bus: EventBus, sent: Sent, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    binding = bind_session(session_factory, bus=local_bus)
    with session_factory() as session, session.begin():
        note(local_bus, 1)
        with caplog.at_level(logging.WARNING, logger="dramatiq_eventbus.transactions"):
            binding.unbind()
        note(local_bus, 2)
    assert sent.calls == [[2]]
    assert "kept 1 event(s); they are dropped" in caplog.text


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (object(), "not builtins.object"),
        ("sessionmaker", "not builtins.str"),
        (dict, "the class dict is not a Session subclass"),
    ],
)
def test_binding_something_that_is_not_a_session_names_it(local_bus: EventBus, target: object, expected: str) -> None:
    with pytest.raises(ConfigurationError, match="bind_session\\(\\) takes a SQLAlchemy Session") as raised:
        bind_session(target, bus=local_bus)
    assert expected in str(raised.value)


def test_sqlite_sessions_deliver_after_commit_too(local_bus: EventBus, sent: Sent, tmp_path: object) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/app.db")
    try:
        factory = sessionmaker(engine)
        with bind_session(factory, bus=local_bus), factory() as session:
            with session.begin():
                note(local_bus, 1)
            with session.begin():
                note(local_bus, 2)
                session.rollback()
        assert sent.calls == [[1]]
    finally:
        engine.dispose()
