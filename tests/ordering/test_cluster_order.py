"""Per-(handler, key) order across two real worker processes, on Redis and on RabbitMQ + Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dramatiq_eventbus import EventBus

from ..support.servers import require_rabbitmq, require_redis
from ..support.worker_process import wait_for
from .handlers import Step, Unkeyed
from .harness import check_lanes, cluster


def broker_url(kind: str) -> str:
    redis_url = require_redis()
    return redis_url if kind == "redis" else require_rabbitmq()


# The sizes (50 keys x 40 events, 6,000 handler runs) take 15-45 s each on two
# cores, so `make test` runs a smaller cluster of every kind and `-m slow` the full one.
SIZES = [pytest.param((12, 20), id="12x20"), pytest.param((50, 40), id="50x40", marks=pytest.mark.slow)]
BROKERS = [pytest.param("redis", marks=pytest.mark.redis), pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
def test_each_lane_is_handled_one_at_a_time_in_publish_order(kind: str, size: tuple[int, int], tmp_path: Path) -> None:
    keys_count, per_key = size
    with cluster(broker_url(kind), require_redis(), tmp_path) as running:
        running.start_worker()
        running.start_worker()
        keys = running.publish_concurrently(keys_count, per_key)
        log = running.wait_for_successes(3 * keys_count * per_key)
        successes = check_lanes(log, keys, per_key)
        assert set(successes.values()) == {1}, "an event succeeded more than once"


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
def test_order_holds_when_a_tenth_of_first_attempts_fail(kind: str, size: tuple[int, int], tmp_path: Path) -> None:
    keys_count, per_key = size
    with cluster(broker_url(kind), require_redis(), tmp_path, ORDERING_FAIL_FIRST="0.1") as running:
        running.start_worker()
        running.start_worker()
        keys = running.publish_concurrently(keys_count, per_key)
        log = running.wait_for_successes(3 * keys_count * per_key)
        successes = check_lanes(log, keys, per_key)
        assert set(successes.values()) == {1}
        failures = [e for e in log if not e["ok"]]
        assert 0.05 * 3 * keys_count * per_key <= len(failures) <= 0.15 * 3 * keys_count * per_key


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", BROKERS)
def test_a_sigkilled_worker_loses_nothing_and_order_holds(kind: str, size: tuple[int, int], tmp_path: Path) -> None:
    keys_count, per_key = size
    with cluster(broker_url(kind), require_redis(), tmp_path) as running:
        victim = running.start_worker()
        running.start_worker()
        keys = running.publish_concurrently(keys_count, per_key)
        total = 3 * keys_count * per_key
        running.wait_for_successes(total // 4)
        killed_at = time.time()
        os.killpg(victim.pid, signal.SIGKILL)
        running.start_worker()
        log = running.wait_for_successes(total, timeout=90)
        successes = check_lanes(log, keys, per_key)
        # At least once: only an event the worker had taken when it died may have succeeded twice
        # (its handler finished, but the worker died before its lane heard so, which is before
        # the delivery's ack): at most as many as its unacknowledged deliveries, its prefetch of
        # the partitioned queue (Dramatiq's default, twice the 8 threads).
        twice = [event for event, count in successes.items() if count > 1]
        assert len(twice) <= 16, twice
        for handler, key, publisher, n in twice:
            runs = [e for e in log if (e["h"], e.get("key"), e.get("pub"), e.get("n")) == (handler, key, publisher, n)]
            assert min(e["start"] for e in runs) <= killed_at


@pytest.mark.redis
def test_a_blocked_lane_delays_neither_other_handlers_nor_unkeyed_events(tmp_path: Path) -> None:
    redis_url = require_redis()
    slow_retries = json.dumps({"min_backoff": 1000, "max_backoff": 3000})
    with cluster(redis_url, redis_url, tmp_path, ORDERING_BLOCKED_KEY="blocked") as running:
        running.extra_env["EVENTBUS_DEFAULT_ACTOR_OPTIONS"] = slow_retries
        running.extra_env["ORDERING_BLOCKED_KEY"] = f"blocked-{running.run}"
        running.start_worker()
        blocked = f"blocked-{running.run}"
        bus = EventBus().configure(**running.settings)
        bus.publish([Step(blocked, 0, n) for n in range(5)] + [Unkeyed(n) for n in range(20)])
        # OrderingA fails every attempt on the blocked key: four attempts 1-3 s apart, so its
        # lane spends about 6 s on its first event alone.

        def others_done() -> list[dict[str, Any]] | None:
            log = running.log()
            done = _handled(log, "OrderingB", blocked) == _handled(log, "OrderingC", blocked) == 5
            return log if done and sum("unkeyed" in e for e in log) == 20 else None

        log = wait_for(others_done, timeout=10)
        attempts_a = [e for e in log if e["h"] == "OrderingA" and e.get("key") == blocked]
        # Everything else was handled while the blocked lane was still on its first event.
        assert {e["n"] for e in attempts_a} == {0}, "the blocked lane ran a later event before its head was done"

        (stuck,) = [lane for lane in bus.lanes() if lane.partition_key == blocked]
        assert stuck.handler == "tests.ordering.handlers.OrderingA"
        assert stuck.event_type == "tests.ordering.handlers:Step"
        assert stuck.pending == 5
        assert stuck.attempts >= 1
        assert stuck.state in ("running", "retrying", "dispatched")
        bus.broker.close()

        shown = subprocess.run(
            [sys.executable, "-m", "dramatiq_eventbus", "lanes", "--older-than", "0"],
            env={**os.environ, **running.env()},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 1, shown.stderr
        (row,) = [line for line in shown.stdout.splitlines() if blocked in line] or [shown.stdout]
        assert f"'tests.ordering.handlers.OrderingA' / '{blocked}' / 'tests.ordering.handlers:Step'" in row


def _handled(log: list[dict[str, Any]], handler: str, key: str) -> int:
    return sum(1 for e in log if e["h"] == handler and e.get("key") == key and e["ok"])


def _entry(handler: str, n: int, start: float, end: float, *, publisher: int = 0, ok: bool = True) -> dict[str, Any]:
    return {"h": handler, "key": "k", "pub": publisher, "n": n, "start": start, "end": end, "ok": ok}


def test_the_checks_catch_overlap_reordering_loss_and_divergence() -> None:
    good = [_entry(h, n, n, n + 0.5) for h in ("A", "B") for n in range(3)]
    check_lanes(good, ["k"], 3, handlers=("A", "B"))
    overlapping = [*good[:-1], _entry("B", 2, 1.2, 3)]
    with pytest.raises(AssertionError, match="overlapping"):
        check_lanes(overlapping, ["k"], 3, handlers=("A", "B"))
    reordered = [*good[:3], _entry("B", 1, 0, 0.5), _entry("B", 0, 1, 1.5), _entry("B", 2, 2, 2.5)]
    with pytest.raises(AssertionError, match="out of order"):
        check_lanes(reordered, ["k"], 3, handlers=("A", "B"))
    with pytest.raises(AssertionError, match="2 of 3 handled"):
        check_lanes(good[:-1], ["k"], 3, handlers=("A", "B"))
    diverging = [*good[:3], *(_entry("B", n, n, n + 0.5, publisher=n % 2) for n in range(3))]
    with pytest.raises(AssertionError):
        check_lanes(diverging, ["k"], 3, handlers=("A", "B"))
