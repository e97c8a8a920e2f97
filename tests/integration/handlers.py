"""Events and handlers that the integration tests' ``dramatiq`` worker runs.

The worker imports this module through ``EVENTBUS_HANDLERS=tests.integration.handlers:HANDLERS``;
the test process imports it too, to publish. Handlers run in the worker subprocess,
so each records what it saw as one JSON line, RPUSHed to the Redis list
``<EVENTBUS_IT_RECORD_PREFIX>:<event.tag>``, which the test reads. The record store is
always Redis (``EVENTBUS_IT_RECORD_URL``), whichever broker carries the messages.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import threading
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any
from uuid import UUID

import dramatiq
import redis

from dramatiq_eventbus import Error, Handler

RECORD_URL_VAR = "EVENTBUS_IT_RECORD_URL"
RECORD_PREFIX_VAR = "EVENTBUS_IT_RECORD_PREFIX"

_lock = threading.Lock()


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def record_key(prefix: str, tag: str) -> str:
    return f"{prefix}:{tag}"


def record(handler: Handler, tag: str, **fields: Any) -> None:
    """RPUSH what ``handler`` saw, with where it ran, to the test's list for ``tag``."""
    with _lock:
        client = _client(os.environ[RECORD_URL_VAR])
    line = {
        "handler": type(handler).__qualname__,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "broker_id": getattr(dramatiq.get_broker(), "broker_id", None),
        **fields,
    }
    client.rpush(record_key(os.environ[RECORD_PREFIX_VAR], tag), json.dumps(line))


# -- 1. fan-out ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FannedOut:
    tag: str


class FanOutA(Handler):
    def handle_event(self, event: FannedOut) -> None:
        record(self, event.tag)


class FanOutB(Handler):
    def handle_event(self, event: FannedOut) -> str:
        record(self, event.tag)
        return "a value is a success too"


class FanOutC(Handler):
    def handle_event(self, event: FannedOut) -> None:
        record(self, event.tag)


@dataclass(frozen=True)
class Flush:
    """Published after other work; its handler, the least urgent, runs after anything enqueued before."""

    tag: str


class FlushHandler(Handler):
    actor_options = {"priority": 9}

    def handle_event(self, event: Flush) -> None:
        record(self, event.tag)


# -- 2. interested() -----------------------------------------------------------------------


@dataclass(frozen=True)
class Announced:
    tag: str
    audience: str


class NeverInterested(Handler):
    def interested(self, event: Announced) -> bool:
        return False

    def handle_event(self, event: Announced) -> None:
        record(self, event.tag)


class VipOnly(Handler):
    def interested(self, event: Announced) -> bool:
        return event.audience == "vip"

    def handle_event(self, event: Announced) -> None:
        record(self, event.tag)


class StaffOnly(Handler):
    def interested(self, event: Announced) -> bool:
        return event.audience == "staff"

    def handle_event(self, event: Announced) -> None:
        record(self, event.tag)


# -- 3. failures, retries, dead letters ----------------------------------------------------


@dataclass(frozen=True)
class Doomed:
    tag: str


def refusal(tag: str) -> str:
    return f"refused {tag}"


def explosion(tag: str) -> str:
    return f"exploded {tag}"


class ReturnsError(Handler):
    actor_options = {"max_retries": 2}

    def handle_event(self, event: Doomed) -> Error:
        record(self, event.tag)
        return Error(refusal(event.tag))


class Raises(Handler):
    actor_options = {"max_retries": 2}

    def handle_event(self, event: Doomed) -> None:
        record(self, event.tag)
        raise RuntimeError(explosion(event.tag))


# -- 4. priority ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prioritized:
    tag: str
    seq: int


class Urgency9(Handler):
    actor_options = {"priority": 9, "max_retries": 0}

    def handle_event(self, event: Prioritized) -> None:
        record(self, event.tag, seq=event.seq)


class Urgency6(Handler):
    actor_options = {"priority": 6, "max_retries": 0}

    def handle_event(self, event: Prioritized) -> None:
        record(self, event.tag, seq=event.seq)


class Urgency3(Handler):
    actor_options = {"priority": 3, "max_retries": 0}

    def handle_event(self, event: Prioritized) -> None:
        record(self, event.tag, seq=event.seq)


class Urgency0(Handler):
    actor_options = {"priority": 0, "max_retries": 0}

    def handle_event(self, event: Prioritized) -> None:
        record(self, event.tag, seq=event.seq)


# -- 5. values and classes -----------------------------------------------------------------


@dataclass(frozen=True)
class Inner:
    label: str
    amount: Decimal
    due: date


@dataclass(frozen=True)
class Everything:
    tag: str
    text: str
    count: int
    ratio: float
    flag: bool
    nothing: None
    total: Decimal
    placed_at: datetime
    local_at: datetime
    day: date
    ident: UUID
    items: list[Any]
    mapping: dict[str, Any]
    inner: Inner
    inners: list[Inner] = field(default_factory=list)


class RecordsWhatItGot(Handler):
    def handle_event(self, event: Everything) -> None:
        # pickle, not the bus's codec, carries the received object back: it keeps every type as the worker had it.
        record(
            self,
            event.tag,
            received=base64.b64encode(pickle.dumps(event)).decode("ascii"),
            event_type=f"{type(event).__module__}.{type(event).__qualname__}",
            field_types={name: type(value).__qualname__ for name, value in vars(event).items()},
        )


HANDLERS = {
    FannedOut: [FanOutA, FanOutB, FanOutC],
    Flush: [FlushHandler],
    Announced: [NeverInterested, VipOnly, StaffOnly],
    Doomed: [ReturnsError, Raises],
    # Least urgent first, so that a broker serving the backlog in order would run them backwards.
    Prioritized: [Urgency9, Urgency6, Urgency3, Urgency0],
    Everything: [RecordsWhatItGot],
}
