"""DeadLetters on a StubBroker with a real Dramatiq worker: list, replay, purge, and what is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message

from dramatiq_eventbus import ConfigurationError, EventBus, Handler
from dramatiq_eventbus.dead_letters import REPLAYED_FROM, DeadLetters
from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.signing import OPTION, Signer

from .conftest import FAST_RETRIES

SECRET = "dead-letters-unit-key-0123456789"
HANDLED: list[str] = []
BROKEN: set[str] = set()


@dataclass(frozen=True)
class Parcel:
    label: str

    def partition_key(self) -> str:
        return f"key-{self.label}"


@dataclass(frozen=True)
class Note:
    label: str


class Courier(Handler):
    actor_options = {"max_retries": 0}

    def handle_event(self, event: Parcel) -> None:
        if event.label in BROKEN:
            raise RuntimeError(f"broken {event.label}")
        HANDLED.append(event.label)


class Reader(Courier):
    """Another handler, for the filters to tell apart."""


COURIER = handler_name(Courier)


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    HANDLED.clear()
    BROKEN.clear()
    yield
    HANDLED.clear()
    BROKEN.clear()


def configured(bus: EventBus, **settings: Any) -> EventBus:
    return bus.configure(
        handlers={Parcel: [Courier], Note: [Reader]},
        broker=StubBroker(),
        default_actor_options=FAST_RETRIES,
        **settings,
    )


def queued(bus: EventBus, queue_name: str) -> list[Message[Any]]:
    broker = bus.broker
    assert isinstance(broker, StubBroker)
    return [Message.decode(body) for body in list(broker.queues[queue_name].queue)]


def test_a_failed_event_is_listed_replayed_once_fixed_and_handled(bus: EventBus, drain: Callable[[], None]) -> None:
    configured(bus)
    BROKEN.add("p1")
    bus.publish(Parcel("p1"))
    drain()
    letters = DeadLetters(bus)
    [letter] = letters.list()
    assert (letter.handler, letter.event_type, letter.partition_key) == (
        COURIER,
        "tests.unit.test_dead_letters_api:Parcel",
        "key-p1",
    )
    assert (letter.attempts, letter.last_failure) == (1, "RuntimeError: broken p1")
    assert letter.queue_name == "events_partitioned" and letter.readable and letter.event_id
    assert letters.event(letter) == Parcel("p1")
    assert letters.get(letter.message_id or "") == letter

    outcome = letters.replay([letter], dry_run=True)
    assert (outcome.replayed, outcome.refused, outcome.dry_run) == ((letter,), (), True)
    assert queued(bus, "events_partitioned") == []
    assert letters.list() == [letter]

    BROKEN.clear()
    outcome = letters.replay([letter])
    assert outcome.replayed == (letter,)
    assert letters.list() == []
    [sent] = queued(bus, "events_partitioned")
    assert sent.message_id != letter.message_id
    assert sent.options[REPLAYED_FROM] == letter.message_id
    assert not {"retries", "traceback", "requeue_timestamp"} & set(sent.options)
    assert sent.options["event_id"] == letter.event_id  # the same event, handled again
    drain()
    assert HANDLED == ["p1"]
    assert letters.list() == []


def test_filters_select_and_purge_removes_only_what_it_is_given(bus: EventBus, drain: Callable[[], None]) -> None:
    configured(bus)
    BROKEN.update({"p1", "p2", "n1"})
    bus.publish([Parcel("p1"), Parcel("p2"), Note("n1")])
    drain()
    letters = DeadLetters(bus)
    everything = letters.list()
    assert len(everything) == 3
    parcels = letters.list(handler="Courier")
    assert {letter.partition_key for letter in parcels} == {"key-p1", "key-p2"}
    assert letters.list(handler=COURIER) == parcels
    assert [letter.handler for letter in letters.list(event_type="Note")] == [handler_name(Reader)]
    assert letters.list(event_type="tests.unit.test_dead_letters_api:Note") == letters.list(event_type="Note")
    assert letters.list(handler="Courier", event_type="Note") == []
    assert letters.list(handler="ourier") == []  # a name, not a substring
    assert len(letters.list(limit=2)) == 2
    assert letters.list(queues=["events"]) == letters.list(event_type="Note")
    # A StubBroker keeps no time: an age filter selects none of its dead letters.
    assert letters.list(older_than=0) == []

    assert letters.purge(parcels[:1], dry_run=True) == tuple(parcels[:1])
    assert len(letters.list()) == 3
    assert letters.purge(parcels[:1]) == tuple(parcels[:1])
    assert letters.list() == [letter for letter in everything if letter != parcels[0]]
    drain()
    assert HANDLED == []


def test_with_a_key_only_a_dead_letter_whose_signature_verifies_is_replayed(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    configured(bus, secret_key=SECRET)
    BROKEN.add("p1")
    bus.publish(Parcel("p1"))
    forged = Message(
        queue_name="events",
        actor_name=handler_name(Reader),
        args=(bus.config.codec.encode(Note("forged")),),
        kwargs={},
        options={"event_type": "tests.unit.test_dead_letters_api:Note", "partition_key": None},
    )
    bus.broker.enqueue(forged)
    drain()
    letters = DeadLetters(bus)
    by_id = {letter.message_id: letter for letter in letters.list()}
    refused = by_id[forged.message_id]
    assert refused.last_failure == "refused: it is not signed, and this worker has a secret key"
    assert refused.attempts == 0

    BROKEN.clear()
    outcome = letters.replay(by_id.values())
    [(letter, reason)] = outcome.refused
    assert letter == refused
    assert reason.startswith("it is not signed, and this worker has a secret key. Only a message the bus's key signed")
    assert "purge it" in reason
    [genuine] = outcome.replayed
    [sent] = queued(bus, "events_partitioned")
    assert Signer((SECRET.encode(),)).problem(sent) is None  # signed again, under its new id
    assert sent.options[OPTION] != genuine.message.options[OPTION]  # type: ignore[union-attr]
    drain()
    assert HANDLED == ["p1"]  # the worker, with the key, ran the replay; the forged one is still there
    assert [letter.message_id for letter in letters.list()] == [forged.message_id]


def test_an_option_the_bus_never_writes_is_refused_without_a_key_too(bus: EventBus, drain: Callable[[], None]) -> None:
    configured(bus)
    forged = Message(
        queue_name="events",
        actor_name=handler_name(Reader),
        args=(bus.config.codec.encode(Note("n1")),),
        kwargs={},
        options={"on_success": "some_actor"},
    )
    bus.broker.enqueue(forged)
    drain()
    letters = DeadLetters(bus)
    [letter] = letters.list()
    assert letter.last_failure is not None and "on_success" in letter.last_failure
    outcome = letters.replay([letter])
    assert outcome.replayed == () and "on_success" in outcome.refused[0][1]


def test_a_dead_letter_of_a_body_that_cannot_be_read_is_listed_and_never_replayed(bus: EventBus) -> None:
    configured(bus)
    letters = DeadLetters(bus)
    unreadable = letters._letter("events", ("loc-1", b'{"not": "an envelope"}\x1b', 23, 1_000.0), now=1_010.0)
    assert not unreadable.readable and unreadable.message_id is None
    assert unreadable.problem is not None and unreadable.problem.startswith("its envelope cannot be decoded")
    assert unreadable.age_seconds == 10.0
    too_large = letters._letter("events", ("loc-2", None, 2 << 20, None), now=0.0)
    assert too_large.problem == "it is 2,097,152 bytes, more than max_message_bytes (1,048,576), and was not read"
    outcome = letters.replay([unreadable, too_large])
    assert [reason.split(" (")[0] for _, reason in outcome.refused] == ["it cannot be read"] * 2
    with pytest.raises(Exception, match="holds no event the bus can read"):
        letters.event(unreadable)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"limit": 0}, "limit must be a whole number of at least 1, not 0"),
        ({"older_than": -1}, "older_than must be a number of seconds of at least 0, not -1"),
    ],
)
def test_a_selection_that_cannot_be_is_a_configuration_error(
    bus: EventBus, arguments: dict[str, Any], problem: str
) -> None:
    configured(bus)
    with pytest.raises(ConfigurationError, match=problem):
        DeadLetters(bus).list(**arguments)


def test_an_unconfigured_bus_says_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match=r"call dramatiq_eventbus\.configure"):
        DeadLetters(EventBus())


def test_a_replay_says_which_dead_letters_it_found_nothing_to_remove_of(
    bus: EventBus, drain: Callable[[], None]
) -> None:
    configured(bus)
    BROKEN.add("n1")
    bus.publish(Note("n1"))
    drain()
    letters = DeadLetters(bus)
    [letter] = letters.list()
    letters.purge([letter])  # by someone else, meanwhile
    BROKEN.clear()
    outcome = letters.replay([letter])
    assert outcome.replayed == outcome.not_removed == (letter,)
