"""The Django app under pytest-django, run by test_app.py as ``pytest --ds=tests.django_app.settings <this file>``.

Not named test_*.py: the main suite runs without Django settings, and must not collect it.
The database is the real PostgreSQL, in an empty schema of the run's own (no test database is
made: ``django_db_setup`` is overridden), so a ``transaction=True`` test commits for real.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dramatiq
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, transaction
from django.test import override_settings
from django_dramatiq.middleware import DbConnectionsMiddleware

import dramatiq_eventbus
from dramatiq_eventbus.brokers import EventBusRedisBroker
from dramatiq_eventbus.contrib.django import apps as eventbus_apps
from dramatiq_eventbus.contrib.django import conf
from dramatiq_eventbus.contrib.django.checks import check_settings
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.errors import ConfigurationError, PublishError
from dramatiq_eventbus.testing import EventMailbox, set_event_bus_mode
from tests.django_app.handlers import Noted

bus = dramatiq_eventbus.default_bus


@pytest.fixture(scope="session")
def django_db_setup() -> None:
    """The real database, in the run's own empty schema (DJANGO_APP_SCHEMA): nothing to create."""


def noted(mailbox: EventMailbox) -> list[int]:
    return [event.n for event in mailbox.published_events() if isinstance(event, Noted)]


@pytest.fixture
def reconfigure() -> Iterator[Callable[..., None]]:
    """Configure the bus as the app does, with settings changed; the app's own configuration after."""
    config = eventbus_apps.app_config()
    assert config is not None

    def apply(**changes: Any) -> None:
        settings = conf.parse({**conf.from_django().raw, **changes}, databases={"default": {}, "other": {}})
        config.binding = eventbus_apps.configure(bus, settings, previous=config.binding)

    yield apply
    config.ready()


# -- transactions that really commit -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_publish_inside_atomic_is_handed_over_at_commit(event_bus: EventMailbox) -> None:
    with transaction.atomic():
        dramatiq_eventbus.publish(Noted(1))
        assert noted(event_bus) == []
    assert noted(event_bus) == [1]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_hands_over_nothing(event_bus: EventMailbox) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        dramatiq_eventbus.publish(Noted(1))
        raise RuntimeError("roll back")
    assert noted(event_bus) == []


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_savepoint_drops_only_its_own_events(event_bus: EventMailbox) -> None:
    with transaction.atomic():
        dramatiq_eventbus.publish(Noted(1))
        with pytest.raises(RuntimeError), transaction.atomic():
            dramatiq_eventbus.publish(Noted(2))
            raise RuntimeError("roll the savepoint back")
        with transaction.atomic():
            dramatiq_eventbus.publish(Noted(3))  # a released savepoint: joins the transaction
        dramatiq_eventbus.publish(Noted(4))
        assert noted(event_bus) == []
    assert noted(event_bus) == [1, 3, 4]


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_publish_is_sent_at_once(event_bus: EventMailbox) -> None:
    dramatiq_eventbus.publish(Noted(1))
    assert noted(event_bus) == [1]


@pytest.mark.django_db(transaction=True)
def test_a_deferred_block_inside_atomic_waits_for_its_exit_then_for_the_commit(event_bus: EventMailbox) -> None:
    with transaction.atomic():
        with dramatiq_eventbus.deferred():
            dramatiq_eventbus.publish(Noted(1))
        with pytest.raises(RuntimeError), dramatiq_eventbus.deferred():
            dramatiq_eventbus.publish(Noted(9))  # the block holds it, and drops it as it fails
            raise RuntimeError("fail the block, not the transaction")
        assert noted(event_bus) == []
    assert noted(event_bus) == [1]
    with dramatiq_eventbus.deferred():
        with transaction.atomic():
            dramatiq_eventbus.publish(Noted(2))
        assert noted(event_bus) == [1]  # committed, and now held by the deferred() block
    assert noted(event_bus) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_on_commit_false_sends_inside_a_transaction_at_once(
    event_bus: EventMailbox, reconfigure: Callable[..., None]
) -> None:
    reconfigure(ON_COMMIT=False)
    with pytest.raises(RuntimeError), transaction.atomic():
        dramatiq_eventbus.publish(Noted(1))
        assert noted(event_bus) == [1]
        raise RuntimeError("roll back")
    assert noted(event_bus) == [1]


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_only_the_database_named_by_the_setting_holds_events(
    event_bus: EventMailbox, reconfigure: Callable[..., None]
) -> None:
    with transaction.atomic(using="other"):
        dramatiq_eventbus.publish(Noted(1))
        assert noted(event_bus) == [1]  # the default database's transactions count, by default
    reconfigure(DATABASE="other")
    with transaction.atomic(using="default"):
        dramatiq_eventbus.publish(Noted(2))
        assert noted(event_bus) == [1, 2]
    with transaction.atomic(using="other"):
        dramatiq_eventbus.publish(Noted(3))
        assert noted(event_bus) == [1, 2]
    assert noted(event_bus) == [1, 2, 3]


