"""The runner: side-by-side measurement, the results table, the JSON file, the machine.

Every scenario compares the bus with a baseline in the same run, because these machines
are shared and noisy: the two alternate round by round (bus first in even rounds, the
baseline first in odd ones), each round gives one ratio, and the result is the median
ratio. A figure measured minutes apart from its baseline would mean little here.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .deploy import Shared

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does: ``FULL`` for ``make bench``, ``QUICK`` for an early look at
    the headline figures, ``SMOKE`` to check it all runs."""

    rounds: int  # side-by-side rounds of the publish scenarios
    publishes: int  # publish() calls per round of scenarios 1 and 2
    free_publishes: int  # publish() calls per round of scenario 3 (no I/O)
    batches: int  # 100-event batches per round of scenario 4
    drain: int  # messages per drain of the worker scenarios (5, 6, 10)
    drain_rounds: int  # side-by-side rounds of scenarios 5 and 6
    drain_turns: int  # drains of each side per round of scenarios 5 and 6, taking turns
    latency_seconds: float  # per round of scenario 8
    latency_rates: tuple[int, ...]  # events/s in scenario 8, one set of rows each
    latency_rounds: int
    idle_seconds: float  # scenario 8: how long each idle worker is watched, per round
    idle_rounds: int
    celery_fan_outs: int  # fan-outs per round of scenario 10
    celery_rounds: int  # side-by-side rounds of scenario 10's workers (Celery drains slowly)
    memory: tuple[int, int] = (10_000, 1_000_000)  # scenario 9: events before the two readings
    hostile_bytes: int = 1 << 20  # scenario 11: the max_message_bytes its forged messages fill
    hostile_rounds: int = 7  # scenario 11: reads of each forged message
    io_drain: int = 1000  # scenario 13: messages per drain and per worker process
    io_rounds: int = 5  # side-by-side rounds of each of scenario 13's rows
    io_turns: int = 2  # scenario 13: drains of each side per round, taking turns
    instrument_rounds: int = 7  # rounds of scenario 12, whose figures have no target
    curve_rounds: int = 15  # rounds of scenario 14, each point once per round
    curve_publishes: int = 300  # scenario 14: publish() calls per point and round (a tenth at 10+ handlers)
    registry_sizes: tuple[int, ...] = (1, 10, 100, 1000)  # scenario 14: event classes registered
    registry_sizes_slow: tuple[int, ...] = (10_000,)  # with --slow: configure() is quadratic in them
    fan_outs: tuple[int, ...] = (1, 10, 100)  # scenario 14: handlers of the published event
    lane_events: int = 10_000  # scenario 15: events left waiting in lanes
    lane_counts: tuple[int, ...] = (100, 10_000)  # scenario 15: lanes they wait in
    drained_lanes: int = 300_000  # scenario 15: lanes driven through append, enter, finish
    drained_lanes_slow: int = 1_000_000  # the same, with --slow
    lane_batch: int = 1000  # scenario 15: lanes per script call


FULL = Sizes(
    rounds=15,
    # 500 calls a round: 50-60 ms of a Redis publish(), 0.25 s on RabbitMQ. At 200 (20-25 ms
    # on Redis) one hiccup of a shared 2-CPU machine decided the worst of the 15 rounds: the
    # same code read 0.94x and 1.15x in two runs.
    publishes=500,
    free_publishes=20_000,
    batches=3,
    drain=2000,
    drain_rounds=5,
    # Three drains of each side a round, taking turns. With one of 2,000 messages (0.2 s) the
    # rounds of scenario 6 on Redis spread over 0.62-0.82x in one run; with one of 6,000 still
    # over 0.59-0.94x on a busier machine: it drifts over seconds.
    drain_turns=3,
    latency_seconds=1.5,
    latency_rates=(200, 500, 1000),
    latency_rounds=5,
    # 6 s a round: the two workers' calls (3 and 5 a second) count to a sixth of a call per second.
    idle_seconds=6.0,
    idle_rounds=2,
    celery_fan_outs=40,
    celery_rounds=3,
)
#: ``--quick``: the publish and worker scenarios (1-7) with a third to a half of the work, in
#: under a minute with both brokers; ratios a little less steady than ``FULL``'s.
QUICK = replace(
    FULL, rounds=7, publishes=100, free_publishes=5_000, batches=1, drain=1000, drain_rounds=3, drain_turns=1
)
SMOKE = Sizes(
    rounds=1,
    publishes=5,
    free_publishes=100,
    batches=1,
    drain=20,
    drain_rounds=1,
    drain_turns=1,
    latency_seconds=0.2,
    latency_rates=(100,),
    latency_rounds=1,
    idle_seconds=1.0,
    idle_rounds=1,
    celery_fan_outs=2,
    celery_rounds=1,
    memory=(50, 100),
    hostile_bytes=64 * 1024,
    hostile_rounds=1,
    io_drain=20,
    io_rounds=1,
    io_turns=1,
    instrument_rounds=1,
    curve_rounds=1,
    curve_publishes=20,
    registry_sizes=(1, 3),
    registry_sizes_slow=(5,),
    fan_outs=(1, 3),
    lane_events=200,
    lane_counts=(10, 200),
    drained_lanes=2000,
    drained_lanes_slow=3000,
    lane_batch=100,
)


