"""Prometheus metrics of a bus: events published, handler runs by outcome, durations, lanes, refusals.

Needs the extra: ``pip install 'dramatiq-eventbus[prometheus]'``. Two ways in:

- A worker: ``EVENTBUS_METRICS_PORT=9300 dramatiq dramatiq_eventbus.worker``. Every worker
  process counts in Prometheus's multiprocess mode, and one exposition server per
  ``dramatiq`` command, started as Dramatiq starts its own (a ``forks`` entry of a
  middleware), serves the sum of all of them on that port (see :func:`serve_from_env`).
- Any process, such as a web app that publishes: ``EventBusMetrics(bus).install()``, then
  expose ``prometheus_client.REGISTRY`` (or the registry given) on the app's own /metrics.

Every metric is named ``eventbus_*`` and registered in the registry given, never at import:
importing this module twice, or installing twice, registers nothing twice, and Dramatiq's
own Prometheus middleware (``dramatiq_*``) can run beside it.

One failed handler attempt counts ``failure`` and then exactly one of ``retry`` (Dramatiq
will run it again) or ``dead_lettered`` (failed for good); see the metrics guide.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.middleware import Middleware, Retries

from ..actors import is_handler_actor
from ..codecs import type_name
from ..environment import METRICS_VARIABLES
from ..errors import AlreadyHandled
from ..instrumentation import Instrument
from ..metadata import EventContext, EventMetadata

try:
    import prometheus_client
    from prometheus_client import values as prometheus_values
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import Collector, CollectorRegistry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dramatiq_eventbus.contrib.prometheus needs prometheus_client: pip install 'dramatiq-eventbus[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from ..bus import EventBus
    from ..ordering import LaneStore
    from ..registry import HandlerSpec

logger = logging.getLogger(__name__)

#: What a handler run, or a handler's share of one publish, is counted as.
OUTCOMES = ("success", "failure", "retry", "dead_lettered", "not_interested", "duplicate")

#: Every metric this module exports, as Prometheus names its series' family (counters end in
#: ``_total``, histograms have ``_bucket``, ``_sum`` and ``_count``).
METRIC_NAMES = frozenset(
    {
        "eventbus_events_published_total",
        "eventbus_handler_runs_total",
        "eventbus_messages_refused_total",
        "eventbus_handler_duration_seconds",
        "eventbus_handler_delay_seconds",
        "eventbus_lanes_waiting",
        "eventbus_oldest_lane_head_age_seconds",
    }
)

#: Seconds a handler run takes; Prometheus's default buckets, and longer runs.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
#: Seconds from publish() to a handler's first attempt starting.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
#: The most lanes a scrape reads the head of; beyond, see :class:`LaneGauges`.
DEFAULT_MAX_LANES = 1_000

_PREFIX = "eventbus_"
# Where a registry keeps this module's metrics: on the registry itself, so that a second
# install, or a second import of this module, finds them instead of registering them again.
_REGISTRY_ATTRIBUTE = "_dramatiq_eventbus_metrics"
# Where worker processes count when no multiprocess directory is given: one per dramatiq command.
_RUN_DIRECTORY_PARENT = "dramatiq-eventbus-prometheus"


class BusMetrics:
    """The metric objects of one registry, shared by every :class:`EventBusMetrics` installed there.

    A collector of its own, so that the registry sees all of them at once.
    """

    def __init__(self) -> None:
        self.published = prometheus_client.Counter(
            "eventbus_events_published",
            "Events handed over by publish(), by event type.",
            ["event_type"],
            registry=None,
        )
        self.runs = prometheus_client.Counter(
            "eventbus_handler_runs",
            "Handler runs and deliveries by outcome: success, failure, retry, dead_lettered, "
            "not_interested (at publish), duplicate (an inbox had it handled).",
            ["handler", "outcome"],
            registry=None,
        )
        self.refused = prometheus_client.Counter(
            "eventbus_messages_refused",
            "Messages a consumer refused unread (too large, unreadable, unsigned...) and dead-lettered.",
            ["queue"],
            registry=None,
        )
        self.duration = prometheus_client.Histogram(
            "eventbus_handler_duration_seconds",
            "Seconds each handler run took, by handler.",
            ["handler"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )
        self.delay = prometheus_client.Histogram(
            "eventbus_handler_delay_seconds",
            "Seconds from publish() to the start of a handler's first attempt, by handler.",
            ["handler"],
            buckets=DELAY_BUCKETS,
            registry=None,
        )
        self._all = (self.published, self.runs, self.refused, self.duration, self.delay)
        #: The EventBusMetrics counting each bus (by id) into these, so that a second one does not count twice.
        self.owners: dict[int, EventBusMetrics] = {}
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        for metric in self._all:
            yield from metric.collect()

    def describe(self) -> Iterator[Metric]:
        for metric in self._all:
            yield from metric.describe()


def metrics_in(registry: CollectorRegistry) -> BusMetrics:
    """The bus metrics registered in ``registry``, registered there the first time."""
    found: BusMetrics | None = getattr(registry, _REGISTRY_ATTRIBUTE, None)
    if found is None:
        found = BusMetrics()
        registry.register(found)
        setattr(registry, _REGISTRY_ATTRIBUTE, found)
    return found


class LaneGauges(Collector):
    """``eventbus_lanes_waiting`` and ``eventbus_oldest_lane_head_age_seconds``, read at scrape time.

    Read with the lane store's ``summary()``, which looks at ``max_lanes`` lanes at most (the
    lanes due first), in two round trips: ``EventBus.lanes()`` takes two per lane, too slow for
    a scrape. A bus without lanes (no Redis for them) exports neither gauge.

    Parameters:
      max_lanes(int): The most lanes one scrape reads.
    """

    def __init__(self, max_lanes: int = DEFAULT_MAX_LANES) -> None:
        if max_lanes < 1:
            raise ValueError(f"max_lanes must be at least 1, not {max_lanes!r}")
        self.max_lanes = max_lanes
        self._buses: tuple[EventBus, ...] = ()
        self._lock = threading.Lock()

    def add(self, bus: EventBus) -> None:
        with self._lock:
            if bus not in self._buses:
                self._buses = (*self._buses, bus)

    def remove(self, bus: EventBus) -> None:
        with self._lock:
            self._buses = tuple(b for b in self._buses if b is not bus)

    def collect(self) -> Iterator[Metric]:
        stores: list[Any] = []
        for bus in self._buses:
            store = bus.config.lanes if bus.is_configured else None
            if store is not None and all(store is not seen for seen in stores):
                stores.append(store)
        if not stores:
            return
        waiting, oldest = 0, 0.0
        for store in stores:
            try:
                count, age = self.read(store)
            except Exception:
                logger.exception("Could not read the lanes for eventbus_lanes_waiting; this scrape leaves them out")
                return
            waiting += count
            oldest = max(oldest, age)
        yield GaugeMetricFamily("eventbus_lanes_waiting", "Lanes with a head not handled yet.", value=waiting)
        yield GaugeMetricFamily(
            "eventbus_oldest_lane_head_age_seconds",
            "Seconds the oldest lane head has been its lane's head (0 without lanes).",
            value=oldest,
        )

    def describe(self) -> Iterator[Metric]:
        # Described, so that a registry refuses a second collector of these names.
        yield GaugeMetricFamily("eventbus_lanes_waiting", "Lanes with a head not handled yet.")
        yield GaugeMetricFamily("eventbus_oldest_lane_head_age_seconds", "Seconds the oldest lane head waited.")

    def read(self, store: LaneStore) -> tuple[int, float]:
        """``(lanes waiting, age in seconds of the oldest head)`` of one lane store."""
        waiting, age = store.summary(max_lanes=self.max_lanes)
        return waiting, age


class OutcomeMiddleware(Middleware):
    """Counts ``retry`` and ``dead_lettered``: what Dramatiq decided about a failed bus handler message.

    Installed before Retries, so that its ``after_process_message`` runs after Retries has
    failed the message or not (Dramatiq runs "after" hooks in reverse order). Only the bus's
    handler actors count. Its ``forks`` entry starts the exposition server in a worker
    started with ``EVENTBUS_METRICS_PORT``.
    """

    def __init__(self, runs: Any, *, serves: bool = False) -> None:
        self.runs = runs
        self.serves = serves
        self.broker: Broker | None = None

    @property
    def forks(self) -> list[Any]:
        if not self.serves:
            return []
        if self.broker is not None and _has_dramatiq_prometheus(self.broker):
            return [serve_beside_dramatiq]
        return [serve_worker_metrics]

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None and not message.failed:
            return
        if is_handler_actor(broker, message.actor_name):
            outcome = "dead_lettered" if message.failed else "retry"
            self.runs.labels(message.actor_name, outcome).inc()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.failed and is_handler_actor(broker, message.actor_name):
            self.runs.labels(message.actor_name, "dead_lettered").inc()


class EventBusMetrics(Instrument):
    """Prometheus metrics of one bus, in one process: an instrument, a Dramatiq middleware, lane gauges.

    Parameters:
      bus(EventBus | None): The bus; the default bus if None. The lane gauges need it configured;
        the rest counts from install() on.
      registry(CollectorRegistry | None): Where the metrics are registered: Prometheus's
        default ``REGISTRY`` unless given; None for a registry of this module's own, for
        a worker process in multiprocess mode, where the exposition server reads the files.
      lanes(bool): Export the lane gauges (a bus without lanes exports none anyway).
      max_lanes(int): The most lanes one scrape reads; see :class:`LaneGauges`.
      serves(bool): Have Dramatiq start the exposition server on ``EVENTBUS_METRICS_PORT``
        (:func:`serve_from_env` sets it, with the process in multiprocess mode).
    """

    def __init__(
        self,
        bus: EventBus | None = None,
        registry: CollectorRegistry | None = prometheus_client.REGISTRY,
        *,
        lanes: bool = True,
        max_lanes: int = DEFAULT_MAX_LANES,
        serves: bool = False,
    ) -> None:
        if bus is None:
            from .. import default_bus

            bus = default_bus
        self.bus = bus
        self.registry = _own_registry() if registry is None else registry
        self.metrics = metrics_in(self.registry)
        self.lane_gauges: LaneGauges | None = _lane_gauges_in(self.registry, max_lanes) if lanes else None
        self.middleware = OutcomeMiddleware(self.metrics.runs, serves=serves)
        self._published: dict[type, Any] = {}
        self._handlers: dict[str, _HandlerMetrics] = {}
        # Per event of a publish() call between before_publish and after_publish.
        self._pending: dict[str, tuple[type, Sequence[HandlerSpec]]] = {}
        self._following = threading.Lock()

    # -- switching on and off -----------------------------------------------------------------

    def install(self) -> EventBusMetrics:
        """Start counting, and return what counts.

        Installing again only follows the bus onto its current broker. Another
        EventBusMetrics already counting the same bus into the same registry is returned
        instead, and this one stays off, so that nothing is counted twice.
        """
        with self.metrics.lock:
            owner = self.metrics.owners.setdefault(id(self.bus), self)
        if owner is not self:
            return owner._install()
        return self._install()

    def _install(self) -> EventBusMetrics:
        self.bus.add_instrument(self)
        if self.lane_gauges is not None:
            self.lane_gauges.add(self.bus)
        if self.bus.is_configured:
            self._follow(self.bus.broker)
        return self

    def uninstall(self) -> None:
        """Stop counting (the counts so far stay in the registry)."""
        with self.metrics.lock:
            if self.metrics.owners.get(id(self.bus)) is self:
                del self.metrics.owners[id(self.bus)]
        self.bus.remove_instrument(self)
        if self.lane_gauges is not None:
            self.lane_gauges.remove(self.bus)
        with self._following:
            broker = self.middleware.broker
            if broker is not None and self.middleware in broker.middleware:
                broker.middleware.remove(self.middleware)
            self.middleware.broker = None
        self._pending.clear()

    def _follow(self, broker: Broker) -> None:
        """Put the outcome middleware on ``broker``, before Retries, once."""
        with self._following:  # worker threads may all notice a new broker at once
            if self.middleware.broker is not broker:
                self._move_to(broker)

    def _move_to(self, broker: Broker) -> None:
        previous = self.middleware.broker
        if previous is not None and self.middleware in previous.middleware:
            previous.middleware.remove(self.middleware)
        if any(isinstance(m, OutcomeMiddleware) and m.runs is self.metrics.runs for m in broker.middleware):
            # Another bus on the same broker counts its outcomes into the same counter already.
            self.middleware.broker = broker
            return
        if any(isinstance(m, Retries) for m in broker.middleware):
            broker.add_middleware(self.middleware, before=Retries)
        else:
            broker.add_middleware(self.middleware)
        self.middleware.broker = broker

    # -- the instrument's hooks ---------------------------------------------------------------

    def before_publish(
        self,
        event: object,
        metadata: EventMetadata,
        handlers: Sequence[HandlerSpec],
        not_interested: Sequence[HandlerSpec],
        partition_key: str | None,
    ) -> Mapping[str, str] | None:
        self._pending[metadata.event_id] = (type(event), not_interested)
        return None

    def after_publish(self, metadata: Sequence[EventMetadata], exception: BaseException | None) -> None:
        pending = self._pending
        for meta in metadata:
            entry = pending.pop(meta.event_id, None)
            if entry is None or exception is not None:
                continue  # a failed call hands nothing over: counted neither published nor not_interested
            cls, not_interested = entry
            published = self._published.get(cls)
            if published is None:
                published = self._published[cls] = self.metrics.published.labels(type_name(cls))
            published.inc()
            for spec in not_interested:
                self._children(spec.name).not_interested.inc()

    def handling(
        self, handler: HandlerSpec, event: object, context: EventContext | None
    ) -> AbstractContextManager[object] | None:
        bus = self.bus
        if bus.is_configured and self.middleware.broker is not bus.broker:
            self._follow(bus.broker)  # configure() moved the bus onto another broker
        return _Run(self._children(handler.name), context)

    def _children(self, name: str) -> _HandlerMetrics:
        """One handler's labelled metrics, looked up once (``labels()`` takes a lock and a dict each time)."""
        found = self._handlers.get(name)
        if found is None:
            found = self._handlers[name] = _HandlerMetrics(self.metrics, name)
        return found

    def refused(self, queue_name: str, reason: str) -> None:
        self.metrics.refused.labels(queue_name).inc()


