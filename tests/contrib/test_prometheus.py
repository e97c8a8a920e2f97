"""Prometheus metrics (dramatiq_eventbus.contrib.prometheus): each outcome counted right on a
StubBroker with an in-process worker, and a scrape of a real 2-process ``dramatiq`` worker's
metrics port after a known workload.

Every test counts into a CollectorRegistry of its own; none puts this process in
multiprocess mode (only a worker subprocess is).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import dramatiq_eventbus.contrib.prometheus as prometheus_module
from dramatiq_eventbus import EventBus, Handler
from dramatiq_eventbus.brokers.redis.lanes import RedisLaneStore
from dramatiq_eventbus.contrib.prometheus import METRIC_NAMES, OUTCOMES, EventBusMetrics, LaneGauges
from dramatiq_eventbus.errors import AlreadyHandled, EventEncodeError, HandlerFailed
from dramatiq_eventbus.handler import Error
from dramatiq_eventbus.testing import stub_worker
from tests.contrib import prometheus_handlers
from tests.support import servers
from tests.support.broker_queues import RabbitmqQueues, RedisQueues
from tests.support.lane_stores import scratch_lane_store
from tests.support.worker_process import REPO_ROOT, WorkerProcess, wait_for

DASHBOARD = REPO_ROOT / "docs" / "grafana" / "eventbus-dashboard.json"
#: The guide with the Metrics section.
GUIDES = [REPO_ROOT / "docs" / "guides" / "observability.md"]


@dataclass(frozen=True)
class Placed:
    order_id: str
    outcome: str = "ok"


@dataclass(frozen=True)
class Unwanted:
    n: int


class Billing(Handler):
    actor_options = {"max_retries": 1}

    def handle_event(self, event: Placed) -> Error | None:
        if event.outcome == "error":
            return Error("no money")
        if event.outcome == "raise":
            raise RuntimeError("boom")
        if event.outcome == "duplicate":
            raise AlreadyHandled(f"{__name__}.Billing", event.order_id)
        return None


class Picky(Handler):
    def interested(self, event: Placed) -> bool:
        return event.outcome == "picky"

    def handle_event(self, event: Placed) -> None:
        return None


BILLING = f"{__name__}.Billing"
PICKY = f"{__name__}.Picky"
PLACED = f"{__name__}:Placed"


def a_bus(*handlers: type[Handler]) -> EventBus:
    return EventBus().configure(handlers={Placed: list(handlers or (Billing, Picky))}, broker="stub")


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def runs(registry: CollectorRegistry, handler: str) -> dict[str, float]:
    """The handler's runs by outcome, those counted only."""
    counted = {o: value(registry, "eventbus_handler_runs_total", handler=handler, outcome=o) for o in OUTCOMES}
    return {outcome: count for outcome, count in counted.items() if count}


def drain_all(worker: Any) -> None:
    """Drain until nothing is left; drain() raises one dead-lettered handler's exception at a time."""
    for _ in range(10):
        try:
            worker.drain()
            return
        except (HandlerFailed, RuntimeError):
            continue
    raise AssertionError("still failing after 10 drains")


# -- each outcome, on a StubBroker -------------------------------------------------------------


def test_each_outcome_of_a_handler_run_is_counted_and_a_failed_attempt_counts_failure_and_its_fate() -> None:
    registry = CollectorRegistry()
    bus = a_bus()
    # Installed before stub_worker moves the bus onto its own broker: the middleware follows it there.
    EventBusMetrics(bus, registry).install()
    with stub_worker(bus) as worker:
        bus.publish([Placed("a"), Placed("b"), Placed("c", "error"), Placed("d", "raise"), Placed("e", "duplicate")])
        drain_all(worker)
    # max_retries=1: each failing event fails twice, retried once, then dead-lettered.
    assert runs(registry, BILLING) == {"success": 2, "failure": 4, "retry": 2, "dead_lettered": 2, "duplicate": 1}
    # Picky said no to all five at publish, and never ran.
    assert runs(registry, PICKY) == {"not_interested": 5}
    assert value(registry, "eventbus_events_published_total", event_type=PLACED) == 5
    # Every attempt's duration; the delay of first attempts only.
    assert value(registry, "eventbus_handler_duration_seconds_count", handler=BILLING) == 2 + 4 + 1
    assert value(registry, "eventbus_handler_delay_seconds_count", handler=BILLING) == 5
    delay_sum = value(registry, "eventbus_handler_delay_seconds_sum", handler=BILLING)
    assert 0 <= delay_sum < 10


