"""No secret reaches a log line, an error or a repr: passwords in URLs (query strings too), keys."""

from __future__ import annotations

import logging

import pytest
from dramatiq.broker import MessageProxy
from dramatiq.message import Message

from dramatiq_eventbus import ConfigurationError, EventBus
from dramatiq_eventbus.brokers.urls import redact
from dramatiq_eventbus.environment import arguments_from_env
from dramatiq_eventbus.middleware import DeadLetterReasons
from dramatiq_eventbus.transactions import RelaySettings

from .handlers import HANDLERS

SECRET = "s3cret-0123456789abcdef"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SECRET}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (f"amqp://guest:{SECRET}@h:5672/%2F", "amqp://guest:***@h:5672/%2F"),
        (f"redis://127.0.0.1:6379/0?password={SECRET}", "redis://127.0.0.1:6379/0?password=***"),
        (f"redis://h/0?db=1&password={SECRET}&x=y", "redis://h/0?db=1&password=***&x=y"),
        (f"postgresql://u@h/db?sslpassword={SECRET}", "postgresql://u@h/db?sslpassword=***"),
        (f"amqps://h/?token={SECRET}", "amqps://h/?token=***"),
        ("redis://127.0.0.1:6379/0?db=2", "redis://127.0.0.1:6379/0?db=2"),
    ],
)
def test_redact_hides_passwords_in_the_user_part_and_the_query(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_configuration_repr_shows_no_key_nor_password() -> None:
    bus = EventBus().configure(handlers=HANDLERS, broker="stub", codec="pickle", secret_key=SECRET)
    assert SECRET not in repr(bus.config)
    assert SECRET not in repr(bus.config.codec)


def test_the_relay_settings_repr_shows_no_database_password() -> None:
    settings = RelaySettings(url=f"postgresql+psycopg://app:{SECRET}@127.0.0.1/db")
    assert SECRET not in repr(settings)
    assert "app:***@127.0.0.1" in repr(settings)


def test_a_dead_letter_line_escapes_and_cuts_what_the_message_says(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus().configure(handlers=HANDLERS, broker="stub")
    forged = Message(
        queue_name="events",
        actor_name="tests.unit.handlers.NotifyHandler",
        args=({},),
        kwargs={},
        options={"event_type": "x\n[CRITICAL] forged record" + "y" * 10_000, "partition_key": "k" * 10_000},
    )
    message = MessageProxy(forged)
    message.fail()
    with caplog.at_level(logging.ERROR):
        DeadLetterReasons(None).after_process_message(bus.broker, message, exception=ValueError("z" * 10_000))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line
    assert len(line) < 1_000


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"secret_key": "short"}, "secret key 1 has 5 bytes, fewer than 16"),
        ({"secret_keys": [SECRET, b"tiny"]}, "secret key 2 has 4 bytes, fewer than 16"),
        ({"secret_key": SECRET, "secret_keys": [SECRET]}, "give secret_key or secret_keys, not both"),
        ({"secret_keys": SECRET}, "secret_keys must be a list of keys"),
    ],
)
def test_keys_too_short_or_given_twice_are_refused_at_configure(arguments: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        EventBus().configure(handlers=HANDLERS, broker="stub", **arguments)  # type: ignore[arg-type]


def test_the_keys_variable_is_a_comma_separated_rotation() -> None:
    arguments = arguments_from_env({"EVENTBUS_HANDLERS": "x:Y", "EVENTBUS_SECRET_KEYS": f" {SECRET} , old-{SECRET} "})
    assert arguments["secret_keys"] == [SECRET, f"old-{SECRET}"]


def test_a_message_signed_with_any_key_of_a_rotation_verifies_and_an_altered_one_does_not() -> None:
    old = EventBus().configure(handlers=HANDLERS, broker="stub", secret_key=f"old-{SECRET}")
    rotating = EventBus().configure(handlers=HANDLERS, broker="stub", secret_keys=[SECRET, f"old-{SECRET}"])
    message = Message(queue_name="events", actor_name="a.B", args=({"x": 1},), kwargs={}, options={"lane": None})
    assert old.config.signer is not None and rotating.config.signer is not None
    signed = old.config.signer.signed(message)
    assert rotating.config.signer.problem(signed) is None
    assert rotating.config.signer.problem(signed.copy(queue_name="events.DQ")) is None  # a retry waiting
    altered = signed.copy(args=({"x": 2},))
    assert "signature is wrong" in str(rotating.config.signer.problem(altered))
    unsigned = Message(queue_name="events", actor_name="a.B", args=({"x": 1},), kwargs={}, options={})
    assert "not signed" in str(rotating.config.signer.problem(unsigned))


@pytest.mark.parametrize("limit", [10, 1023, "1MB", True])
def test_a_message_size_limit_that_is_not_a_number_of_bytes_is_refused(limit: object) -> None:
    with pytest.raises(ConfigurationError, match="max_message_bytes must be a whole number of bytes of at least 1024"):
        EventBus().configure(handlers=HANDLERS, broker="stub", max_message_bytes=limit)  # type: ignore[arg-type]