class _HandlerMetrics:
    """The children of one handler's labels."""

    __slots__ = ("delay", "duplicate", "duration", "failure", "not_interested", "success")

    def __init__(self, metrics: BusMetrics, name: str) -> None:
        self.delay = metrics.delay.labels(name)
        self.duration = metrics.duration.labels(name)
        self.success = metrics.runs.labels(name, "success")
        self.failure = metrics.runs.labels(name, "failure")
        self.duplicate = metrics.runs.labels(name, "duplicate")
        self.not_interested = metrics.runs.labels(name, "not_interested")


class _Run:
    """Around one handler run: its delay at the start, its duration and outcome at the end."""

    __slots__ = ("clock", "context", "metrics")

    def __init__(self, metrics: _HandlerMetrics, context: EventContext | None) -> None:
        self.metrics = metrics
        self.context = context
        self.clock = 0.0

    def __enter__(self) -> None:
        context = self.context
        if context is not None and context.attempt == 1:
            self.metrics.delay.observe(max(time.time() - context.published_at.timestamp(), 0.0))
        self.clock = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, exception: BaseException | None, traceback: Any) -> None:
        metrics = self.metrics
        metrics.duration.observe(time.perf_counter() - self.clock)
        if kind is None:
            metrics.success.inc()
        elif issubclass(kind, AlreadyHandled):
            metrics.duplicate.inc()
        else:
            metrics.failure.inc()