def test_the_duration_is_the_handler_s_own_time() -> None:
    class Slow(Handler):
        def handle_event(self, event: Placed) -> None:
            time.sleep(0.05)

    registry = CollectorRegistry()
    bus = a_bus(Slow)
    with stub_worker(bus) as worker:
        EventBusMetrics(bus, registry).install()  # installed inside the worker this time
        bus.publish(Placed("a"))
        worker.drain()
    name = f"{Slow.__module__}.{Slow.__qualname__}"
    assert 0.05 <= value(registry, "eventbus_handler_duration_seconds_sum", handler=name) < 1
    assert value(registry, "eventbus_handler_duration_seconds_bucket", handler=name, le="0.025") == 0
    assert value(registry, "eventbus_handler_duration_seconds_bucket", handler=name, le="0.1") == 1


def test_an_async_handler_s_runs_are_counted_too() -> None:
    class AsyncBilling(Handler):
        async def handle_event(self, event: Placed) -> None:
            if event.outcome == "raise":
                raise RuntimeError("boom")

    registry = CollectorRegistry()
    bus = a_bus(AsyncBilling)
    EventBusMetrics(bus, registry).install()
    with stub_worker(bus) as worker:
        bus.publish([Placed("a"), Placed("b", "raise")])
        drain_all(worker)
    name = f"{AsyncBilling.__module__}.{AsyncBilling.__qualname__}"
    # The default max_retries (4): five failed attempts, four retried, the last dead-lettered.
    assert runs(registry, name) == {"success": 1, "failure": 5, "retry": 4, "dead_lettered": 1}


def test_an_event_nobody_wants_is_published_and_a_failed_publish_counts_nothing() -> None:
    registry = CollectorRegistry()
    bus = EventBus().configure(handlers={Placed: [Billing, Picky]}, broker="stub")
    EventBusMetrics(bus, registry).install()
    bus.publish(Unwanted(1))
    with pytest.raises(EventEncodeError):
        bus.publish([Placed("a"), Placed("b", object())])  # type: ignore[arg-type]
    assert value(registry, "eventbus_events_published_total", event_type=f"{__name__}:Unwanted") == 1
    assert value(registry, "eventbus_events_published_total", event_type=PLACED) == 0
    assert runs(registry, PICKY) == {}


def test_a_refusal_is_counted_by_queue() -> None:
    registry = CollectorRegistry()
    bus = a_bus()
    EventBusMetrics(bus, registry).install()
    bus.instruments.refused("events", "its body is not JSON")
    bus.instruments.refused("events", "unsigned")
    assert value(registry, "eventbus_messages_refused_total", queue="events") == 2


@pytest.fixture
def on_redis() -> Iterator[tuple[EventBus, CollectorRegistry]]:
    """A bus on a Redis broker (so with lanes), its metrics installed in a registry of the test's own."""
    from dramatiq_eventbus.brokers import EventBusRedisBroker

    broker = EventBusRedisBroker(url=servers.require_redis())
    try:
        registry = CollectorRegistry()
        bus = EventBus().configure(handlers={Placed: [Billing]}, broker=broker)
        EventBusMetrics(bus, registry).install()
        yield bus, registry
    finally:
        broker.close()


@pytest.mark.redis
def test_a_redis_consumer_s_refusal_is_counted(on_redis: tuple[EventBus, CollectorRegistry]) -> None:
    from dramatiq_eventbus.brokers.inspection import Refusal, log_dead_lettered

    bus, registry = on_redis
    log_dead_lettered(bus.broker, "events", Refusal("its body is not JSON"))
    assert value(registry, "eventbus_messages_refused_total", queue="events") == 1


def test_installing_twice_importing_twice_and_a_second_instance_register_nothing_twice() -> None:
    registry = CollectorRegistry()
    bus = a_bus()
    metrics = EventBusMetrics(bus, registry)
    assert metrics.install() is metrics
    assert metrics.install() is metrics
    # A second instance for the same bus and registry: the first keeps counting, once.
    assert EventBusMetrics(bus, registry).install() is metrics
    reloaded = importlib.reload(prometheus_module)
    try:
        assert reloaded.EventBusMetrics(bus, registry).install() is metrics
        bus.publish(Placed("a"))
        assert value(registry, "eventbus_events_published_total", event_type=PLACED) == 1
        assert bus.instruments.active == (metrics,)
        # The default registry too, where Dramatiq's own metrics could live: names of our own only.
        assert all(name.startswith("eventbus_") for name in METRIC_NAMES)
    finally:
        importlib.reload(prometheus_module)
    metrics.uninstall()
    bus.publish(Placed("b"))
    assert value(registry, "eventbus_events_published_total", event_type=PLACED) == 1
    assert bus.instruments.active == ()
    assert "OutcomeMiddleware" not in [type(m).__name__ for m in bus.broker.middleware]