class RefusingBackend:
    """A backend whose broker is down."""

    def deliver(self, deliveries: Sequence[Delivery]) -> None:
        raise PublishError("the broker is down")


@pytest.mark.django_db(transaction=True)
def test_a_broker_failure_at_commit_raises_from_the_block_after_the_commit(reconfigure: Callable[..., None]) -> None:
    reconfigure(BACKEND=RefusingBackend())
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
    with pytest.raises(PublishError, match="the broker is down"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO kept VALUES (1)")
        dramatiq_eventbus.publish(Noted(1))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM kept")
        assert cursor.fetchone() == (1,)  # committed: the events are what was lost


# -- TestCase-style tests: one transaction around the test, never committed ------------------


@pytest.mark.django_db
def test_in_a_test_transaction_events_wait_for_a_commit_that_never_comes(event_bus: EventMailbox) -> None:
    with transaction.atomic():
        dramatiq_eventbus.publish(Noted(1))
    assert noted(event_bus) == []


@pytest.mark.django_db
def test_capturing_on_commit_callbacks_shows_the_events_to_the_mailbox(
    event_bus: EventMailbox, django_capture_on_commit_callbacks: Any
) -> None:
    set_event_bus_mode("strict")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            dramatiq_eventbus.publish(Noted(1))
        with pytest.raises(RuntimeError), transaction.atomic():
            dramatiq_eventbus.publish(Noted(2))
            raise RuntimeError("roll back")
    assert len(callbacks) == 1
    event_bus.assert_published(Noted, n=1)
    assert noted(event_bus) == [1]


# -- the broker ----------------------------------------------------------------------------------


def test_the_bus_uses_django_dramatiqs_broker_without_a_warning(
    reconfigure: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    broker = dramatiq.get_broker()
    assert bus.broker is broker
    assert isinstance(broker, EventBusRedisBroker)
    assert any(isinstance(m, DbConnectionsMiddleware) for m in broker.middleware)  # built from DRAMATIQ_BROKER
    with caplog.at_level(logging.WARNING):
        reconfigure()
    assert bus.broker is broker
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- settings and checks -------------------------------------------------------------------------


def test_the_settings_keys_are_configures_arguments_in_upper_case() -> None:
    assert conf.CONFIGURE_KEYS["BROKER_URL"] == "broker"
    assert conf.CONFIGURE_KEYS["SECRET_KEYS"] == "secret_keys"
    settings = conf.parse(
        {"HANDLERS": "x:Y", "MAX_MESSAGE_BYTES": 2048, "ON_COMMIT": False, "HANDLER_FACTORY": "builtins:object"}
    )
    assert settings.arguments == {"handlers": "x:Y", "max_message_bytes": 2048, "handler_factory": object}
    assert (settings.on_commit, settings.outbox, settings.database) == (False, False, "default")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"HANDLERS": "x:Y", "QUEUES": "q"}, "unknown key 'QUEUES'"),
        ({"HANDLERS": "x:Y", "ON_COMMIT": "yes"}, "['ON_COMMIT'] must be True or False, not str"),
        ({"HANDLERS": "x:Y", "LANE_LEASE_SECONDS": True}, "must be a number of seconds, not bool"),
        ({"HANDLERS": "x:Y", "DATABASE": "elsewhere"}, "'elsewhere', which is not in settings.DATABASES"),
        ({"QUEUE": "q"}, "has no 'HANDLERS'"),
        (
            {"HANDLERS": "x:Y", "SECRET_KEYS": "s3cr3t-s3cr3t-s3cr3t"},
            "['SECRET_KEYS'] must be a list of str or bytes, not str.",
        ),
        ("x:Y", "must be a dict, not str"),
    ],
)
def test_a_wrong_setting_is_a_check_error_and_a_configuration_error(setting: object, expected: str) -> None:
    with override_settings(EVENTBUS=setting):
        messages = check_settings()
    assert any(expected in m.msg for m in messages), [m.msg for m in messages]
    assert not any("s3cr3t" in m.msg for m in messages)
    with pytest.raises(ConfigurationError, match=expected.replace("[", r"\[").replace("(", r"\(")):
        conf.parse(setting, databases={"default": {}})


