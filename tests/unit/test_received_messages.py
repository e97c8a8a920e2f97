"""The messages the bus's consumers hand to Dramatiq's worker render bounded in str() and repr(),
and are Dramatiq messages in every other way.

Dramatiq's lines quote a message whole (``Failed to process message %s ...``, ``Message %s was
skipped.``) and name it by ``%r`` of its id (AgeLimit's, Retries'): a plain Message put a
whole payload, up to max_message_bytes, and a forged id of any length into each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from typing import Any

import pytest
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from dramatiq_eventbus.brokers.inspection import ReceivedId, ReceivedMessage, holding_fields, inspect_body
from dramatiq_eventbus.untrusted import briefly

#: A payload of about 1 MiB, newlines and an escape sequence in it.
PAYLOAD = {"$type": "x:Y", "text": "a line\n\x1b[2J" * 80_000, "numbers": list(range(20_000))}
FORGED_ID = "id\n" * 100_000
BOUND = 2_000


class Actor:
    """What inspect_body() reads of an actor: its function and options."""

    options: dict[str, Any] = {}

    @staticmethod
    def fn(payload: Any) -> None:
        pass


def received(**fields: Any) -> Message[Any]:
    envelope = {
        "queue_name": "q",
        "actor_name": "a.Handler",
        "args": [PAYLOAD],
        "kwargs": {},
        "options": {"event_type": "x:Y", "forged": "o" * 100_000},
        "message_id": FORGED_ID,
        "message_timestamp": 1,
        **fields,
    }
    message = inspect_body(json.dumps(envelope).encode(), {"a.Handler": Actor()}, "q", max_bytes=4 << 20)
    assert isinstance(message, ReceivedMessage), message
    return message


def assert_bounded(text: str) -> None:
    assert len(text) <= BOUND, len(text)
    assert text.isprintable(), "a newline or an escape sequence came through"


def test_str_and_repr_of_a_received_message_and_of_its_proxy_are_bounded_and_escaped() -> None:
    message = received()
    for text in (str(message), repr(message), str(MessageProxy(message)), repr(MessageProxy(message))):
        assert_bounded(text)
    assert str(message).startswith("a.Handler({'$type': 'x:Y', 'text': 'a line\\n\\x1b[2J")


def test_its_id_is_the_same_string_whose_repr_is_bounded() -> None:
    message = received()
    assert isinstance(message.message_id, ReceivedId)
    assert message.message_id == FORGED_ID and hash(message.message_id) == hash(FORGED_ID)
    line = "Message %r has exceeded its age limit."  # AgeLimit's
    assert_bounded(logging.LogRecord("age", logging.WARNING, "", 0, line, (message.message_id,), None).getMessage())
    ordinary = received(message_id="0b1c7e6e-3f4c-4a58-9b8e-5a8c2a1d9c3e")
    assert repr(ordinary.message_id) == repr("0b1c7e6e-3f4c-4a58-9b8e-5a8c2a1d9c3e")


def test_it_encodes_to_the_same_bytes_and_equals_the_plain_message_both_ways() -> None:
    message = received()
    plain: Message[Any] = Message(**message.asdict())
    assert message.encode() == plain.encode()
    assert json.loads(message.encode())["message_id"] == FORGED_ID
    assert message == plain and plain == message
    assert message != dataclasses.replace(plain, message_id="another")
    assert MessageProxy(message) == plain


def test_copy_and_replace_keep_it_bounded() -> None:
    # Retries and the dead-letter middleware copy it; the Redis consumer adds its redis_message_id.
    message = received()
    copied = message.copy(options={"retries": 1}, message_id="x" * 100_000)
    assert type(copied) is ReceivedMessage and type(copied.message_id) is ReceivedId
    assert copied.options["retries"] == 1 and copied.options["forged"] == message.options["forged"]
    assert_bounded(repr(copied))
    assert_bounded(repr(copied.message_id))
    assert copied.args == message.args


def test_it_pickles_as_it_is() -> None:
    message = received()
    again = pickle.loads(pickle.dumps(message))
    assert type(again) is ReceivedMessage and type(again.message_id) is ReceivedId
    assert again == message


@pytest.mark.parametrize("args", [(), ({"n": 1, "text": "short"},), (1, "two", None)])
def test_a_small_message_renders_as_dramatiqs_with_its_id(args: tuple[Any, ...]) -> None:
    message = ReceivedMessage(queue_name="q", actor_name="a.Handler", args=args, kwargs={}, options={})
    assert str(message) == f"{Message(**message.asdict())} (id {message.message_id!r})"


@pytest.mark.parametrize(
    "value",
    [
        "s" * 1_000_000,
        list(range(1_000_000)),
        {str(n): n for n in range(100_000)},
        [[[[["deep"]]]]],
        10**4000,
    ],
    ids=["string", "list", "dict", "nested", "int"],
)
def test_briefly_is_bounded_whatever_the_value(value: object) -> None:
    assert_bounded(briefly(value))


def test_a_proxy_holds_its_message_fields_and_one_without_a_dict_is_left_as_it_is() -> None:
    # The consumers' proxies hold the fields (holding_fields): Dramatiq's reads each through
    # __getattr__. A proxy class with no __dict__ (a Dramatiq to come) must not fail delivery.
    message = received()
    proxy = holding_fields(MessageProxy(message), message)
    assert vars(proxy)["options"] is message.options and vars(proxy)["checked"] is message.checked is False

    class Slotted:
        __slots__ = ("message",)

    slotted: Any = Slotted()
    assert holding_fields(slotted, message) is slotted
