"""Event metadata on a StubBroker: ids, correlation, causation, attempts, the context, logs and the signature."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from dramatiq.message import Message

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import EventBus, EventContextFilter, current_context, metadata
from dramatiq_eventbus.backends import DramatiqBackend
from dramatiq_eventbus.brokers.inspection import Refusal, inspect_body
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.metadata import MAX_ID_CHARACTERS, EventMetadata, new_metadata, uuid7
from dramatiq_eventbus.signing import Signer
from tests.support.threads import run_interleaved

from . import metadata_handlers as h
from .conftest import FAST_RETRIES

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
KEY = "k" * 32


@pytest.fixture(autouse=True)
def clean(bus: EventBus) -> Iterator[None]:
    h.SEEN.clear()
    h.BUS[:] = [bus]
    yield
    h.BUS.clear()


def contexts(label: str) -> list[eventbus.EventContext]:
    found = h.SEEN.get(label, [])
    assert all(context is not None for context in found), found
    return found  # type: ignore[return-value]


def test_uuid7_ids_are_version_7_unique_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert all(UUID7.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the millisecond prefix never goes back


def test_uuid7_ids_carry_their_millisecond_and_74_random_bits() -> None:
    ids = [uuid7(1_765_000_000_123) for _ in range(2000)]
    assert {UUID(i).int >> 80 for i in ids} == {1_765_000_000_123}
    assert {UUID(i).version for i in ids} == {7}
    # Every random digit takes (nearly) every value; the variant's digit, each of its four.
    random_places = [place for place in range(15, 36) if place not in (18, 19, 23)]
    assert all(len({i[place] for i in ids}) >= 14 for place in random_places)
    assert {i[19] for i in ids} == set("89ab")
    # No digit repeats another: two places agree in 1 id of 16, not in every one.
    for a, b in itertools.combinations(random_places, 2):
        assert sum(i[a] == i[b] for i in ids) < len(ids) / 8, (a, b)
    with pytest.raises(OverflowError):
        uuid7(-1)
    with pytest.raises(OverflowError):
        uuid7(2**48)


def test_new_metadata_is_a_whole_event_metadata() -> None:
    made = new_metadata()  # built as a plain tuple, for speed: it must still be one of every field
    assert type(made) is EventMetadata and len(made) == len(EventMetadata._fields)
    assert made == EventMetadata(made.event_id, made.published_at_ms, made.event_id, None, None)
    assert UUID7.match(made.event_id) and abs(made.published_at_ms - time.time() * 1000) < 60_000


@pytest.mark.parametrize("lock_free", [True, False], ids=["with-the-gil", "free-threaded"])
def test_uuid7_ids_made_by_many_threads_at_once_are_unique(lock_free: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "_LOCK_FREE", lock_free)  # a free-threaded build takes the lock
    # Threads switching every microsecond: a pool read apart from its counter, or a refill
    # two threads both make, would hand two threads the same random bytes.
    made: list[list[str]] = [[] for _ in range(8)]

    def make(into: list[str]) -> None:
        for _ in range(3000):  # each thread alone uses up several pools of 400 ids
            into.append(uuid7(0))  # one millisecond for all: only the random bits tell them apart

    run_interleaved([functools.partial(make, ids) for ids in made])
    every = [i for ids in made for i in ids]
    assert len(every) == 24_000 and len(set(every)) == len(every)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_makes_the_ids_its_parent_makes() -> None:
    uuid7()  # the parent holds a pool, partly used
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(reading)
        os.write(writing, " ".join(uuid7(0) for _ in range(50)).encode())
        os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {uuid7(0) for _ in range(50)}
    assert len(child) == 50 and not child & parent


def test_publish_returns_the_event_id_and_a_list_for_a_list(bus: EventBus) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    one = bus.publish(h.Mailed("1"))
    assert isinstance(one, str) and UUID7.match(one)
    many = bus.publish([h.Mailed("2"), h.Mailed("3")])
    assert isinstance(many, list) and len(many) == 2 and len(set([one, *many])) == 3
    assert bus.publish((h.Mailed("4"),)) != []
    assert bus.publish([]) == []


def test_publish_returns_ids_for_events_no_handler_wants(bus: EventBus) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    ids = bus.publish([h.Ordered("1"), object.__new__(type("Nobody", (), {}))])
    assert len(ids) == 2 and all(UUID7.match(i) for i in ids)


def test_the_metadata_travels_in_the_options_the_same_for_every_handler(bus: EventBus) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    with eventbus.correlation("req-7f3a"):
        event_id = bus.publish(h.Ordered("1"))
    messages = [Message.decode(data) for data in bus.broker.queues["events"].queue]
    assert len(messages) == 2
    for message in messages:
        assert message.options["event_id"] == event_id
        assert message.options["correlation_id"] == "req-7f3a"
        assert "causation_id" not in message.options  # None is left out
        assert isinstance(message.options["published_at"], int)
        assert message.args == ({"order_id": "1"},) or "order_id" in str(message.args)  # payload untouched


def test_an_event_s_own_id_as_correlation_and_no_causation_are_left_out_of_the_options(bus: EventBus) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    event_id = bus.publish(h.Mailed("1"))
    (data,) = bus.broker.queues["events_partitioned"].queue
    options = Message.decode(data).options
    assert options["event_id"] == event_id
    assert "correlation_id" not in options and "causation_id" not in options


def test_three_hops_on_a_worker_share_the_correlation_and_chain_the_causation(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    before = datetime.now(UTC)
    event_id = bus.publish(h.Ordered("1"))
    drain()
    drain()
    (first,) = contexts("ordered.first")
    (second,) = contexts("ordered.second")
    (invoiced,) = contexts("invoiced")  # an async handler, on Dramatiq's loop thread
    (mailed,) = contexts("mailed")
    assert first.event_id == second.event_id == event_id
    assert first.correlation_id == event_id and first.causation_id is None
    assert first.handler == "tests.unit.metadata_handlers.OrderedFirst"
    assert second.handler == "tests.unit.metadata_handlers.OrderedSecond"
    assert first.message_id != second.message_id and first.message_id is not None
    assert first.attempt == 1 and first.partition_key is None
    assert before.replace(microsecond=0) <= first.published_at <= datetime.now(UTC)
    assert first.published_at.tzinfo is not None
    assert invoiced.correlation_id == mailed.correlation_id == event_id
    assert invoiced.causation_id == event_id
    assert mailed.causation_id == invoiced.event_id != event_id
    assert mailed.partition_key == "1"
    assert len({first.event_id, invoiced.event_id, mailed.event_id}) == 3
    assert current_context() is None


def test_a_correlation_block_reaches_every_hop(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    with eventbus.correlation("req-7f3a"):
        bus.publish(h.Ordered("1"))
    drain()
    drain()
    assert {c.correlation_id for label in ("ordered.first", "invoiced", "mailed") for c in contexts(label)} == {
        "req-7f3a"
    }


def test_attempt_counts_retries(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers={h.Mailed: [h.FlakyMailed]}, broker="stub", default_actor_options=FAST_RETRIES)
    event_id = bus.publish(h.Mailed("1"))
    drain()
    seen = contexts("flaky")
    assert [c.attempt for c in seen] == [1, 2, 3]
    assert {c.event_id for c in seen} == {event_id}


def test_inline_backend_gives_handlers_their_context(bus: EventBus) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub", backend="inline")
    with eventbus.correlation("req-1"):
        event_id = bus.publish(h.Ordered("1"))
    (first,) = contexts("ordered.first")
    (mailed,) = contexts("mailed")
    assert first.event_id == event_id and first.message_id is None and first.correlation_id == "req-1"
    assert mailed.correlation_id == "req-1"
    assert contexts("invoiced")[0].causation_id == event_id
    assert current_context() is None


def test_the_correlation_must_be_a_bounded_printable_str() -> None:
    with pytest.raises(TypeError), eventbus.correlation(7):  # type: ignore[arg-type]
        pass
    for bad in ("", "x" * (MAX_ID_CHARACTERS + 1), "a\nb"):
        with pytest.raises(ValueError), eventbus.correlation(bad):
            pass


def test_the_log_filter_adds_the_context_to_records(bus: EventBus, caplog: pytest.LogCaptureFixture) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub", backend="inline")
    caplog.handler.addFilter(EventContextFilter())
    with caplog.at_level(logging.WARNING, logger="tests.metadata"):
        logging.getLogger("tests.metadata").warning("outside")
        with eventbus.correlation("req-9"):
            event_id = bus.publish(h.Ordered("1"))
    outside, inside = (r for r in caplog.records if r.name == "tests.metadata")
    assert (outside.event_id, outside.correlation_id, outside.handler) == ("-", "-", "-")  # type: ignore[attr-defined]
    assert inside.event_id == event_id  # type: ignore[attr-defined]
    assert inside.correlation_id == "req-9"  # type: ignore[attr-defined]
    assert inside.handler == "tests.unit.metadata_handlers.OrderedFirst"  # type: ignore[attr-defined]


def test_the_signature_covers_the_metadata(bus: EventBus) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub", secret_key=KEY)
    bus.publish(h.Mailed("1"))
    (data,) = bus.broker.queues["events_partitioned"].queue
    signer = Signer((KEY.encode(),))
    message = Message.decode(data)
    assert signer.problem(message) is None
    for name, forged in (
        ("event_id", uuid7()),
        ("correlation_id", "someone-else"),
        ("causation_id", uuid7()),
        ("published_at", 0),
    ):
        altered = Message.decode(data)
        altered.options[name] = forged
        assert signer.problem(altered) is not None, name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", 12),
        ("event_id", ["x"]),
        ("correlation_id", "x" * (MAX_ID_CHARACTERS + 1)),
        ("causation_id", {"a": 1}),
        ("event_id", "a\x1b[31mred"),
        ("published_at", "yesterday"),
        ("published_at", True),
        ("published_at", -1),
    ],
)
def test_forged_metadata_options_are_refused_by_the_consumer(bus: EventBus, name: str, value: Any) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    bus.publish(h.Mailed("1"))
    (data,) = bus.broker.queues["events_partitioned"].queue
    message = Message.decode(data)
    forged = message.copy(options={**message.options, name: value})
    refusal = inspect_body(forged.encode(), bus.broker.actors, "events_partitioned")
    assert isinstance(refusal, Refusal)
    assert name in refusal.reason
    assert inspect_body(data, bus.broker.actors, "events_partitioned") == message


def test_a_message_without_metadata_runs_with_its_message_id_as_event_id(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    bus.configure(handlers=h.CHAIN, broker="stub")
    backend = bus.config.backend
    assert isinstance(backend, DramatiqBackend)
    (spec,) = bus.config.registry.handlers_for(h.Mailed)
    # As a publisher older than the metadata sent it: no metadata options.
    payload = bus.config.codec.encode(h.Mailed("1"))
    old = backend.message_for(Delivery(spec, h.Mailed("1"), payload, "1", "events_partitioned"))
    assert "event_id" not in old.options
    bus.broker.enqueue(old)
    drain()
    (seen,) = contexts("mailed")
    assert seen.event_id == seen.correlation_id == old.message_id and seen.causation_id is None


def test_the_dead_letter_line_names_the_event(
    bus: EventBus, drain: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    bus.configure(
        handlers={h.Mailed: [h.FlakyMailed]}, broker="stub", default_actor_options={**FAST_RETRIES, "max_retries": 0}
    )
    with caplog.at_level(logging.ERROR):
        event_id = bus.publish(h.Mailed("1"))
        drain()
    (line,) = [r.getMessage() for r in caplog.records if "Dead-lettered message" in r.getMessage()]
    assert f"(partition key '1', event '{event_id}')" in line


def test_eventbus_lanes_prints_the_head_s_event_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dramatiq_eventbus.cli import main
    from dramatiq_eventbus.ordering import LaneStatus

    status = LaneStatus("h.Handler", "k", "running", "msg-1", "pkg:Event", 30.0, 2, 4, event_id="evt-1")
    monkeypatch.setattr("dramatiq_eventbus.cli.arguments_from_env", lambda: {"handlers": {}, "broker": "stub"})
    monkeypatch.setattr(EventBus, "lanes", lambda self, older_than_seconds=0.0: [status])
    assert main(["lanes"]) == 1
    assert capsys.readouterr().out.splitlines()[1].endswith("'msg-1' event 'evt-1'")


def test_concurrent_async_handlers_each_see_their_own_context(bus: EventBus, drain: Callable[[], None]) -> None:
    bus.configure(handlers={h.Slow: [h.AsyncSlowNoter]}, broker="stub")
    ids = bus.publish([h.Slow(str(n)) for n in range(6)])
    drain()
    seen = h.SEEN["slow"]
    # Each handler noted its context before and after an await during which the others ran.
    assert sorted(before.event_id for before, _ in seen) == sorted(ids)  # type: ignore[union-attr]
    assert all(before == after for before, after in seen)


def test_deferred_publishes_keep_their_ids_and_metadata(bus: EventBus) -> None:
    from dramatiq_eventbus.testing import recording

    bus.configure(handlers=h.CHAIN, broker="stub")
    with recording(bus) as mailbox, eventbus.correlation("req-d"), bus.deferred():
        event_id = bus.publish(h.Mailed("1"))
        assert mailbox.records == ()
    (record,) = mailbox.records
    assert record.metadata is not None
    assert (record.metadata.event_id, record.metadata.correlation_id) == (event_id, "req-d")
