"""What the transaction tests share: the databases, the broker's view, and a Redis of their own to stop."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from sqlalchemy import Engine, text

from dramatiq_eventbus.handler import handler_name
from dramatiq_eventbus.metadata import EventContext
from tests.support.broker_queues import RedisQueues
from tests.support.worker_process import wait_for

#: The Redis database these tests use on the shared server: their queues and lanes stay
#: out of the way of the other suites' lane listings on database 0.
REDIS_DB = 3
#: Fast retries for the handlers, as in the other suites.
ACTOR_OPTIONS = {"min_backoff": 50, "max_backoff": 200}
LANE_PREFIX = "eventbus"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def with_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


class BrokerView:
    """What reached a Redis broker: its queues and the bus's lanes, read from the server.

    Parameters:
      url(str): The broker's Redis URL.
      queues(tuple[str, str]): The bus's two queues.
    """

    def __init__(self, url: str, queues: tuple[str, str]) -> None:
        self.url = url
        self.queues = queues
        self.probe = RedisQueues(url)
        self.client = redis.Redis.from_url(url)

    def queued(self) -> list[dict[str, Any]]:
        return [message for queue in self.queues for message in self.probe.messages(queue)]

    def lane(self, handler: type, key: str) -> list[dict[str, Any]]:
        """The messages of one lane, head first: the order its handler will run them in."""
        base = f"{LANE_PREFIX}:lane:{handler_name(handler)}:{key}"
        ids = self.client.lrange(f"{base}:ids", 0, -1)
        if not ids:
            return []
        bodies = self.client.hmget(f"{base}:msgs", ids)
        return [json.loads(body) for body in bodies if body is not None]

    def lanes(self, marker: str) -> dict[str, list[dict[str, Any]]]:
        """Every lane whose name holds ``marker``, by lane name."""
        found = {}
        for raw in self.client.scan_iter(match=f"{LANE_PREFIX}:lane:*{marker}*:ids", count=1000):
            lane = raw.decode()[len(f"{LANE_PREFIX}:lane:") : -len(":ids")]
            ids = self.client.lrange(raw, 0, -1)
            bodies = self.client.hmget(f"{LANE_PREFIX}:lane:{lane}:msgs", ids)
            found[lane] = [json.loads(body) for body in bodies if body is not None]
        return found

    def delivered(self, marker: str) -> list[dict[str, Any]]:
        """Every distinct message sent, queued or waiting in a lane (a lane's head is in both)."""
        messages = {m["message_id"]: m for m in self.queued()}
        for lane in self.lanes(marker).values():
            messages.update({m["message_id"]: m for m in lane})
        return list(messages.values())

    def delete(self, marker: str) -> None:
        self.probe.delete(self.queues)
        keys = list(self.client.scan_iter(match=f"{LANE_PREFIX}:lane:*{marker}*", count=1000))
        if keys:
            self.client.delete(*keys)
        lanes = [lane for lane in self.client.zrange(f"{LANE_PREFIX}:lanes", 0, -1) if marker.encode() in lane]
        if lanes:
            self.client.zrem(f"{LANE_PREFIX}:lanes", *lanes)

    def close(self) -> None:
        self.probe.close()
        self.client.close()


def outbox_ids(messages: Iterable[dict[str, Any]]) -> list[int]:
    """The outbox row of each message the relay sent; direct publishes have none."""
    return [m["options"]["outbox_id"] for m in messages if "outbox_id" in m["options"]]


class Records:
    """The JSON lines the handlers RPUSHed, one list per tag.

    Parameters:
      url(str): The Redis they go to.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = unique("eventbus-tx-records")
        self.client = redis.Redis.from_url(url)

    def env(self) -> dict[str, str]:
        return {"TX_RECORD_URL": self.url, "TX_RECORD_PREFIX": self.prefix}

    def of(self, tag: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.client.lrange(f"{self.prefix}:{tag}", 0, -1)]

    def wait_for(self, tag: str, count: int, *, timeout: float = 20.0, log: str = "") -> list[dict[str, Any]]:
        wait_for(
            lambda: len(self.of(tag)) >= count,
            timeout=timeout,
            describe=lambda: f"expected {count} records of {tag}, have {len(self.of(tag))}.{log}",
        )
        return self.of(tag)

    def delete(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
        if keys:
            self.client.delete(*keys)
        self.client.close()


def per_key_sequences(lines: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
    sequences: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        sequences[line["account"]].append(line["seq"])
    return dict(sequences)


def first_occurrences(sequence: Iterable[int]) -> list[int]:
    seen: set[int] = set()
    return [n for n in sequence if not (n in seen or seen.add(n))]  # type: ignore[func-returns-value]


@contextmanager
def scratch_table(engine: Engine, schema: str, name: str, columns: str) -> Iterator[str]:
    """A table of ``columns`` in the run's schema, named after ``name``; dropped after."""
    table = f'"{schema}"."{unique(name)}"'
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} ({columns})"))
    try:
        yield table
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))


def handler_context(event_id: str, handler: str) -> EventContext:
    """A new context object, as each run of a handler gets (a redelivery too)."""
    return EventContext(
        event_id=event_id,
        correlation_id=event_id,
        causation_id=None,
        published_at=datetime.now(UTC),
        attempt=1,
        handler=handler,
        partition_key=None,
        message_id=None,
    )
