"""Message authentication end to end, on real Redis and RabbitMQ with a real ``dramatiq`` worker:
signed messages run, during a key rotation too; unsigned, wrongly signed or altered ones are
dead-lettered without running, each with one line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dramatiq_eventbus.handler import handler_name
from tests.support.worker_process import wait_for

from . import handlers
from .conftest import BROKERS, broker_url
from .harness import Deployment, Tally, report
from .test_bad_messages import Bad, Queue

NEW = "the-new-key-0123456789abcdef"
OLD = "the-old-key-0123456789abcdef"
OTHER = "someone-elses-key-0123456789"


@pytest.fixture(params=BROKERS)
def deployment(request: pytest.FixtureRequest, deploy: list[Deployment], tmp_path: Path) -> Iterator[Deployment]:
    made = Deployment(
        broker_url(request.param),
        broker_url("redis"),
        tmp_path,
        env={"EVENTBUS_SECRET_KEYS": f"{NEW},{OLD}"},  # the workers, mid-rotation: NEW signs, both verify
        settings={"secret_keys": [NEW, OLD]},
    )
    deploy.append(made)
    yield made


def test_only_messages_signed_with_a_current_key_run(deployment: Deployment) -> None:
    worker = deployment.start_worker(threads=4)
    run = deployment.run
    # Publishers not yet rotated (OLD), rotated ([NEW, OLD]) and done rotating (NEW): all run.
    for n, overrides in enumerate([{"secret_keys": None, "secret_key": OLD}, {}, {"secret_keys": [NEW]}]):
        deployment.publisher(**overrides).publish(handlers.Tick(run, n))
    tally = deployment.wait_until_processed(range(3), timeout=30)
    assert tally == Tally(sent=9, processed=9, lost=0, duplicated=0)

    # Another key, no key, and a genuine message altered after it was signed: none runs.
    forged = [deployment.publisher(secret_keys=None, secret_key=OTHER), deployment.publisher(secret_keys=None)]
    for n, bus in enumerate(forged, start=10):
        bus.publish(handlers.Tick(run, n))
    genuine = deployment.publisher()
    spec = next(s for s in genuine.config.registry.handlers if s.name == handler_name(handlers.TickA))
    message = genuine.config.backend.message_for(  # type: ignore[attr-defined]
        _delivery(spec, genuine.config.codec.encode(handlers.Tick(run, 12)), deployment.queues[0])
    )
    altered = json.loads(message.encode())
    altered["args"][0]["n"] = 99  # the signature covers the payload
    queue = Queue(deployment.kind, deployment.broker_url, deployment.queues[0])
    queue.write(Bad("altered after signing", json.dumps(altered).encode(), message.message_id))
    refused = 3 + 3 + 1
    wait_for(
        lambda: len(queue.dead_letter_bodies()) >= refused,
        timeout=20,
        interval=0.2,
        describe=lambda: f"{len(queue.dead_letter_bodies())} of {refused} dead-lettered.{worker.log_tail()}",
    )
    assert deployment.tally([10, 11, 12, 99]).processed == 0, "a message the keys did not sign ran"
    log = worker.log()
    lines = [line for line in log.splitlines() if "Dead-lettered message" in line]
    assert len(lines) == refused, lines
    assert sum("refused: its signature is wrong" in line for line in lines) == 4
    assert sum("refused: it is not signed" in line for line in lines) == 3
    assert not re.search(r"\[ERROR\].*Traceback", log)
    report(
        "messages signed with another key, unsigned, or altered",
        deployment.kind,
        Tally(sent=refused, processed=0, lost=0, duplicated=0),
        f"{refused} dead-lettered without running; 9 signed during a key rotation all ran",
    )


def _delivery(spec: object, payload: object, queue: str) -> object:
    from dramatiq_eventbus.delivery import Delivery

    return Delivery(spec, handlers.Tick("x", 12), payload, None, queue)  # type: ignore[arg-type]
