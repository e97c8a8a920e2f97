"""Events and handlers the fault tests' ``dramatiq`` workers run.

Workers import this module through ``EVENTBUS_HANDLERS=tests.faults.handlers:HANDLERS``;
the test process imports it to publish. A handler records each run in Redis, always the
shared test Redis (``FAULTS_RECORD_URL``), never the broker a test stops, in hashes of
counters the test reads back:

- ``faults:<run>:started`` and ``faults:<run>:finished``: ``<handler>|<n>`` -> runs begun, runs ended;
- ``faults:<run>:attempts``: a list of ``{"handler", "n", "start", "end", "completed"}`` for
  the handlers that fail on purpose.

``FAULTS_HANDLER_SECONDS`` makes every Tick handler take that long, so that a test can
stop a worker while handlers are in flight.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

import redis

from dramatiq_eventbus import Error, Handler

RECORD_URL_VAR = "FAULTS_RECORD_URL"
HANDLER_SECONDS_VAR = "FAULTS_HANDLER_SECONDS"


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def records() -> redis.Redis:
    return _client(os.environ[RECORD_URL_VAR])


def counter_key(run: str, kind: str) -> str:
    return f"faults:{run}:{kind}"


def attempts_key(run: str) -> str:
    return f"faults:{run}:attempts"


# -- the workload: one event, three handlers -----------------------------------------------


@dataclass(frozen=True)
class Tick:
    run: str
    n: int


class _Counting(Handler):
    actor_options: ClassVar[dict[str, Any]] = {"max_retries": 3, "min_backoff": 50, "max_backoff": 500}

    def handle_event(self, event: Tick) -> None:
        field = f"{type(self).__name__}|{event.n}"
        records().hincrby(counter_key(event.run, "started"), field, 1)
        seconds = float(os.environ.get(HANDLER_SECONDS_VAR, "0"))
        if seconds:
            time.sleep(seconds)
        records().hincrby(counter_key(event.run, "finished"), field, 1)


class TickA(_Counting):
    pass


class TickB(_Counting):
    pass


class TickC(_Counting):
    pass


TICK_HANDLERS = ("TickA", "TickB", "TickC")


@dataclass(frozen=True)
class Solo:
    """An event with one handler, for the concurrent publishers: 40,000 of them stay on the queue."""

    thread: int
    n: int


class SoloHandler(Handler):
    def handle_event(self, event: Solo) -> None:
        pass


# -- handlers that fail on purpose ----------------------------------------------------------


@dataclass(frozen=True)
class Doomed:
    run: str
    n: int = 0


def _attempt(handler: Handler, event: Doomed, start: float, completed: bool) -> None:
    line = {"handler": type(handler).__name__, "n": event.n, "start": start, "end": time.time(), "completed": completed}
    records().rpush(attempts_key(event.run), json.dumps(line))


class AlwaysRaises(Handler):
    actor_options = {"max_retries": 3, "min_backoff": 150, "max_backoff": 5000}

    def handle_event(self, event: Doomed) -> None:
        _attempt(self, event, time.time(), completed=True)
        raise RuntimeError(f"ledger locked for {event.run}")


class AlwaysReturnsError(Handler):
    actor_options = {"max_retries": 3, "min_backoff": 150, "max_backoff": 5000}

    def handle_event(self, event: Doomed) -> Error:
        _attempt(self, event, time.time(), completed=True)
        return Error(f"card declined for {event.run}")


#: Overruns' time limit. Dramatiq checks time limits once a second, so an attempt ends
#: between this and this plus a second.
TIME_LIMIT_MS = 400


class Overruns(Handler):
    actor_options = {"max_retries": 1, "time_limit": TIME_LIMIT_MS, "min_backoff": 50, "max_backoff": 100}

    def handle_event(self, event: Doomed) -> None:
        start = time.time()
        completed = False
        try:
            # Short sleeps: Dramatiq interrupts a thread between bytecodes, never inside a sleep.
            for _ in range(200):
                time.sleep(0.05)
            completed = True
        finally:
            _attempt(self, event, start, completed)


HANDLERS: dict[type, list[type]] = {
    Tick: [TickA, TickB, TickC],
    Solo: [SoloHandler],
    Doomed: [AlwaysRaises, AlwaysReturnsError, Overruns],
}
