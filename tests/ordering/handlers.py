"""Handlers for the ordering tests. They run in ``dramatiq`` worker subprocesses and
record every execution in Redis, where the test reads them back.

Environment (set by the test for the workers):
  ORDERING_RUN: a run id; executions go to the Redis list ``ordering:<run>:log``.
  ORDERING_FAIL_FIRST: the share (0-1) of events whose first attempt fails, per handler.
  ORDERING_BLOCKED_KEY: a key whose events always fail in OrderingA (a blocked lane).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis

from dramatiq_eventbus import Error, Handler

from ..support.servers import REDIS_URL


@dataclass(frozen=True)
class Step:
    """Event ``n`` of ``publisher`` about ``key``; ordered per key."""

    key: str
    publisher: int
    n: int

    def partition_key(self) -> str:
        return self.key


@dataclass(frozen=True)
class Unkeyed:
    """An event without a key: it must not wait for any lane."""

    n: int


@cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("ORDERING_REDIS_URL", REDIS_URL))


def log_key(run: str) -> str:
    return f"ordering:{run}:log"


def _fails_first(handler: str, event: Step) -> bool:
    share = float(os.environ.get("ORDERING_FAIL_FIRST", "0"))
    digest = hashlib.sha256(f"{handler}|{event.key}|{event.publisher}|{event.n}".encode()).digest()
    return digest[0] < share * 256


class _Recording(Handler):
    actor_options: dict[str, Any] = {"max_retries": 3}

    def handle_event(self, event: Any) -> Error | None:
        name = type(self).__name__
        run = os.environ["ORDERING_RUN"]
        start = time.time()
        if isinstance(event, Unkeyed):
            _client().rpush(log_key(run), json.dumps({"h": name, "unkeyed": event.n, "start": start, "end": start}))
            return None
        attempt = _client().hincrby(f"ordering:{run}:attempts", f"{name}|{event.key}|{event.publisher}|{event.n}", 1)
        time.sleep(random.uniform(0, 0.005))
        blocked = name == "OrderingA" and event.key == os.environ.get("ORDERING_BLOCKED_KEY")
        failed = blocked or (attempt == 1 and _fails_first(name, event))
        entry = {
            "h": name,
            "key": event.key,
            "pub": event.publisher,
            "n": event.n,
            "start": start,
            "end": time.time(),
            "ok": not failed,
            "pid": os.getpid(),
        }
        _client().rpush(log_key(run), json.dumps(entry))
        return Error("planned failure") if failed else None


class OrderingA(_Recording):
    pass


class OrderingB(_Recording):
    pass


class OrderingC(_Recording):
    pass


HANDLERS = {Step: [OrderingA, OrderingB, OrderingC], Unkeyed: [OrderingB]}
