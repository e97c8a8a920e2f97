"""examples/fastapi_shop: a request's events leave after its response, and only if it succeeded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

import dramatiq_eventbus
from dramatiq_eventbus.delivery import Delivery
from dramatiq_eventbus.testing import EventMailbox, assert_event_published, refute_event_published, set_event_bus_mode
from examples.fastapi_shop.app import create_app
from examples.fastapi_shop.events import OrderPlaced
from tests.support import servers
from tests.support.broker_queues import RedisQueues
from tests.support.worker_process import WorkerProcess, wait_for

ORDER = {"order_id": "A-1", "email": "alice@example.com", "total": "26.99"}


class Timeline:
    """What happened, in order: the app's responses finished, and the backend's sends."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, what: str, detail: Any) -> None:
        with self.lock:
            self.entries.append((what, detail))

    def deliver(self, deliveries: Sequence[Delivery]) -> None:  # the bus's backend
        time.sleep(0.05)  # a broker round trip, in a worker thread
        self.add("sent", [(d.event, d.metadata.correlation_id if d.metadata else None) for d in deliveries])

    def wrap(self, app: FastAPI) -> Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]:
        """``app``, noting when each response's last byte was handed to the server."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            async def noting(message: Message) -> None:
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    self.add("response", scope["path"])

            await app(scope, receive, noting if scope["type"] == "http" else send)

        return wrapped


@asynccontextmanager
async def client_for(app: Any, lifespan_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app through its ASGI transport, inside the app's lifespan
    (which the transport does not run). A 500 comes back as a response, as from a server."""
    async with lifespan_app.router.lifespan_context(lifespan_app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture
def timeline(event_bus: EventMailbox) -> Timeline:
    """The service on a stub broker, with a backend that notes its sends.

    The event_bus fixture stays outside, to put the default bus's configuration back after;
    its mailbox is switched off (recording_to(None)) in the tests that use the backend.
    """
    return Timeline()


def shop(timeline: Timeline) -> tuple[Any, FastAPI]:
    app = create_app(broker="stub", backend=timeline)
    return timeline.wrap(app), app


def sending(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``test`` with the default bus sending to its backend rather than the test mailbox."""
    with dramatiq_eventbus.default_bus.recording_to(None):
        run(test())


def test_a_successful_request_publishes_after_its_response_was_produced(timeline: Timeline) -> None:
    async def test() -> None:
        wrapped, app = shop(timeline)
        async with client_for(wrapped, app) as client:
            response = await client.post("/orders", json=ORDER, headers={"X-Request-ID": "req-42"})
        assert response.status_code == 201
        assert response.headers["X-Request-ID"] == "req-42"
        placed = OrderPlaced("A-1", "alice@example.com", Decimal("26.99"))
        assert timeline.entries == [("response", "/orders"), ("sent", [(placed, "req-42")])]

    sending(test)


def test_a_request_that_raises_publishes_nothing(timeline: Timeline) -> None:
    async def test() -> None:
        wrapped, app = shop(timeline)

        @app.post("/crash")
        async def crash() -> None:
            await dramatiq_eventbus.publish_async(OrderPlaced("C-1", "c@example.com", Decimal(1)))
            raise RuntimeError("the database went away")

        async with client_for(wrapped, app) as client:
            response = await client.post("/crash")
            assert response.status_code == 500
            ok = await client.post("/orders", json=ORDER)  # the next request is not affected
            assert ok.status_code == 201
        assert [what for what, _ in timeline.entries] == ["response", "response", "sent"]
        assert timeline.entries[-1][1][0][0].order_id == "A-1"

    sending(test)


def test_an_error_response_publishes_nothing(timeline: Timeline) -> None:
    async def test() -> None:
        wrapped, app = shop(timeline)
        async with client_for(wrapped, app) as client:
            rejected = await client.post("/orders", json={**ORDER, "order_id": "reject-1"})  # HTTPException 409
            invalid = await client.post("/orders", json={**ORDER, "total": "-1"})  # 422, the endpoint never ran
        assert (rejected.status_code, invalid.status_code) == (409, 422)
        assert rejected.headers["X-Request-ID"]  # a generated id, without the header
        await asyncio.sleep(0.1)
        assert timeline.entries == [("response", "/orders"), ("response", "/orders")]

    sending(test)


def test_a_request_id_the_bus_cannot_carry_is_replaced_by_a_new_one(event_bus: EventMailbox) -> None:
    app = create_app(broker="stub")

    async def test() -> httpx.Response:
        async with client_for(app, app) as client:
            return await client.post("/orders", json=ORDER, headers={"X-Request-ID": "r" * 201})

    response = run(test())
    assert response.status_code == 201
    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert event_bus.records[0].metadata is not None
    assert event_bus.records[0].metadata.correlation_id == request_id


def test_concurrent_requests_keep_their_own_events(timeline: Timeline) -> None:
    async def test() -> None:
        wrapped, app = shop(timeline)
        async with client_for(wrapped, app) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/orders",
                        json={**ORDER, "order_id": f"{'reject' if n % 2 else 'ok'}-{n}"},
                        headers={"X-Request-ID": f"req-{n}"},
                    )
                    for n in range(10)
                )
            )
        assert [r.status_code for r in responses] == [201, 409] * 5
        sent = sorted(
            (event.order_id, request) for what, batch in timeline.entries if what == "sent" for event, request in batch
        )
        assert sent == [(f"ok-{n}", f"req-{n}") for n in range(0, 10, 2)]

    sending(test)


def test_the_mailbox_sees_the_request_id_as_correlation_id(event_bus: EventMailbox) -> None:
    """How an application tests its endpoints: the event_bus fixture records what a request sent."""
    set_event_bus_mode("strict")
    app = create_app(broker="stub")

    async def test() -> None:
        async with client_for(app, app) as client:
            await client.post("/orders", json=ORDER, headers={"X-Request-ID": "req-7f3a"})
            await client.post("/orders", json={**ORDER, "order_id": "reject-2"})

    run(test())
    assert_event_published(OrderPlaced, order_id="A-1", correlation_id="req-7f3a")
    refute_event_published(OrderPlaced, order_id="reject-2")


@pytest.mark.redis
def test_a_dramatiq_worker_handles_what_a_request_published(tmp_path: Path) -> None:
    url = servers.require_redis()
    queue = f"fastapi-shop-{time.monotonic_ns()}"
    env = {
        "EVENTBUS_HANDLERS": "examples.fastapi_shop.handlers:HANDLERS",
        "EVENTBUS_BROKER_URL": url,
        "EVENTBUS_QUEUE": queue,
        "EVENTBUS_PARTITIONED_QUEUE": f"{queue}-p",
    }
    worker = WorkerProcess(
        "dramatiq_eventbus.worker", queues=(queue, f"{queue}-p"), env=env, log_path=tmp_path / "worker.log"
    )
    probe = RedisQueues(url)
    config_before = dramatiq_eventbus.default_bus.config if dramatiq_eventbus.default_bus.is_configured else None
    try:
        worker.start()
        app = create_app(broker=url, queue=queue, partitioned_queue=f"{queue}-p")

        async def test() -> None:
            async with client_for(app, app) as client:
                # The failed request first: once the worker handled the next, it would have handled this one.
                failed = await client.post("/orders", json={**ORDER, "order_id": "reject-3"})
                assert failed.status_code == 409
                response = await client.post("/orders", json=ORDER, headers={"X-Request-ID": "req-worker"})
                assert response.status_code == 201

        run(test())
        line = "E-mail to alice@example.com: Order A-1 is confirmed: 26.99 EUR (request req-worker)"
        wait_for(lambda: line in worker.log(), timeout=20, describe=worker.log_tail)
        worker.stop()
        assert "reject-3" not in worker.log()
    finally:
        worker.stop()
        probe.delete((queue, f"{queue}-p"))
        probe.close()
        if config_before is not None:
            dramatiq_eventbus.default_bus.configure(**config_before.arguments)