def test_an_unknown_key_gets_a_did_you_mean() -> None:
    with override_settings(EVENTBUS={"HANDLERS": "x:Y", "SECRET_KYE": "k" * 20}):
        (message,) = check_settings()
    assert message.id == "dramatiq_eventbus.E002"
    assert message.hint == "Did you mean 'SECRET_KEY'?"


def test_a_broker_url_beside_django_dramatiq_is_an_error() -> None:
    with override_settings(EVENTBUS={"HANDLERS": "x:Y", "BROKER_URL": "redis://127.0.0.1"}):
        (message,) = check_settings()
    assert message.id == "dramatiq_eventbus.E005"


def test_an_outbox_asked_for_without_its_module_fails_configuration(
    monkeypatch: pytest.MonkeyPatch, reconfigure: Callable[..., None]
) -> None:
    monkeypatch.setitem(sys.modules, "dramatiq_eventbus.contrib.django.outbox", None)
    with pytest.raises(ConfigurationError, match="asks for the Django outbox, which cannot be loaded"):
        reconfigure(OUTBOX=True)


def test_manage_py_check_passes_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("check")
    assert "System check identified no issues" in capsys.readouterr().out


def test_manage_py_check_reports_handlers_that_do_not_import(reconfigure: Callable[..., None]) -> None:
    config = eventbus_apps.app_config()
    assert config is not None
    with override_settings(EVENTBUS={"HANDLERS": "tests.django_app.no_such_module:HANDLERS"}):
        config.ready()  # as at start: the error is kept, Django starts
        assert isinstance(config.error, ConfigurationError)
        with pytest.raises(SystemCheckError) as failure:
            call_command("check")
    message = str(failure.value)
    assert "(dramatiq_eventbus.E004) The event bus could not be configured from settings.EVENTBUS: " in message
    assert "cannot import 'tests.django_app.no_such_module:HANDLERS'" in message


def test_manage_py_eventbus_passes_the_setting_as_eventbus_variables() -> None:
    from django.core.management.base import CommandError

    from dramatiq_eventbus.contrib.django.management.commands.eventbus import variables

    given = variables(
        {
            "handlers": "x:Y",
            "secret_keys": ["k" * 16, b"j" * 16],
            "pickle_fallback": True,
            "default_actor_options": {"max_retries": 1},
            "lane_lease_seconds": 2.5,
            "redis_heartbeat_seconds": None,
        },
        shared_broker=True,
    )
    assert {name: value for name, value in given.items() if value is not None} == {
        "EVENTBUS_HANDLERS": "x:Y",
        "EVENTBUS_SECRET_KEYS": f"{'k' * 16},{'j' * 16}",
        "EVENTBUS_PICKLE_FALLBACK": "true",
        "EVENTBUS_DEFAULT_ACTOR_OPTIONS": '{"max_retries": 1}',
        "EVENTBUS_LANE_LEASE_SECONDS": "2.5",
    }
    assert given["EVENTBUS_BROKER_URL"] is None  # unset: django_dramatiq's broker, the global one
    assert "EVENTBUS_BROKER_URL" not in variables({"handlers": "x:Y"}, shared_broker=False)
    with pytest.raises(CommandError, match=r"settings.EVENTBUS\['HANDLERS'\], a dict"):
        variables({"handlers": {Noted: []}}, shared_broker=True)
    with pytest.raises(CommandError, match=r"\['HANDLER_FACTORY'\], a function"):
        variables({"handlers": "x:Y", "handler_factory": lambda cls: cls()}, shared_broker=True)
