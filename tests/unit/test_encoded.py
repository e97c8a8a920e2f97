"""The bus encodes the messages it sends to the same bytes as Dramatiq's ``Message.encode``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.encoder import PickleEncoder
from dramatiq.message import Message

from dramatiq_eventbus.brokers.sending import MESSAGE_FIELDS, encoded, encoded_all


def a_bus_message() -> Message[Any]:
    return Message(
        queue_name="events",
        actor_name="orders.OnPaid",
        args=({"__event__": "orders.Paid", "total": "12.50", "lines": [1, 2, {"é": None}]},),
        kwargs={},
        options={"event_type": "orders.Paid", "partition_key": None, "broker_priority": 4, "trace": {"a": "b"}},
    )


@pytest.fixture
def pickling() -> Iterator[None]:
    before = dramatiq.get_encoder()
    dramatiq.set_encoder(PickleEncoder())
    yield
    dramatiq.set_encoder(before)


def test_a_message_is_encoded_as_dramatiq_encodes_it() -> None:
    message = a_bus_message()
    assert encoded(message) == message.encode()


def a_fan_out(payload: dict[str, Any], handlers: int = 3) -> list[Message[Any]]:
    """One event's messages to several handlers: the same argument object in each."""
    return [
        Message(
            queue_name=f"events-{n}",
            actor_name=f"orders.On{n}",
            args=(payload,),
            kwargs={},
            options={"event_type": "orders.Paid", "redis_message_id": f"id-{n}", "n": n, "lane": None},
        )
        for n in range(handlers)
    ]


def test_a_batch_is_encoded_as_dramatiq_encodes_each_message() -> None:
    payload = {"__event__": "orders.Paid", "total": 12.5, "lines": [1, 2, {"é": None}], "note": 'naïve \u2028 "q"'}
    messages = a_fan_out(payload) + a_fan_out({"__event__": "orders.Refunded", "total": -1}, handlers=2)
    assert encoded_all(messages) == [message.encode() for message in messages]


def test_messages_of_different_events_keep_their_own_payloads() -> None:
    first, second = a_fan_out({"order": "A"}, handlers=2), a_fan_out({"order": "B"}, handlers=2)
    bodies = encoded_all([first[0], second[0], first[1], second[1]])
    assert [Message.decode(body).args[0]["order"] for body in bodies] == ["A", "B", "A", "B"]


def test_a_message_the_batch_cannot_write_field_by_field_is_encoded_whole() -> None:
    unusual = [
        Message(queue_name="q", actor_name="a", args=(1, 2), kwargs={}, options={}),
        Message(queue_name="q", actor_name="a", args=({"x": 1},), kwargs={"k": "v"}, options={}),
        Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}),
        Message(queue_name="q", actor_name="a", args=(None,), kwargs={}, options={}, message_timestamp=True),
        Message(queue_name="ü", actor_name="ä\n", args=("s",), kwargs={}, options={"ö": [1.0, None]}),
    ]
    assert encoded_all(unusual) == [message.encode() for message in unusual]


def test_dramatiqs_message_has_the_fields_the_bus_writes() -> None:
    # When this fails, encoded() falls back to message.encode(): correct, and 4 µs slower.
    assert tuple(field.name for field in dataclasses.fields(Message)) == MESSAGE_FIELDS


@pytest.mark.usefixtures("pickling")
def test_another_encoder_is_dramatiqs_to_use() -> None:
    message = a_bus_message()
    assert encoded(message) == message.encode()
    assert Message.decode(encoded(message)) == message
    fan_out = a_fan_out({"a": 1})
    assert encoded_all(fan_out) == [m.encode() for m in fan_out]


def test_a_subclass_of_message_encodes_itself() -> None:
    @dataclasses.dataclass(frozen=True)
    class Tagged(Message[Any]):
        def encode(self) -> bytes:
            return b"tagged"

    tagged = Tagged(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    assert encoded(tagged) == b"tagged"
    assert encoded_all([tagged]) == [b"tagged"]
