"""The orders service: FastAPI, publishing with ``await eventbus.publish_async``.

    uvicorn examples.fastapi_shop.app:app

Each HTTP request runs in a ``deferred_async()`` block (:class:`PublishOnSuccess`): what it
publishes leaves after its response was produced, and only if the request succeeded.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import dramatiq_eventbus as eventbus
from dramatiq_eventbus.metadata import check_correlation_id

from .events import OrderPlaced

HANDLERS = "examples.fastapi_shop.handlers:HANDLERS"
REQUEST_ID_HEADER = "X-Request-ID"


class _Unsuccessful(Exception):
    """Leaves a request's deferred block without an exception of the app's: its events are dropped."""


class PublishOnSuccess:
    """ASGI middleware: each HTTP request in a ``deferred_async()`` block and a ``correlation()``.

    - The correlation id is the request's ``X-Request-ID`` header, or a new id when it has none
      (or one that is not a printable string of 1 to 200 characters); the response carries it
      back in ``X-Request-ID``. Every event the request publishes, and every event their
      handlers publish in turn, carries it as ``correlation_id``.
    - The events a request publishes (with ``await eventbus.publish_async`` or with
      ``eventbus.publish`` in a plain ``def`` endpoint, which FastAPI runs in a thread with a
      copy of the request's context) are buffered, and sent once the app has produced and
      sent the whole response, if it succeeded: no exception, and a status below 400. An
      exception, or an error response (a raised ``HTTPException``, a 422 validation error, a
      ``JSONResponse(status_code=409)`` returned) drops them: an error response is a request
      that failed, whether the app raised or not.
    - The send runs off the event loop (``deferred_async()`` hands it to a worker thread).

    It is pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, so the block and the app
    run in the same task, with nothing between them that copies the context.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with eventbus.correlation(request_id):
            try:
                async with eventbus.deferred_async():
                    await self.app(scope, receive, send_with_id)
                    if status is None or status >= 400:
                        raise _Unsuccessful
            except _Unsuccessful:
                pass


def _request_id(header: str | None) -> str:
    """The header when the bus can carry it as a correlation id, else a new id."""
    if header is not None:
        try:
            check_correlation_id(header)
        except ValueError:
            pass
        else:
            return header
    return uuid.uuid4().hex


class OrderIn(BaseModel):
    order_id: str = Field(min_length=1, max_length=64)
    email: str = Field(min_length=3)
    total: Decimal = Field(ge=0)


def create_app(broker: str | None = None, **settings: Any) -> FastAPI:
    """The service. Its lifespan configures the default bus: from the ``EVENTBUS_*`` variables
    (with this example's handlers when ``EVENTBUS_HANDLERS`` is unset), or with ``broker``
    (a URL, ``"stub"``) and ``settings`` (configure() keywords) when given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if broker is not None:
            eventbus.configure(handlers=HANDLERS, broker=broker, **settings)
        else:
            defaults = {} if "EVENTBUS_HANDLERS" in os.environ else {"handlers": HANDLERS}
            eventbus.configure_from_env(**defaults, **settings)
        yield

    app = FastAPI(title="fastapi_shop", lifespan=lifespan)
    app.add_middleware(PublishOnSuccess)

    @app.post("/orders", status_code=201)
    async def place_order(order: OrderIn) -> dict[str, str]:
        # ... save the order in your database (an async driver) ...
        event_id = await eventbus.publish_async(OrderPlaced(order.order_id, order.email, order.total))
        if order.order_id.startswith("reject-"):
            # A failure after publishing: the event stays in the request's buffer and is dropped.
            raise HTTPException(status_code=409, detail=f"order {order.order_id} conflicts with another")
        return {"order_id": order.order_id, "event_id": event_id}

    return app


app = create_app()