def test_uninstall_takes_the_middleware_off_and_install_puts_it_before_retries() -> None:
    from dramatiq.middleware import Retries

    bus = a_bus()
    metrics = EventBusMetrics(bus, CollectorRegistry()).install()
    names = [type(m).__name__ for m in bus.broker.middleware]
    assert names.index("OutcomeMiddleware") < names.index(Retries.__name__)
    metrics.uninstall()
    assert "OutcomeMiddleware" not in [type(m).__name__ for m in bus.broker.middleware]


# -- lanes --------------------------------------------------------------------------------------


def test_a_bus_without_lanes_exports_no_lane_gauges() -> None:
    registry = CollectorRegistry()
    EventBusMetrics(a_bus(), registry).install()
    assert b"eventbus_lanes_waiting" not in generate_latest(registry)


@pytest.fixture
def lane_store() -> Iterator[RedisLaneStore]:
    with scratch_lane_store("eventbus-metrics-test") as store:
        yield store


@pytest.mark.redis
def test_the_lane_gauges_agree_with_lanes_and_read_at_most_max_lanes(lane_store: RedisLaneStore) -> None:
    entries = [(f"handler:{n}", f"m{n}-{i}", b"{}", "events_partitioned") for n in range(30) for i in range(2)]
    lane_store.append(entries[:20])
    time.sleep(0.05)
    lane_store.append(entries[20:])
    statuses = lane_store.lanes()
    waiting, age = LaneGauges().read(lane_store)
    assert waiting == len(statuses) == 30
    assert age == pytest.approx(statuses[0].age_seconds, abs=0.05)
    assert age >= 0.05
    # Read at most 5 lanes: all still count as waiting, the age is the oldest of those read.
    sampled_waiting, sampled_age = LaneGauges(max_lanes=5).read(lane_store)
    assert sampled_waiting == 30
    assert 0 <= sampled_age <= age + 0.01


@pytest.mark.redis
def test_the_lane_gauges_of_a_bus_with_lanes(on_redis: tuple[EventBus, CollectorRegistry]) -> None:
    _, registry = on_redis
    # The bus's lanes are every test's on this Redis: that they are read, not how many.
    assert registry.get_sample_value("eventbus_lanes_waiting") is not None
    age = registry.get_sample_value("eventbus_oldest_lane_head_age_seconds")
    assert age is not None and age >= 0


# -- the worker entry -----------------------------------------------------------------------------


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("EVENTBUS_", "PROMETHEUS_"))}
    clean["PYTHONPATH"] = str(REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**clean, "EVENTBUS_HANDLERS": "tests.contrib.prometheus_handlers:HANDLERS", **env},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=30,
    )


def test_the_worker_imports_prometheus_client_only_when_the_port_is_set() -> None:
    code = """
        import sys
        import dramatiq_eventbus.worker
        print("prometheus_client" in sys.modules)
    """
    without = run_python(code, {"EVENTBUS_BROKER_URL": "stub"})
    assert without.stdout.strip() == "False", without.stderr
    blocked = run_python(
        "import sys; sys.modules['prometheus_client'] = None\n" + textwrap.dedent(code),
        {"EVENTBUS_BROKER_URL": "stub", "EVENTBUS_METRICS_PORT": "9399"},
    )
    assert blocked.returncode != 0
    assert "pip install 'dramatiq-eventbus[prometheus]'" in blocked.stderr
    wrong = run_python(code, {"EVENTBUS_BROKER_URL": "stub", "EVENTBUS_METRICS_PORT": "99999"})
    assert wrong.returncode != 0 and "EVENTBUS_METRICS_PORT must be a port number" in wrong.stderr


# -- a real worker's metrics port -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample the port serves, parsed as Prometheus parses it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def run_directory(worker: WorkerProcess) -> Path:
    """Where a worker started without PROMETHEUS_MULTIPROC_DIR counts: a directory of its dramatiq command."""
    return Path(tempfile.gettempdir()) / "dramatiq-eventbus-prometheus" / str(worker.pid)


