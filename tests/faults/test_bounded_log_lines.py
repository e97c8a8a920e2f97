"""Dramatiq's own log lines about a message quote it (``str(message)``: its actor and whole
arguments), so an event of half a megabyte made half-megabyte log lines. The bus's consumers
hand the worker messages that render bounded; on a real ``dramatiq`` worker, on each broker,
no line of the worker's log may exceed :data:`LONGEST_LINE` characters."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.worker_process import wait_for

from .bulky_handlers import Bulky
from .conftest import BROKERS, broker_url
from .harness import Deployment

BULKY_HANDLERS = "tests.faults.bulky_handlers:HANDLERS"
#: A genuine event's payload, well under max_message_bytes (1 MiB).
PAYLOAD_CHARACTERS = 500_000
#: The longest line the worker may log.
LONGEST_LINE = 4_000


@pytest.mark.parametrize("kind", BROKERS)
def test_no_worker_log_line_quotes_a_large_payload_whole(kind: str, deploy: list[Deployment], tmp_path: Path) -> None:
    deployment = Deployment(broker_url(kind), broker_url("redis"), tmp_path)
    deploy.append(deployment)
    worker = deployment.start_worker(threads=2, env={"EVENTBUS_HANDLERS": BULKY_HANDLERS})
    # Newlines too: were they written as they are, each would start a line of its own.
    text = ("a line of the payload\n" * (PAYLOAD_CHARACTERS // 22 + 1))[:PAYLOAD_CHARACTERS]
    deployment.publisher(handlers=BULKY_HANDLERS).publish(Bulky(deployment.run, text))

    def done() -> str | None:
        log = worker.log()
        handled = deployment.counts().get("BulkyFailsOnce") == 1
        return log if handled and "Dead-lettered message" in log else None

    log = wait_for(done, timeout=30, interval=0.2, describe=lambda: f"{deployment.counts()}{worker.log_tail(8)}")
    # Each of Dramatiq's lines that quote a message came, so each was measured.
    assert "Failed to process message" in log
    assert "was skipped" in log
    assert "Retrying message" in log
    lengths = sorted((len(line) for line in log.splitlines()), reverse=True)
    assert lengths[0] <= LONGEST_LINE, f"the longest lines have {lengths[:5]} characters"
