"""Looking into a real broker's queues from a test, without Dramatiq in between.

What a queue holds is read from the server itself: Redis keys as Dramatiq's Redis
broker lays them out (``dramatiq:<queue>`` list of ids, ``dramatiq:<queue>.msgs`` hash,
``dramatiq:<queue>.XQ`` zset and ``dramatiq:<queue>.XQ.msgs`` hash of dead letters),
and RabbitMQ queues through pika (``<queue>``, ``<queue>.DQ``, ``<queue>.XQ``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

import pika
import pika.exceptions
import redis

NAMESPACE = "dramatiq"


class QueueProbe(Protocol):
    """What a test can ask of a broker about a Dramatiq queue."""

    def count(self, queue: str) -> int:
        """How many messages the queue holds, ready for a consumer."""
        ...

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """The messages the queue holds, decoded, left in place."""
        ...

    def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        """The queue's dead-lettered messages, decoded, left in place."""
        ...

    def delete(self, queues: Iterable[str]) -> None:
        """Remove the queues, with their delay and dead-letter queues."""
        ...

    def close(self) -> None: ...


class RedisQueues:
    """Dramatiq queues in Redis.

    Parameters:
      url(str): The Redis server Dramatiq's RedisBroker uses.
    """

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def count(self, queue: str) -> int:
        # Both keys: an id in the list without its body, or the reverse, is a message written too.
        return max(self.client.llen(f"{NAMESPACE}:{queue}"), self.client.hlen(f"{NAMESPACE}:{queue}.msgs"))

    def messages(self, queue: str) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.client.hvals(f"{NAMESPACE}:{queue}.msgs")]

    def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        ids: list[Any] = self.client.zrange(f"{NAMESPACE}:{queue}.XQ", 0, -1)
        if not ids:
            return []
        bodies = self.client.hmget(f"{NAMESPACE}:{queue}.XQ.msgs", ids)
        return [json.loads(body) for body in bodies if body is not None]

    def keys(self, queue: str) -> list[str]:
        """Every key Dramatiq or the bus may have made for ``queue``, ack sets included."""
        base = f"{NAMESPACE}:{queue}"
        suffixes = ("", ".msgs", ".DQ", ".DQ.msgs", ".XQ", ".XQ.msgs", ":wake", ":lane-heads")
        names = [f"{base}{suffix}" for suffix in suffixes]
        names += [
            key.decode()
            for key in self.client.scan_iter(match=f"{NAMESPACE}:__acks__.*", count=1000)
            if key.decode().endswith((f".{queue}", f".{queue}.DQ"))
        ]
        return names

    def delete(self, queues: Iterable[str]) -> None:
        for queue in queues:
            self.client.delete(*self.keys(queue))

    def forget_brokers(self, broker_ids: Iterable[str]) -> None:
        """Drop Dramatiq broker ids from the shared heartbeat set, for brokers this run made."""
        ids = list(broker_ids)
        if ids:
            self.client.zrem(f"{NAMESPACE}:__heartbeats__", *ids)

    def close(self) -> None:
        self.client.close()


class RabbitmqQueues:
    """Dramatiq queues in RabbitMQ; each call uses a fresh connection, so a closed channel never lingers.

    Parameters:
      url(str): The AMQP URL.
    """

    def __init__(self, url: str) -> None:
        self.parameters = pika.URLParameters(url)

    def count(self, queue: str) -> int:
        """Ready messages by a passive declare; raises LookupError when the queue does not exist."""
        connection = pika.BlockingConnection(self.parameters)
        try:
            frame = connection.channel().queue_declare(queue=queue, passive=True)
            return int(frame.method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise LookupError(f"RabbitMQ has no queue {queue!r}") from None
            raise
        finally:
            if connection.is_open:
                connection.close()

    def exists(self, queue: str) -> bool:
        try:
            self.count(queue)
        except LookupError:
            return False
        return True

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """Every ready message, got unacknowledged; closing the connection puts them back."""
        connection = pika.BlockingConnection(self.parameters)
        try:
            channel = connection.channel()
            bodies = []
            while True:
                method, _properties, body = channel.basic_get(queue=queue, auto_ack=False)
                if method is None:
                    break
                bodies.append(json.loads(body))
            return bodies
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return []
            raise
        finally:
            if connection.is_open:
                connection.close()

    def dead_letters(self, queue: str) -> list[dict[str, Any]]:
        return self.messages(f"{queue}.XQ")

    def delete(self, queues: Iterable[str]) -> None:
        connection = pika.BlockingConnection(self.parameters)
        try:
            channel = connection.channel()
            for queue in queues:
                for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                    channel.queue_delete(queue=name)  # deleting a missing queue is not an error
        finally:
            if connection.is_open:
                connection.close()

    def close(self) -> None:
        pass