HANDLERS_MODULE = prometheus_handlers.__name__
PINGS = 12


@dataclass
class MetricsRun:
    """A 2-process ``dramatiq`` worker serving its metrics on ``port``, and a publisher with queues of their own."""

    worker: WorkerProcess
    publisher: EventBus
    port: int
    queues: tuple[str, str]
    records: redis.Redis
    prefix: str

    def pids(self) -> set[int]:
        """The worker processes that ran a handler."""
        return {int(pid) for pid in self.records.lrange(f"{self.prefix}:pids", 0, -1)}

    def wait_until(self, done: Callable[[Samples], bool], port: int | None = None) -> Samples:
        """Scrape until ``done`` says so, then once more a little later: what it returns is final."""

        def scraped() -> Samples | None:
            try:
                samples = scrape(port or self.port)
            except OSError:
                return None
            return samples if done(samples) else None

        wait_for(scraped, timeout=20, interval=0.2, describe=lambda: f"Not done.{self.worker.log_tail()}")
        time.sleep(0.3)  # anything counted twice would show by now
        return scrape(port or self.port)


@contextmanager
def metrics_run(url: str, tmp_path: Path, module: str = "dramatiq_eventbus.worker", **env: str) -> Iterator[MetricsRun]:
    """Start a MetricsRun on the broker at ``url``; stop it and delete what it left after."""
    redis_url = servers.require_redis()
    suffix = uuid.uuid4().hex[:10]
    queues = (f"metrics_{suffix}", f"metrics_{suffix}_partitioned")
    prefix = f"eventbus-metrics-test-{suffix}"
    port = free_port()
    worker_env = {
        "EVENTBUS_HANDLERS": f"{HANDLERS_MODULE}:HANDLERS",
        "EVENTBUS_BROKER_URL": url,
        "EVENTBUS_QUEUE": queues[0],
        "EVENTBUS_PARTITIONED_QUEUE": queues[1],
        "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps(ACTOR_OPTIONS),
        "EVENTBUS_METRICS_PORT": str(port),
        prometheus_handlers.REDIS_VAR: redis_url,
        prometheus_handlers.PREFIX_VAR: prefix,
        **env,
    }
    worker = WorkerProcess(module, queues=queues, env=worker_env, log_path=tmp_path / "worker.log", processes=2)
    worker.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # a directory of the run's own
    publisher = EventBus().configure(
        handlers=f"{HANDLERS_MODULE}:HANDLERS",
        broker=url,
        queue=queues[0],
        partitioned_queue=queues[1],
        default_actor_options=ACTOR_OPTIONS,
    )
    probe = RabbitmqQueues(url) if url.startswith("amqp") else RedisQueues(url)
    records = redis.Redis.from_url(redis_url)
    try:
        yield MetricsRun(worker.start(), publisher, port, queues, records, prefix)
    finally:
        worker.stop()
        if worker.process is not None:
            shutil.rmtree(run_directory(worker), ignore_errors=True)
        publisher.broker.close()
        probe.delete(queues)
        probe.close()
        records.delete(f"{prefix}:pids")
        records.close()


ACTOR_OPTIONS = {"min_backoff": 50, "max_backoff": 100}
PONG = f"{HANDLERS_MODULE}.Pong"
RUNS = "eventbus_handler_runs_total"