# -- registries -------------------------------------------------------------------------------

_registry_lock = threading.Lock()
_OWN: list[CollectorRegistry] = []


def _own_registry() -> CollectorRegistry:
    """This module's own registry, one per process (multiprocess mode shares one set of counters)."""
    with _registry_lock:
        if not _OWN:
            _OWN.append(CollectorRegistry())
        return _OWN[0]


def _lane_gauges_in(registry: CollectorRegistry, max_lanes: int) -> LaneGauges:
    attribute = f"{_REGISTRY_ATTRIBUTE}_lanes"
    found: LaneGauges | None = getattr(registry, attribute, None)
    if found is None:
        found = LaneGauges(max_lanes)
        registry.register(found)
        setattr(registry, attribute, found)
    return found


# -- workers ----------------------------------------------------------------------------------


def port_from_env(environ: Mapping[str, str] | None = None) -> int | None:
    """``EVENTBUS_METRICS_PORT``, or None when it is unset or blank.

    Raises:
      ConfigurationError: It is not a port number.
    """
    environ = os.environ if environ is None else environ
    (variable,) = METRICS_VARIABLES
    value = environ.get(variable.name, "")
    if not value.strip():
        return None
    port: int = variable.parse(variable.name, value)
    return port


def serve_from_env(bus: EventBus, environ: Mapping[str, str] | None = None) -> EventBusMetrics | None:
    """In a worker process: count ``bus``'s metrics for the port ``EVENTBUS_METRICS_PORT`` names.

    ``dramatiq_eventbus.worker`` calls it. Each worker process counts in Prometheus's
    multiprocess mode, in ``PROMETHEUS_MULTIPROC_DIR`` if set (keep it empty between runs,
    as prometheus_client asks), else in a directory of this ``dramatiq`` command's own under
    the temporary directory; beside Dramatiq's own Prometheus middleware, in its directory.
    The first worker process hands Dramatiq the exposition server to start once, in a
    process of its own, which serves every process's ``eventbus_*`` metrics summed.

    Returns:
      EventBusMetrics | None: What counts, installed; None when the variable is unset.

    Raises:
      ConfigurationError: The variable is not a port number.
    """
    port = port_from_env(environ)
    if port is None:
        return None
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or _run_directory(os.getppid())
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    _count_in_files()
    return EventBusMetrics(bus, registry=None, serves=True).install()


