"""Configuration from ``EVENTBUS_*`` environment variables, for workers and twelve-factor apps."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError


@dataclass(frozen=True)
class Variable:
    """One environment variable and the configure() argument it sets.

    Parameters:
      name(str): The variable.
      argument(str): The configure() keyword it fills.
      parse(Callable[[str, str], Any]): Turns the text into the argument's value; takes the
        variable's name too, for the error message.
      help(str): One line for the README and ``--help``.
    """

    name: str
    argument: str
    parse: Callable[[str, str], Any]
    help: str


def _text(name: str, value: str) -> str:
    if not value.strip():
        raise ConfigurationError(f"{name} is set but empty")
    return value.strip()


def _json_object(name: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{name} must be a JSON object: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigurationError(f"{name} must be a JSON object, not {type(parsed).__name__}")
    return parsed


def _boolean(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def _comma_separated(name: str, value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ConfigurationError(f"{name} is set but holds no value")
    return items


def positive_seconds(name: str, value: str) -> float:
    """Parse a variable that holds a positive number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}") from None
    if not seconds > 0:
        raise ConfigurationError(f"{name} must be more than 0 seconds, not {value!r}")
    return seconds


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a whole number, not {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"{name} must be more than 0, not {value!r}")
    return number


def _port(name: str, value: str) -> int:
    number = _positive_int(name, value)
    if number > 65535:
        raise ConfigurationError(f"{name} must be a port number (1-65535), not {value!r}")
    return number


def _seconds_or_never(name: str, value: str) -> float | None:
    """A positive number of seconds, or None for ``0``: never."""
    if value.strip() == "0":
        return None
    return positive_seconds(name, value)


#: A table: its entries look alike by design.
VARIABLES: tuple[Variable, ...] = (
    Variable(
        "EVENTBUS_HANDLERS",
        "handlers",
        _text,
        "Required. 'pkg.module:ATTR' naming the dict of event class to handlers.",
    ),
    Variable(
        "EVENTBUS_BROKER_URL",
        "broker",
        _text,
        "redis://, rediss://, amqp://, amqps:// URL, or 'stub'. Default: Dramatiq's global broker.",
    ),
    Variable("EVENTBUS_BACKEND", "backend", _text, "'dramatiq' (default) or 'inline'."),
    Variable("EVENTBUS_QUEUE", "queue", _text, "Queue for events without a partition key. Default 'events'."),
    Variable(
        "EVENTBUS_PARTITIONED_QUEUE",
        "partitioned_queue",
        _text,
        "Queue for events with a partition key. Default 'events_partitioned'.",
    ),
    Variable(
        "EVENTBUS_DEFAULT_ACTOR_OPTIONS",
        "default_actor_options",
        _json_object,
        "JSON object of actor options for every handler, e.g. '{\"min_backoff\": 1000}'.",
    ),
    Variable(
        "EVENTBUS_REDIS_URL", "redis_url", _text, "Redis for cluster-wide partition order when the broker is not Redis."
    ),
    Variable(
        "EVENTBUS_LANE_LEASE_SECONDS",
        "lane_lease_seconds",
        positive_seconds,
        "Lease of a running lane head; default 15.",
    ),
    Variable(
        "EVENTBUS_LANE_STALL_SECONDS",
        "lane_stall_seconds",
        positive_seconds,
        "Wait before a stalled lane head is sent again; default 60.",
    ),
    Variable(
        "EVENTBUS_LANE_PREFIX",
        "lane_prefix",
        _text,
        "Prefix of the lanes' Redis keys; each application sharing a Redis database needs its own. Default 'eventbus'.",
    ),
    Variable(
        "EVENTBUS_REDIS_HEARTBEAT_SECONDS",
        "redis_heartbeat_seconds",
        positive_seconds,
        "Redis broker: silence before a dead worker's messages are recovered; default 60.",
    ),
    Variable(
        "EVENTBUS_MAX_MESSAGE_BYTES",
        "max_message_bytes",
        _positive_int,
        "Largest message a worker reads; larger ones are dead-lettered unparsed. Default 1048576.",
    ),
    Variable("EVENTBUS_CODEC", "codec", _text, "'typed' (default) or 'pickle'."),
    Variable(
        "EVENTBUS_SECRET_KEY", "secret_key", _text, "Key (16+ bytes) that signs every message, and pickled payloads."
    ),
    Variable(
        "EVENTBUS_SECRET_KEYS",
        "secret_keys",
        _comma_separated,
        "Keys being rotated, comma-separated, instead of EVENTBUS_SECRET_KEY: the first signs, any verifies.",
    ),
    Variable("EVENTBUS_PICKLE_FALLBACK", "pickle_fallback", _boolean, "'true': pickle what typed cannot encode."),
)

#: The outbox relay's variables. Not configure() arguments: each ``argument`` is a field of
#: ``dramatiq_eventbus.transactions.RelaySettings``, and a blank one counts as unset.
OUTBOX_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "EVENTBUS_OUTBOX_URL",
        "url",
        _text,
        "SQLAlchemy URL of the database holding the outbox; a worker relays when it is set.",
    ),
    Variable(
        "EVENTBUS_OUTBOX_TABLE",
        "table",
        _text,
        "The outbox table, optionally 'schema.table'. Default 'eventbus_outbox'.",
    ),
    Variable("EVENTBUS_OUTBOX_BATCH_SIZE", "batch_size", _positive_int, "Rows per relay pass. Default 500."),
    Variable(
        "EVENTBUS_OUTBOX_POLL_SECONDS",
        "poll_seconds",
        positive_seconds,
        "Longest wait between passes without a NOTIFY. Default 1.",
    ),
    Variable(
        "EVENTBUS_OUTBOX_PRUNE_AFTER_SECONDS",
        "prune_after_seconds",
        _seconds_or_never,
        "Age at which sent rows are deleted; 0 keeps them. Default 86400.",
    ),
)


#: The worker's Prometheus metrics (``dramatiq_eventbus.contrib.prometheus``). Not a configure()
#: argument: ``dramatiq_eventbus.worker`` serves the metrics when it is set.
METRICS_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "EVENTBUS_METRICS_PORT",
        "port",
        _port,
        "Port each worker group serves its Prometheus metrics on; needs the [prometheus] extra.",
    ),
)


def broker_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get("EVENTBUS_BROKER_URL", "")
    return value.strip() or None


def arguments_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The configure() keywords that ``EVENTBUS_*`` variables set; unset ones are left out."""
    environ = os.environ if environ is None else environ
    arguments = {v.argument: v.parse(v.name, environ[v.name]) for v in VARIABLES if v.name in environ}
    if "handlers" not in arguments:
        raise ConfigurationError(
            "EVENTBUS_HANDLERS is not set: set it to 'pkg.module:ATTR' naming your dict of event class to handlers"
        )
    return arguments
