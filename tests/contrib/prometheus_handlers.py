"""Events and handlers of the metrics scrape test: the worker loads them through
``EVENTBUS_HANDLERS=tests.contrib.prometheus_handlers:HANDLERS``, the test process publishes them.

Each run RPUSHes its process id to ``<EVENTBUS_METRICS_TEST_PREFIX>:pids`` in the Redis at
``EVENTBUS_METRICS_TEST_REDIS``, so that the test can tell that both worker processes ran some.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache

import redis

from dramatiq_eventbus import Handler
from dramatiq_eventbus.errors import AlreadyHandled

REDIS_VAR = "EVENTBUS_METRICS_TEST_REDIS"
PREFIX_VAR = "EVENTBUS_METRICS_TEST_PREFIX"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def _ran() -> None:
    _client(os.environ[REDIS_VAR]).rpush(f"{os.environ[PREFIX_VAR]}:pids", os.getpid())


@dataclass(frozen=True)
class Ping:
    n: int


@dataclass(frozen=True)
class Boom:
    n: int


@dataclass(frozen=True)
class Again:
    n: int


class Pong(Handler):
    """Succeeds, slowly enough that both worker processes get some."""

    def handle_event(self, event: Ping) -> None:
        _ran()
        time.sleep(0.1)


class NeverInterested(Handler):
    """Its ``interested`` says no: counted ``not_interested`` where the event is published."""

    def interested(self, event: Ping) -> bool:
        return False

    def handle_event(self, event: Ping) -> None:
        raise AssertionError("never runs")


class Exploder(Handler):
    """Fails twice: once retried, once dead-lettered."""

    actor_options = {"max_retries": 1}

    def handle_event(self, event: Boom) -> None:
        _ran()
        raise RuntimeError("boom")


class Handled(Handler):
    """An inbox would find this event handled already."""

    def handle_event(self, event: Again) -> None:
        _ran()
        raise AlreadyHandled(f"{__name__}.Handled", str(event.n))


HANDLERS = {
    Ping: [Pong, NeverInterested],
    Boom: [Exploder],
    Again: [Handled],
}