def _count_in_files() -> None:
    """Make the metrics made from now on count in files, as if PROMETHEUS_MULTIPROC_DIR had been
    set before prometheus_client was first imported (it reads it once, at import)."""
    if not getattr(prometheus_values.ValueClass, "_multiprocess", False):
        prometheus_values.ValueClass = prometheus_values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _run_directory(run_pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), _RUN_DIRECTORY_PARENT, str(run_pid))


def _has_dramatiq_prometheus(broker: Broker) -> bool:
    return any(
        type(m).__name__ == "Prometheus" and type(m).__module__ == "dramatiq.middleware.prometheus"
        for m in broker.middleware
    )


def serve_worker_metrics() -> int:
    """The exposition server of a worker group: a ``forks`` entry, run in a process of its own."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or _run_directory(os.getppid())
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _forget_finished_runs()
    return _serve(directory)


def serve_beside_dramatiq() -> int:
    """The exposition server when Dramatiq's Prometheus middleware counts too: its directory is the one."""
    from dramatiq.middleware.prometheus import DB_PATH

    return _serve(DB_PATH)


def _forget_finished_runs() -> None:
    """Remove the directories of ``dramatiq`` commands that are gone."""
    parent = os.path.join(tempfile.gettempdir(), _RUN_DIRECTORY_PARENT)
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        if not name.isdigit() or _alive(int(name)):
            continue
        path = os.path.join(parent, name)
        with suppress(OSError):  # another server may be removing it too
            for file in os.listdir(path):
                if file.endswith(".db"):
                    os.remove(os.path.join(path, file))
            os.rmdir(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _EventBusFamilies(Collector):
    """The ``eventbus_*`` families of a multiprocess directory (which Dramatiq's may share)."""

    def __init__(self, directory: str) -> None:
        self.files = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        families: Iterable[Metric] = self.files.collect()  # type: ignore[no-untyped-call]
        return [family for family in families if family.name.startswith(_PREFIX)]


def _serve(directory: str) -> int:
    port = port_from_env()
    if port is None:
        logger.error("EVENTBUS_METRICS_PORT is not set in the exposition server's process; nothing to serve")
        return 1
    os.makedirs(directory, exist_ok=True)
    registry = CollectorRegistry()
    registry.register(_EventBusFamilies(directory))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            output = prometheus_client.generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", prometheus_client.CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(output)))
            self.end_headers()
            self.wfile.write(output)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    try:
        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    except OSError as exc:
        logger.error("The event bus's metrics server cannot listen on port %d: %s", port, exc)
        return 1
    # After the port is taken, so that a port in use is said at once; scrapes wait meanwhile.
    _add_lanes_from_env(registry)
    logger.info("Serving the event bus's metrics on port %d, from %s", port, directory)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _add_lanes_from_env(registry: CollectorRegistry) -> None:
    """The lane gauges, from a bus configured here as the workers configured theirs."""
    from .. import EventBus
    from ..environment import arguments_from_env

    try:
        bus = EventBus().configure(**arguments_from_env())
    except Exception:
        logger.exception("The metrics server could not configure a bus from EVENTBUS_*: no lane gauges")
        return
    if bus.config.lanes is None:
        return
    gauges = LaneGauges()
    gauges.add(bus)
    registry.register(gauges)


__all__ = [
    "DEFAULT_MAX_LANES",
    "METRIC_NAMES",
    "OUTCOMES",
    "BusMetrics",
    "EventBusMetrics",
    "LaneGauges",
    "OutcomeMiddleware",
    "metrics_in",
    "port_from_env",
    "serve_beside_dramatiq",
    "serve_from_env",
    "serve_worker_metrics",
]