@dataclass(frozen=True)
class Target:
    """A bound on a ratio (bus / baseline), e.g. ``Target("<=", 1.1)``, or with ``on="bus"`` on the bus's figure."""

    op: str
    value: float
    text: str = ""
    on: str = "ratio"

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def __str__(self) -> str:
        return self.text or f"{'≤' if self.op == '<=' else '≥'} {self.value:g}x"


@dataclass
class Result:
    """One row of the table: the bus and its baseline, measured side by side.

    Parameters:
      scenario(str): The issue's scenario number.
      title(str): What is compared.
      broker(str): redis, rabbitmq, or "-" when no broker is involved.
      unit(str): The unit of ``bus`` and ``baseline``.
      bus(float): The bus's median figure.
      baseline(float): The baseline's median figure.
      baseline_name(str): What the baseline is.
      ratio(float): The median of the rounds' bus / baseline ratios.
      target(Target | None): The issue's target for ``ratio``, if any.
      rounds(int): How many side-by-side rounds.
      note(str): Anything the figure needs to be read right.
      ratios(list[float]): Each round's ratio, when there were rounds: the target must hold
        at their median (``ratio``) and at the worst of them.
    """

    scenario: str
    title: str
    broker: str
    unit: str
    bus: float
    baseline: float
    baseline_name: str
    ratio: float
    target: Target | None = None
    rounds: int = 1
    note: str = ""
    ratios: list[float] = field(default_factory=list)

    @property
    def worst(self) -> float:
        """The round's ratio furthest from the target's side (the highest for a ``<=`` target);
        the median when there were no rounds or is no target."""
        if not self.ratios or self.target is None or self.target.on != "ratio":
            return self.ratio
        return max(self.ratios) if self.target.op == "<=" else min(self.ratios)

    @property
    def spread(self) -> str:
        """The lowest and highest round's ratio, e.g. ``0.91-1.04x``; empty without rounds."""
        if len(self.ratios) < 2:
            return ""
        return f"{min(self.ratios):.3g}-{max(self.ratios):.3g}x"

    @property
    def met(self) -> bool | None:
        """Whether the target holds at the median and at the worst round; None without a target."""
        if self.target is None:
            return None
        if self.target.on == "bus":
            return self.target.met(self.bus)
        return self.target.met(self.ratio) and self.target.met(self.worst)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = None if self.target is None else str(self.target)
        data["met"] = self.met
        data["worst"] = self.worst
        return data


@dataclass
class Context:
    """What every scenario gets.

    Parameters:
      sizes(Sizes): How much work to do.
      brokers(tuple[str, ...]): Which brokers to run on, of ``redis`` and ``rabbitmq``.
      workdir(Path): Where worker logs go.
      run(str): This run's id, in every queue name and Redis key it makes.
    """

    sizes: Sizes
    brokers: tuple[str, ...]
    workdir: Path
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    redis_url: str = REDIS_URL
    rabbitmq_url: str = RABBITMQ_URL
    _shared: Shared | None = None

    @property
    def shared(self) -> Shared:
        """The deployments, workers and stats the scenarios share; see :class:`benchmarks.deploy.Shared`."""
        if self._shared is None:
            from .deploy import Shared

            self._shared = Shared(self)
        return self._shared

    @property
    def lane_prefix(self) -> str:
        """The prefix of this run's lanes in Redis (``configure(lane_prefix=...)``)."""
        return f"bench-{self.run}"

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()

    def url(self, broker: str) -> str:
        return self.redis_url if broker == "redis" else self.rabbitmq_url

    def name(self, what: str) -> str:
        """A queue name or key part unique to this run."""
        return f"bench_{self.run}_{what}"


