"""The bus encodes the messages it sends to the same bytes as Dramatiq's ``Message.encode``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.encoder import PickleEncoder
from dramatiq.message import Message

from dramatiq_eventbus.brokers.sending import MESSAGE_FIELDS, encoded


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


def test_dramatiqs_message_has_the_fields_the_bus_writes() -> None:
    # When this fails, encoded() falls back to message.encode(): correct, and 4 µs slower.
    assert tuple(field.name for field in dataclasses.fields(Message)) == MESSAGE_FIELDS


@pytest.mark.usefixtures("pickling")
def test_another_encoder_is_dramatiqs_to_use() -> None:
    message = a_bus_message()
    assert encoded(message) == message.encode()
    assert Message.decode(encoded(message)) == message


def test_a_subclass_of_message_encodes_itself() -> None:
    @dataclasses.dataclass(frozen=True)
    class Tagged(Message[Any]):
        def encode(self) -> bytes:
            return b"tagged"

    tagged = Tagged(queue_name="q", actor_name="a", args=(), kwargs={}, options={})
    assert encoded(tagged) == b"tagged"
