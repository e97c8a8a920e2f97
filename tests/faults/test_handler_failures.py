"""Handlers that fail every time: retried exactly max_retries times with a growing backoff,
then dead-lettered with the reason in one log line; and a time_limit that stops a handler."""

from __future__ import annotations

import itertools
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dramatiq_eventbus.handler import handler_name
from tests.support.broker_queues import QueueProbe, RabbitmqQueues, RedisQueues
from tests.support.worker_process import wait_for

from . import handlers
from .conftest import broker_url
from .harness import Deployment, Tally, report

RETRIED = {"AlwaysRaises": handlers.AlwaysRaises, "AlwaysReturnsError": handlers.AlwaysReturnsError}
#: Dramatiq moves a due retry from the delay queue to the queue on its next poll: up to a second late.
POLL_SLACK = 1.3
#: make test runs the failing handlers on Redis; the same faults on RabbitMQ are a slow variant
#: (tests/integration retries and dead-letters on both brokers in the normal run).
KINDS = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.slow], id="rabbitmq"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_failing_handlers_are_retried_max_retries_times_then_dead_lettered(
    kind: str, deploy: list[Deployment], tmp_path: Path
) -> None:
    deployment = Deployment(broker_url(kind), broker_url("redis"), tmp_path)
    deploy.append(deployment)
    worker = deployment.start_worker(threads=4)
    probe: QueueProbe = (
        RabbitmqQueues(deployment.broker_url) if kind == "rabbitmq" else RedisQueues(deployment.broker_url)
    )
    deployment.publisher().publish(handlers.Doomed(deployment.run))
    actors = {handler_name(cls) for cls in (*RETRIED.values(), handlers.Overruns)}

    def dead() -> list[dict[str, Any]] | None:
        letters = [m for m in probe.dead_letters(deployment.queues[0]) if m["actor_name"] in actors]
        return letters if len(letters) >= len(actors) else None

    letters = wait_for(dead, timeout=30, interval=0.2, describe=lambda: f"{deployment.attempts()}{worker.log_tail()}")
    time.sleep(0.5)  # long enough for an attempt too many to show
    attempts = deployment.attempts()
    by_handler: dict[str, list[dict[str, Any]]] = {}
    for attempt in sorted(attempts, key=lambda a: a["start"]):
        by_handler.setdefault(attempt["handler"], []).append(attempt)

    assert sorted(m["actor_name"] for m in letters) == sorted(actors)
    assert Counter(a["handler"] for a in attempts) == {"AlwaysRaises": 4, "AlwaysReturnsError": 4, "Overruns": 2}
    for name, cls in RETRIED.items():
        options = cls.actor_options
        starts = [a["start"] for a in by_handler[name]]
        for retry, (before, after) in enumerate(itertools.pairwise(starts)):
            # Dramatiq's backoff: min_backoff * 2**retry, stretched by a jitter of up to 2x.
            shortest = options["min_backoff"] * 2**retry / 1000
            assert shortest * 0.95 <= after - before <= 2 * shortest + POLL_SLACK, (name, retry, after - before)
    for attempt in by_handler["Overruns"]:
        ran = attempt["end"] - attempt["start"]
        assert not attempt["completed"], "the time limit did not stop the handler"
        assert handlers.TIME_LIMIT_MS / 1000 <= ran <= handlers.TIME_LIMIT_MS / 1000 + POLL_SLACK, ran

    log = worker.log()
    dead_lines = [line for line in log.splitlines() if "Dead-lettered message" in line]
    assert len(dead_lines) == 3, dead_lines
    assert any(f"card declined for {deployment.run}" in line and "after 4 attempt(s)" in line for line in dead_lines)
    assert any(f"ledger locked for {deployment.run}" in line and "after 4 attempt(s)" in line for line in dead_lines)
    assert any("TimeLimitExceeded" in line and "after 2 attempt(s)" in line for line in dead_lines)
    # An Error result is a failure with a reason, not a crash: no traceback for it.
    assert len(re.findall(rf"AlwaysReturnsError.handle_event failed: card declined for {deployment.run}", log)) >= 4

    gaps = {
        name: [round(b["start"] - a["start"], 2) for a, b in itertools.pairwise(by_handler[name])] for name in RETRIED
    }
    report(
        "handler raises / returns Error / overruns time_limit",
        kind,
        Tally(sent=3, processed=0, lost=0, duplicated=0),
        f"4+4+2 attempts (max_retries 3, 3, 1), then 3 dead letters; backoff gaps {gaps} s",
    )
