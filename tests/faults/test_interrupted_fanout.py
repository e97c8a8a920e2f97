"""A fan-out to three handlers interrupted halfway, by a connection cut at the worst moment.

On Redis the messages are written in one atomic step (a MULTI/EXEC transaction or one
script): whatever the cut, the queue holds all three or none. On RabbitMQ, with
publisher confirms, the PublishError names the handlers whose messages the broker
confirmed, and those are on the queue.

The cuts are made in the bytes, by a proxy between the publisher and the shared
server, so the tests hold however the bus batches its writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dramatiq_eventbus import PublishError
from dramatiq_eventbus.handler import handler_name
from tests.support.broker_queues import RabbitmqQueues, RedisQueues

from . import handlers
from .conftest import broker_url
from .harness import Deployment, Tally, report
from .proxy import Cutter, TcpProxy
from .servers import clear_rabbitmq_policy, host_port, proxied, set_rabbitmq_policy

TICK_ACTORS = tuple(handler_name(h) for h in (handlers.TickA, handlers.TickB, handlers.TickC))


def silent_losses(written: list[str], error: PublishError) -> Tally:
    """Per handler message: written to the queue, or else named in ``error.unsent``; lost if neither."""
    lost = [actor for actor in TICK_ACTORS if actor not in written and actor not in error.unsent]
    return Tally(sent=len(TICK_ACTORS), processed=len(written), lost=len(lost), duplicated=0)


@contextmanager
def rabbitmq_policy(name: str, pattern: str, definition: dict[str, Any]) -> Iterator[None]:
    set_rabbitmq_policy(name, pattern, definition)
    try:
        yield
    finally:
        clear_rabbitmq_policy(name)


def cut_the_write_halfway(queue: str) -> Cutter:
    """Cut the request that writes to ``queue`` in its middle: Redis never gets the whole of it."""

    def cut(chunk: bytes, state: dict[str, object]) -> int | None:
        return len(chunk) // 2 if queue.encode() in chunk else None

    return cut


def lose_the_reply_to_the_write(queue: str) -> tuple[Cutter, Cutter]:
    """Let the write reach Redis whole, then cut the connection before its reply gets back."""

    def to_server(chunk: bytes, state: dict[str, object]) -> int | None:
        if queue.encode() in chunk:
            state["written"] = True
        return None

    def to_client(chunk: bytes, state: dict[str, object]) -> int | None:
        return 0 if state.get("written") else None

    return to_server, to_client


@pytest.mark.redis
@pytest.mark.parametrize("where", ["in the middle of the write", "in the reply to the write"])
def test_a_redis_fan_out_is_all_or_nothing(where: str, deploy: list[Deployment], tmp_path: Path) -> None:
    url = broker_url("redis")
    proxy = TcpProxy(host_port(url)).up()
    deployment = Deployment(url, url, tmp_path)
    deploy.append(deployment)
    queue = deployment.queues[0]
    bus = deployment.publisher(broker=proxied(url, proxy.port))
    probe = RedisQueues(url)

    def of_event(n: int) -> list[str]:
        return [m["actor_name"] for m in probe.messages(queue) if m["args"][0]["n"] == n]

    try:
        bus.publish(handlers.Tick(deployment.run, 0))  # connected, and scripts loaded, before the cut
        assert sorted(of_event(0)) == sorted(TICK_ACTORS)
        if where == "in the middle of the write":
            proxy.cut_to_server = cut_the_write_halfway(queue)
        else:
            proxy.cut_to_server, proxy.cut_to_client = lose_the_reply_to_the_write(queue)

        with pytest.raises(PublishError) as raised:
            bus.publish(handlers.Tick(deployment.run, 1))

        written = of_event(1)
        # Nothing is written from half a request; a whole one writes all three, though the
        # publisher, its reply lost, cannot know it: it confirms none, and says they may exist.
        assert sorted(written) == ([] if where == "in the middle of the write" else sorted(TICK_ACTORS))
        assert raised.value.sent == () and sorted(raised.value.unsent) == sorted(TICK_ACTORS)
        assert "0 of 3 messages are known to be sent" in str(raised.value)
        assert "may or may not have been written" in str(raised.value)

        proxy.cut_to_server = proxy.cut_to_client = None
        bus.publish(handlers.Tick(deployment.run, 2))  # the same bus, once the connection is good again
        assert sorted(of_event(2)) == sorted(TICK_ACTORS)
    finally:
        proxy.down()
        probe.close()
    report(
        f"fan-out to 3 handlers cut {where}",
        "redis",
        silent_losses(written, raised.value),
        "processed = written; all or nothing: "
        + ("none written, all named unsent" if not written else "all written, though all are named unsent"),
    )


def confirm_only_the_first(first_actor: str) -> tuple[Cutter, Cutter]:
    """Let RabbitMQ receive the first message whole, and nothing after it; cut once it confirms that one.

    A publish is a method frame, a header frame and body frames, each ending with the byte
    0xCE; a JSON body is ASCII, so the first 0xCE after the first actor's name ends its message.
    """

    def to_server(chunk: bytes, state: dict[str, object]) -> int | None:
        at = chunk.find(first_actor.encode())
        if at < 0:
            return None
        state["hold"] = True
        return chunk.index(b"\xce", at) + 1

    def to_client(chunk: bytes, state: dict[str, object]) -> int | None:
        return len(chunk) if state.get("hold") else None  # the confirm goes through, then the cut

    return to_server, to_client


@pytest.mark.rabbitmq
def test_a_rabbitmq_fan_out_refused_halfway_names_the_handlers_it_reached(
    deploy: list[Deployment], tmp_path: Path
) -> None:
    url = broker_url("rabbitmq")
    deployment = Deployment(url, broker_url("redis"), tmp_path)
    deploy.append(deployment)
    bus = deployment.publisher()
    queue = deployment.queues[0]
    bus.broker.declare_queue(queue, ensure=True)  # type: ignore[call-arg]
    probe = RabbitmqQueues(url)
    # RabbitMQ itself refuses (nacks) every message past the first: a full queue that rejects publishes.
    with rabbitmq_policy(f"{queue}-full", f"^{queue}$", {"max-length": 1, "overflow": "reject-publish"}):
        with pytest.raises(PublishError) as raised:
            bus.publish(handlers.Tick(deployment.run, 1))
        error = raised.value
        on_queue = [m["actor_name"] for m in probe.messages(queue)]

    assert error.sent == TICK_ACTORS[:1] and error.unsent == TICK_ACTORS[1:]
    assert on_queue == list(error.sent)
    assert f"1 of 3 messages are known to be sent (to {TICK_ACTORS[0]})" in str(error)
    report(
        "fan-out to 3 handlers refused after the first (queue full)",
        "rabbitmq",
        silent_losses(on_queue, error),
        "processed = written; PublishError names the confirmed handler (.sent) and the 2 refused (.unsent)",
    )


@pytest.mark.rabbitmq
def test_a_rabbitmq_fan_out_cut_after_a_confirm_names_the_handlers_it_reached(
    deploy: list[Deployment], tmp_path: Path
) -> None:
    url = broker_url("rabbitmq")
    proxy = TcpProxy(host_port(url)).up()
    deployment = Deployment(url, broker_url("redis"), tmp_path)
    deploy.append(deployment)
    bus = deployment.publisher(broker=proxied(url, proxy.port))
    bus.broker.declare_queue(deployment.queues[0], ensure=True)  # type: ignore[call-arg]
    probe = RabbitmqQueues(url)
    proxy.cut_to_server, proxy.cut_to_client = confirm_only_the_first(TICK_ACTORS[0])
    proxy.after_cut = proxy.down  # and the broker stays unreachable while the publisher tries again
    try:
        with pytest.raises(PublishError) as raised:
            bus.publish(handlers.Tick(deployment.run, 1))
        on_queue = [m["actor_name"] for m in probe.messages(deployment.queues[0])]
        assert on_queue == [TICK_ACTORS[0]]  # RabbitMQ has the first, and confirmed it

        proxy.cut_to_server = proxy.cut_to_client = proxy.after_cut = None
        proxy.up()
        bus.publish(handlers.Tick(deployment.run, 2))  # the same bus, once the broker is back
        again = [m for m in probe.messages(deployment.queues[0]) if m["args"][0]["n"] == 2]
        assert sorted(m["actor_name"] for m in again) == sorted(TICK_ACTORS)
    finally:
        proxy.down()
    assert raised.value.sent == TICK_ACTORS[:1] and raised.value.unsent == TICK_ACTORS[1:]
