"""configure(): every input resolved and checked at once, with an error naming the bad entry."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

import dramatiq_eventbus as eventbus
from dramatiq_eventbus import ConfigurationError, EventBus, EventBusError
from dramatiq_eventbus.environment import VARIABLES, arguments_from_env

from .handlers import (
    HANDLERS,
    JOURNAL,
    AuditHandler,
    DuckHandler,
    FinanceHandler,
    NoHandleEvent,
    NotifyHandler,
    OrderCreated,
    OrderShipped,
)


def configure_error(bus: EventBus, **arguments: Any) -> str:
    arguments.setdefault("broker", StubBroker())
    with pytest.raises(ConfigurationError) as raised:
        bus.configure(**arguments)
    assert isinstance(raised.value, EventBusError)
    return str(raised.value)


def test_handlers_may_be_classes_strings_or_a_string_naming_the_mapping(bus: EventBus) -> None:
    bus.configure(handlers={OrderCreated: [FinanceHandler, "tests.unit.handlers:NotifyHandler"]}, broker="stub")
    assert [s.handler_class for s in bus.config.registry.handlers_for(OrderCreated)] == [FinanceHandler, NotifyHandler]

    bus.configure(handlers="tests.unit.handlers:HANDLERS", broker="stub")
    assert [s.handler_class for s in bus.config.registry.handlers_for(OrderCreated)] == [
        FinanceHandler,
        NotifyHandler,
        AuditHandler,
    ]
    assert [s.handler_class for s in bus.config.registry.handlers_for(OrderShipped)] == [NotifyHandler]


def test_a_handler_need_not_subclass_handler(bus: EventBus) -> None:
    bus.configure(handlers={OrderCreated: [DuckHandler]}, broker="stub", backend="inline")
    JOURNAL.clear()
    bus.publish(OrderCreated("1", Decimal("1")))
    assert JOURNAL.of("duck") == [OrderCreated("1", Decimal("1"))]


@pytest.mark.parametrize(
    ("handlers", "expected"),
    [
        ({"tests.unit.handlers:Nope": [NotifyHandler]}, "module 'tests.unit.handlers' has no attribute 'Nope'"),
        ({"no_such_module.events:X": [NotifyHandler]}, "cannot import 'no_such_module.events:X'"),
        ({"tests.unit.handlers.OrderCreated": [NotifyHandler]}, "not an import path of the form 'pkg.module:Name'"),
        ({OrderCreated: ["tests.unit.handlers:Missing"]}, "has no attribute 'Missing'"),
        ({OrderCreated: [NoHandleEvent]}, "tests.unit.handlers.NoHandleEvent has no handle_event(event) method"),
        ({42: [NotifyHandler]}, "event 42 is not a class"),
        ({"tests.unit.handlers:JOURNAL": [NotifyHandler]}, "is not a class"),
        ({OrderCreated: [NotifyHandler()]}, "is not a class"),
        ({OrderCreated: NotifyHandler}, "must be a list of handler classes"),
        ({OrderCreated: "tests.unit.handlers:NotifyHandler"}, "must be a list of handler classes"),
        ({OrderCreated: [NotifyHandler, NotifyHandler]}, "listed twice"),
        ([OrderCreated], "handlers must be a mapping"),
        ("tests.unit.handlers:JOURNAL", "must name a dict of event class to handlers"),
    ],
)
def test_bad_handlers_are_named(bus: EventBus, handlers: Any, expected: str) -> None:
    assert expected in configure_error(bus, handlers=handlers)


def make_handler(options: Any) -> type:
    return type("Configured", (NotifyHandler,), {"actor_options": options, "__module__": __name__})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"priority": 10}, "priority must be an int from 0 to 9 (lower is more urgent), not 10"),
        ({"priority": -1}, "priority must be an int from 0 to 9"),
        ({"priority": "high"}, "priority must be an int from 0 to 9"),
        ({"priority": True}, "priority must be an int from 0 to 9"),
        ({"max_attempts": 5}, "unknown actor option 'max_attempts'; known options are"),
        ({"max_retries": -1}, "max_retries must be a non-negative int, not -1"),
        ({"time_limit": "1s"}, "time_limit must be a non-negative int"),
        ("nope", "actor_options must be a dict"),
    ],
)
def test_bad_actor_options_are_named(bus: EventBus, options: Any, expected: str) -> None:
    message = configure_error(bus, handlers={OrderCreated: [make_handler(options)]})
    assert f"{__name__}.Configured" in message
    assert expected in message


def test_bad_default_actor_options_are_named(bus: EventBus) -> None:
    message = configure_error(bus, handlers=HANDLERS, default_actor_options={"retries": 3})
    assert "default actor options: unknown actor option 'retries'" in message


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"broker": "kafka://localhost"}, "broker URL 'kafka://localhost' is not supported"),
        ({"broker": "amqp://user:hunter2@host:5672/x?bad"}, None),
        ({"broker": 42}, "broker must be a URL string, 'stub' or a dramatiq Broker, not int"),
        ({"backend": "sqs"}, "backend must be one of 'dramatiq', 'inline'"),
        ({"codec": "xml"}, "codec must be one of"),
        ({"queue": "bad queue"}, "queue 'bad queue' is not a valid queue name"),
        ({"queue": "same", "partitioned_queue": "same"}, "must differ"),
        ({"broker": "redis://h", "redis_heartbeat_seconds": 0}, "redis_heartbeat_seconds must be a positive number"),
        ({"lane_lease_seconds": -1}, "lane_lease_seconds and lane_stall_seconds must be positive numbers"),
        ({"lane_prefix": "my app"}, "lane_prefix must be 1 to 64 letters, digits, '_', '.' or '-', in words"),
        ({"lane_prefix": ""}, "e.g. 'shop:eventbus'; not ''"),
        ({"lane_prefix": "shop:lane"}, "(none of them 'lane')"),
        ({"lane_prefix": "x" * 65}, "lane_prefix must be 1 to 64"),
    ],
)
def test_bad_settings_are_named(bus: EventBus, arguments: Any, expected: str | None) -> None:
    if expected is None:  # a valid URL: the password must never show in an error of ours
        bus.configure(handlers=HANDLERS, **arguments)
        return
    arguments.setdefault("broker", "stub")
    assert expected in configure_error(bus, handlers=HANDLERS, **arguments)


def test_an_unsupported_url_hides_its_password(bus: EventBus) -> None:
    message = configure_error(bus, handlers=HANDLERS, broker="kafka://user:hunter2@host")
    assert "hunter2" not in message
    assert "kafka://user:***@host" in message


def test_brokers_from_urls(bus: EventBus) -> None:
    # Neither broker connects before its first use, so no server is needed here.
    bus.configure(handlers=HANDLERS, broker="redis://127.0.0.1:6379/3")
    assert isinstance(bus.broker, RedisBroker)
    assert bus.broker.heartbeat_timeout == 60_000
    bus.configure(handlers=HANDLERS, broker="redis://127.0.0.1:6379/3", redis_heartbeat_seconds=2.5)
    assert isinstance(bus.broker, RedisBroker)
    assert bus.broker.heartbeat_timeout == 2_500
    bus.configure(handlers=HANDLERS, broker="amqp://guest:guest@127.0.0.1:5672/")
    assert isinstance(bus.broker, RabbitmqBroker)
    assert bus.broker.confirm_delivery is True
    assert bus.broker.max_priority == 10
    bus.configure(handlers=HANDLERS, broker="stub")
    assert isinstance(bus.broker, StubBroker)
    mine = StubBroker()
    bus.configure(handlers=HANDLERS, broker=mine)
    assert bus.broker is mine


def test_default_broker_comes_from_the_environment_then_dramatiq(bus: EventBus, monkeypatch: Any) -> None:
    monkeypatch.setenv("EVENTBUS_BROKER_URL", "stub")
    bus.configure(handlers=HANDLERS)
    assert isinstance(bus.broker, StubBroker)
    monkeypatch.delenv("EVENTBUS_BROKER_URL")
    global_broker = StubBroker()
    monkeypatch.setattr(dramatiq.broker, "global_broker", global_broker)
    bus.configure(handlers=HANDLERS)
    assert bus.broker is global_broker


def test_configure_again_replaces_the_configuration(bus: EventBus) -> None:
    broker = StubBroker()
    bus.configure(handlers={OrderCreated: [FinanceHandler]}, broker=broker)
    bus.configure(handlers={OrderCreated: [NotifyHandler]}, broker=broker)
    assert [s.handler_class for s in bus.config.registry.handlers_for(OrderCreated)] == [NotifyHandler]
    assert "tests.unit.handlers.NotifyHandler" in broker.actors


def test_a_failed_configure_keeps_the_previous_one(bus: EventBus) -> None:
    bus.configure(handlers=HANDLERS, broker="stub")
    before = bus.config
    configure_error(bus, handlers={OrderCreated: [NoHandleEvent]})
    assert bus.config is before


def test_reconfigure_keeps_earlier_arguments(bus: EventBus) -> None:
    bus.configure(handlers=HANDLERS, broker="stub", queue="q1", partitioned_queue="q1p")
    bus.reconfigure(backend="inline")
    assert bus.config.queues.default == "q1"
    assert bus.config.arguments["backend"] == "inline"


def test_module_level_configure_sets_dramatiqs_global_broker(monkeypatch: Any) -> None:
    monkeypatch.setattr(dramatiq.broker, "global_broker", None)
    bus = eventbus.configure(handlers=HANDLERS, broker="stub")
    assert bus is eventbus.default_bus
    assert dramatiq.get_broker() is bus.broker


def test_configure_from_env(monkeypatch: Any) -> None:
    monkeypatch.setenv("EVENTBUS_HANDLERS", "tests.unit.handlers:HANDLERS")
    monkeypatch.setenv("EVENTBUS_BROKER_URL", "stub")
    monkeypatch.setenv("EVENTBUS_BACKEND", "inline")
    monkeypatch.setenv("EVENTBUS_QUEUE", "env_events")
    monkeypatch.setenv("EVENTBUS_PARTITIONED_QUEUE", "env_events_p")
    monkeypatch.setenv("EVENTBUS_DEFAULT_ACTOR_OPTIONS", '{"max_retries": 7}')
    monkeypatch.setenv("EVENTBUS_LANE_PREFIX", "shop:eventbus")
    bus = eventbus.configure_from_env()
    assert bus.config.arguments["lane_prefix"] == "shop:eventbus"
    assert bus.config.queues.default == "env_events"
    assert bus.config.queues.partitioned == "env_events_p"
    assert bus.config.arguments["backend"] == "inline"
    assert bus.config.registry.handlers_for(OrderShipped)[0].actor_options["max_retries"] == 7
    # A handler's own options win over the defaults.
    assert bus.config.registry.handlers_for(OrderCreated)[0].actor_options["max_retries"] == 9


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "EVENTBUS_HANDLERS is not set"),
        ({"EVENTBUS_HANDLERS": "  "}, "EVENTBUS_HANDLERS is set but empty"),
        ({"EVENTBUS_HANDLERS": "a:b", "EVENTBUS_DEFAULT_ACTOR_OPTIONS": "{nope"}, "must be a JSON object"),
        ({"EVENTBUS_HANDLERS": "a:b", "EVENTBUS_DEFAULT_ACTOR_OPTIONS": "[1]"}, "must be a JSON object, not list"),
        ({"EVENTBUS_HANDLERS": "a:b", "EVENTBUS_PICKLE_FALLBACK": "maybe"}, "must be true or false"),
        ({"EVENTBUS_HANDLERS": "a:b", "EVENTBUS_LANE_LEASE_SECONDS": "soon"}, "must be a number of seconds"),
        ({"EVENTBUS_HANDLERS": "a:b", "EVENTBUS_REDIS_HEARTBEAT_SECONDS": "0"}, "must be more than 0 seconds"),
    ],
)
def test_bad_environment_is_named(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected.replace("(", r"\(")):
        arguments_from_env(environ)


def test_every_variable_is_documented_in_the_manual() -> None:
    from pathlib import Path

    # The configuration table moved from the README to the manual's deployment guide.
    guide = (Path(__file__).parents[2] / "docs" / "guides" / "deployment.md").read_text()
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in guide]
    assert not missing, f"docs/guides/deployment.md does not document {missing}"


def test_the_worker_module_configures_itself_from_the_environment() -> None:
    code = (
        "import dramatiq, dramatiq_eventbus.worker as w\n"
        "assert dramatiq.get_broker() is w.broker\n"
        "print(sorted(w.broker.get_declared_queues()))\n"
        "print(sorted(w.broker.actors))\n"
    )
    env = {"EVENTBUS_HANDLERS": "tests.unit.handlers:HANDLERS", "EVENTBUS_BROKER_URL": "stub", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    queues, actors = out.splitlines()
    assert queues == "['events', 'events.DQ', 'events_partitioned', 'events_partitioned.DQ']"
    assert actors == str(
        sorted(f"tests.unit.handlers.{name}" for name in ("FinanceHandler", "NotifyHandler", "AuditHandler"))
    )
