"""A RabbitMQ broker's dead-letter queues (``<queue>.XQ``), read and emptied through AMQP.

RabbitMQ has no way to look at a queue's messages but to take them: each call opens its own
connection from the broker's parameters, takes up to a bounded number of messages with
``basic_get`` without acknowledging them, acknowledges only those it removes, and closes the
connection, which puts every other one back in its place. Nothing else consumes a dead-letter
queue, so what is held meanwhile is missed by nobody.

A message has no id of its own in AMQP (Dramatiq sets none): each is known by the SHA-256 of
its body, which also names a body that cannot be read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import xq_name


class RabbitmqDeadLetters:
    """The dead letters of a RabbitMQ broker's queues.

    Parameters:
      parameters(Any): The broker's pika connection parameters (one, or a list to try in turn),
        as ``RabbitmqBroker.parameters`` holds them.
    """

    #: RabbitMQ dead-letters a message as it was delivered: it carries the failures of the
    #: attempts before the last, whose own is in the worker's log line only.
    keeps_last_failure = False

    def __init__(self, parameters: Any) -> None:
        self.parameters = parameters

    def read(
        self, queue_name: str, *, scan: int, max_bytes: int
    ) -> Iterator[tuple[str, bytes | None, int, float | None]]:
        """Up to ``scan`` of ``queue_name``'s dead letters, in queue order, left in place.

        Each is ``(SHA-256 of the body, body, size, dead-lettered at)``, the time in Unix
        seconds from RabbitMQ's ``x-death`` header (whole seconds; None without it). Every body
        is returned (AMQP hands it whole); ``max_bytes`` is the caller's to check.
        """
        with _taking(self.parameters, queue_name, scan) as taken:
            for _tag, properties, body in taken:
                yield digest(body), body, len(body), _dead_lettered_at(properties)

    def remove(self, queue_name: str, keys: Collection[str], *, scan: int) -> int:
        """Remove the dead letters of ``queue_name`` whose bodies hash to ``keys``, looking at up
        to ``scan`` of them; return how many were removed."""
        wanted = set(keys)
        removed = 0
        if not wanted:
            return 0
        with _taking(self.parameters, queue_name, scan) as taken:
            for tag, _properties, body in taken:
                key = digest(body)
                if key in wanted:
                    taken.channel.basic_ack(delivery_tag=tag)
                    wanted.discard(key)
                    removed += 1
                    if not wanted:
                        break
        return removed


def digest(body: bytes) -> str:
    """What a dead letter is known by here: the SHA-256 of its body, in hex."""
    return hashlib.sha256(body).hexdigest()


class _Taken:
    """The messages taken from one dead-letter queue on one channel, unacknowledged."""

    def __init__(self, channel: Any, queue: str, count: int) -> None:
        self.channel = channel
        self.queue = queue
        self.count = count

    def __iter__(self) -> Iterator[tuple[int, Any, bytes]]:
        for _ in range(self.count):
            method, properties, body = self.channel.basic_get(queue=self.queue, auto_ack=False)
            if method is None:
                return
            yield method.delivery_tag, properties, body


@contextmanager
def _taking(parameters: Any, queue_name: str, scan: int) -> Iterator[_Taken]:
    """Up to ``scan`` messages of ``queue_name``'s dead-letter queue, taken on a connection of
    their own, which is closed at the end: that puts back every message not acknowledged."""
    queue = xq_name(queue_name)
    connection = pika.BlockingConnection(parameters)
    try:
        channel = connection.channel()
        try:
            frame = channel.queue_declare(queue=queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            yield _Taken(None, queue, 0)  # no such queue: nothing was ever dead-lettered there
            return
        yield _Taken(channel, queue, min(scan, int(frame.method.message_count)))
    finally:
        if connection.is_open:
            connection.close()


def _dead_lettered_at(properties: Any) -> float | None:
    headers = getattr(properties, "headers", None) or {}
    deaths = headers.get("x-death")
    if isinstance(deaths, Sequence) and deaths and isinstance(deaths[0], dict):
        when = deaths[0].get("time")  # the latest death comes first
        if isinstance(when, datetime):
            return when.timestamp()
    return None