# On RabbitMQ, a slow variant: the middleware counts the same on either broker; make test scrapes
# a worker on Redis (here, and beside Dramatiq's own middleware below).
@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.slow]),
    ],
)
def test_a_scrape_of_the_metrics_port_after_a_known_workload_shows_the_expected_counts(
    broker: str, tmp_path: Path
) -> None:
    url = servers.require_rabbitmq() if broker == "rabbitmq" else servers.require_redis()
    with metrics_run(url, tmp_path) as run:
        registry = CollectorRegistry()  # the publishing side counts in this process
        EventBusMetrics(run.publisher, registry).install()
        run.publisher.publish([prometheus_handlers.Ping(n) for n in range(PINGS)])
        run.publisher.publish([prometheus_handlers.Boom(1), prometheus_handlers.Again(1)])
        exploder = f"{HANDLERS_MODULE}.Exploder"
        samples = run.wait_until(
            lambda samples: (
                sample(samples, RUNS, handler=PONG, outcome="success") >= PINGS
                and sample(samples, RUNS, handler=exploder, outcome="dead_lettered") >= 1
                and sample(samples, RUNS, handler=f"{HANDLERS_MODULE}.Handled", outcome="duplicate") >= 1
            )
        )
        counted = {
            (dict(labels)["handler"].rsplit(".", 1)[1], dict(labels)["outcome"]): count
            for (name, labels), count in samples.items()
            if name == RUNS
        }
        assert {key: count for key, count in counted.items() if count} == {
            ("Pong", "success"): PINGS,
            ("Exploder", "failure"): 2,
            ("Exploder", "retry"): 1,
            ("Exploder", "dead_lettered"): 1,
            ("Handled", "duplicate"): 1,
        }
        assert sample(samples, "eventbus_handler_duration_seconds_count", handler=PONG) == PINGS
        assert sample(samples, "eventbus_handler_duration_seconds_count", handler=exploder) == 2
        assert sample(samples, "eventbus_handler_delay_seconds_count", handler=PONG) == PINGS
        assert sample(samples, "eventbus_handler_delay_seconds_count", handler=exploder) == 1
        # Nothing was published in the worker; only eventbus_* families are served.
        assert not any(name.startswith("eventbus_events_published") for name, _ in samples)
        assert all(name.startswith("eventbus_") for name, _ in samples)
        if broker == "redis":  # a Redis broker keeps lanes: the gauges are there
            assert ("eventbus_lanes_waiting", ()) in samples
        # Both worker processes ran some, each counting in its own files: the port serves their sum.
        pids = run.pids()
        assert len(pids) == 2, run.worker.log_tail()
        assert {f"counter_{pid}.db" for pid in pids} <= set(os.listdir(run_directory(run.worker)))

        assert value(registry, "eventbus_events_published_total", event_type=f"{HANDLERS_MODULE}:Ping") == PINGS
        assert runs(registry, f"{HANDLERS_MODULE}.NeverInterested") == {"not_interested": PINGS}


@pytest.mark.redis
def test_beside_dramatiq_s_own_prometheus_middleware_each_port_serves_exact_counts(tmp_path: Path) -> None:
    dramatiq_port = free_port()
    with metrics_run(
        servers.require_redis(),
        tmp_path,
        "tests.contrib.prometheus_beside_dramatiq",
        dramatiq_prom_db=str(tmp_path / "dramatiq-prometheus"),  # Dramatiq never empties its own
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(dramatiq_port),
    ) as run:
        run.publisher.publish([prometheus_handlers.Ping(n) for n in range(PINGS)])
        theirs_counted = {"actor_name": PONG, "queue_name": run.queues[0]}
        ours = run.wait_until(lambda samples: sample(samples, RUNS, handler=PONG, outcome="success") >= PINGS)
        theirs = run.wait_until(
            lambda samples: sample(samples, "dramatiq_messages_total", **theirs_counted) >= PINGS, dramatiq_port
        )
        assert sample(ours, RUNS, handler=PONG, outcome="success") == PINGS
        assert sample(theirs, "dramatiq_messages_total", **theirs_counted) == PINGS
        # Ours serves the bus's metrics only, so that scraping both counts nothing twice.
        assert all(name.startswith("eventbus_") for name, _ in ours)
        assert any(name.startswith("dramatiq_") for name, _ in theirs)
        # Theirs reads the same directory (one per process, a prometheus_client rule): ours too.
        assert any(name.startswith("eventbus_") for name, _ in theirs)
        assert len(run.pids()) == 2
        assert "serve_beside_dramatiq" in run.worker.log()


# -- the dashboard and the guide ------------------------------------------------------------------


def test_the_dashboard_is_json_and_queries_only_metrics_the_module_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target
    ]
    assert len(expressions) >= 8
    queried = {name for expr in expressions for name in re.findall(r"\beventbus_[a-z_]+", expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
    assert families - METRIC_NAMES == set()
    # Every panel the brief lists has a metric behind it.
    assert families >= METRIC_NAMES


def test_the_guide_names_every_metric_outcome_and_the_variable() -> None:
    guide = "\n".join(page.read_text() for page in GUIDES if page.exists())
    missing = [name for name in (*METRIC_NAMES, *OUTCOMES, "EVENTBUS_METRICS_PORT") if f"`{name}`" not in guide]
    assert missing == []