# -- measuring ------------------------------------------------------------------------------


def per_call(function: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``function``, over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - started) / calls


def side_by_side(
    bus: Callable[[], float],
    baseline: Callable[[], float],
    rounds: int,
    *,
    turns: int = 1,
    combine: Callable[[list[float]], float] = statistics.fmean,
) -> tuple[float, float, float, list[float]]:
    """Run ``bus`` and ``baseline`` alternately, ``rounds`` times each; each returns one figure.

    With ``turns``, a round is that many calls of each, taking turns, and its figure for each
    side is ``combine`` of them (:func:`statistics.harmonic_mean` for rates of equal work):
    the machine's drift over a round then weighs on both sides alike.

    Returns the median bus figure, the median baseline figure, the median of the
    per-round ratios bus / baseline, and those ratios.
    """
    bus_figures: list[float] = []
    baseline_figures: list[float] = []
    for round_number in range(rounds):
        bus_turns: list[float] = []
        baseline_turns: list[float] = []
        for turn in range(turns):
            if (round_number + turn) % 2 == 0:
                bus_turns.append(bus())
                baseline_turns.append(baseline())
            else:
                baseline_turns.append(baseline())
                bus_turns.append(bus())
        bus_figures.append(combine(bus_turns))
        baseline_figures.append(combine(baseline_turns))
    ratios = [b / a if a else float("inf") for b, a in zip(bus_figures, baseline_figures, strict=True)]
    return statistics.median(bus_figures), statistics.median(baseline_figures), statistics.median(ratios), ratios


def percentile(values: list[float], share: float) -> float:
    """The ``share`` (0-1) percentile of ``values``, nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# -- the machine ----------------------------------------------------------------------------


def machine(ctx: Context) -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "dramatiq": _version("dramatiq"),
        "redis-py": _version("redis"),
        "pika": _version("pika"),
        "celery": _version("celery"),
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }
    try:
        import redis

        info["redis_server"] = redis.Redis.from_url(ctx.redis_url).info("server")["redis_version"]
    except Exception as exc:
        info["redis_server"] = f"unreachable ({type(exc).__name__})"
    if "rabbitmq" in ctx.brokers:
        try:
            import pika

            connection = pika.BlockingConnection(pika.URLParameters(ctx.rabbitmq_url))
            version_bytes = connection._impl.server_properties.get("version", b"?")
            info["rabbitmq_server"] = version_bytes.decode() if isinstance(version_bytes, bytes) else version_bytes
            connection.close()
        except Exception as exc:
            info["rabbitmq_server"] = f"unreachable ({type(exc).__name__})"
    return info


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine(info: dict[str, Any]) -> str:
    servers = f"Redis {info.get('redis_server')}" + (
        f", RabbitMQ {info['rabbitmq_server']}" if "rabbitmq_server" in info else ""
    )
    return (
        f"{info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, Dramatiq {info['dramatiq']}, "
        f"Celery {info['celery']}, {servers}, load average {info['load_average_at_start']} at start"
    )


# -- reporting ------------------------------------------------------------------------------


def format_table(results: list[Result]) -> str:
    """The results as a Markdown table, ready for the README."""
    lines = [
        "| # | scenario | broker | bus | baseline | ratio (median) | worst round (spread) | target | met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        met = {True: "yes", False: "**no**", None: ""}[result.met]
        lines.append(
            f"| {result.scenario} | {result.title} | {result.broker} | {_figure(result.bus, result.unit)} "
            f"| {_figure(result.baseline, result.unit)} ({result.baseline_name}) | {result.ratio:.3g}x "
            f"| {_worst(result)} | {result.target or ''} | {met} |"
        )
    notes = [f"- {r.scenario} ({r.broker}): {r.note}" for r in results if r.note]
    return "\n".join(lines + (["", *notes] if notes else []))


def _worst(result: Result) -> str:
    if not result.spread:
        return ""
    return f"{result.worst:.3g}x ({result.spread}, {len(result.ratios)} rounds)"


def _figure(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "-"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def write_json(path: Path, info: dict[str, Any], results: list[Result], seconds: float, argv: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {**info, "load_average_at_end": [round(load, 2) for load in os.getloadavg()]}
    document = {
        "machine": info,
        "command": " ".join(["python -m benchmarks", *argv]),
        "seconds": round(seconds, 1),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [result.as_json() for result in results],
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
