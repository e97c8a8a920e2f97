"""Hostile messages, forged by hypothesis from genuine ones, onto real queues in front of a real worker.

Issue 13: whoever can write to the broker's queues can stop nothing, run nothing, and learn
nothing. tests/faults/forgery.py draws batches of forged messages (every envelope field and
option altered to wrong types, huge and empty values, other queues, actors and event
classes; bodies of other shapes; some signed again, as by a forger holding the key), and
this suite writes each batch onto a real Redis or RabbitMQ queue with redis-py or pika,
between genuine events, in front of a ``dramatiq`` worker. After each batch:

- every genuine event published with and after it is handled once, within BOUND seconds;
- every worker and consumer thread is alive (a census handler counts them in the worker);
- the consumers did not loop on errors, and no traceback, no CRITICAL line was logged;
- every forged message that must be refused was dead-lettered, or dropped, with one line,
  and never ran; a genuine message written again (message id, timestamp, unknown or
  in-range options altered) ran at most once, or was refused with one line;
- every line of the worker's log is one record of at most LINE_LIMIT characters: no value
  from a message breaks a line or starts a record of its own;
- nothing is left on any queue, and on Redis nothing is stranded in a worker's ack set.

The draws are deterministic (hypothesis seeded, no database), so a run tries the same
forgeries every time; the seed and settings are printed with the figures (``-s``), and
``HOSTILE_VERBOSE=1`` prints each forgery, its fate and its lines. ``make test`` runs one
batch per broker; ``-m slow`` runs several more from other seeds.

What the library mishandles today is in forgery.KNOWN_BUGS: the generator leaves those out,
and ``test_known_bug`` reproduces each on a real worker, marked as a strict xfail.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
import redis

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.delivery import PublishBuffer
from dramatiq_eventbus.signing import Signer
from tests.support.worker_process import WorkerProcess, wait_for

from . import forgery, handlers
from .conftest import BROKERS, broker_url
from .forgery import HARMLESS, REFUSED, Census, Forged, Keyed, Scene
from .harness import Deployment, Tally, ack_sets, report
from .test_bad_messages import CODEC_ENV, CODEC_SETTINGS, SECRET_KEY, Queue

#: The same forgeries on every run; batch b of a slow run draws from SEED + b.
SEED = 13_2026
#: Forgeries per batch, and batches: in make test, and behind -m slow.
NORMAL = (1, 40)
SLOW = (6, 50)
#: Worker threads: enough that a thread lost is one of several, few enough that batches mix.
THREADS = 3
#: Consumer threads of a worker: each bus queue and its delay queue.
CONSUMERS = 4
#: Seconds within which the genuine events published with and after a batch must all be handled.
BOUND = 30
#: The longest line a worker may log.
LINE_LIMIT = 2_000
#: Genuine events per batch: Ticks (three handlers each) and keyed events, with the forgeries and after them.
TICKS, KEYED, AFTER = 12, 9, 6

DEFAULT_ACTOR_OPTIONS = {"min_backoff": 20, "max_backoff": 100}

#: One log record: ``[date] [PID n] [thread] [logger] [LEVEL] message``.
RECORD = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] \[PID (?P<pid>\d+)\] \[[^\]\n]*\] "
    r"\[(?P<logger>[^\]\n]+)\] \[(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\] (?P<message>.*)$",
    re.DOTALL,
)
LOUD = ("WARNING", "ERROR", "CRITICAL")


# -- the deployment -------------------------------------------------------------------------------


def make_deployment(kind: str, tmp: Path) -> Deployment:
    """A deployment as test_bad_messages makes one, with the forgery handlers, and Redis lanes on both brokers."""
    env = {
        **CODEC_ENV,
        "EVENTBUS_DEFAULT_ACTOR_OPTIONS": json.dumps(DEFAULT_ACTOR_OPTIONS),
        "EVENTBUS_HANDLERS": forgery.HANDLERS_PATH,
    }
    settings: dict[str, Any] = {
        **CODEC_SETTINGS,
        "default_actor_options": DEFAULT_ACTOR_OPTIONS,
        "handlers": forgery.HANDLERS_PATH,
    }
    if kind == "rabbitmq":
        # As a cluster on RabbitMQ runs: lanes in Redis, so that forged lanes meet real ones.
        env["EVENTBUS_REDIS_URL"] = broker_url("redis")
        settings["redis_url"] = broker_url("redis")
    return Deployment(broker_url(kind), broker_url("redis"), tmp, env=env, settings=settings)


def make_scene(deployment: Deployment, bus: EventBus) -> Scene:
    """What forgeries are made of: the publisher's own messages for Ticks and keyed events."""
    backend: Any = bus.config.backend
    keys = forgery.partition_keys(deployment.run)

    def genuine(base: str, n: int) -> dict[str, Any]:
        event: object
        if base in forgery.KEYED_HANDLERS:
            event = Keyed(deployment.run, n, keys[n % len(keys)])
        else:
            event = handlers.Tick(deployment.run, n)
        buffer = PublishBuffer()
        with bus.recording_to(buffer):
            bus.publish(event)
        delivery = next(d for d in buffer.deliveries if d.handler.name.endswith(f".{base}"))
        return json.loads(backend.message_for(delivery).encode())

    codec = bus.config.codec
    pickled = EventBus().configure(handlers=forgery.HANDLERS, broker="stub", codec="pickle", secret_key=SECRET_KEY)
    others = [
        codec.encode(handlers.Solo(0, 0)),
        codec.encode(Census(deployment.run, 0)),
        codec.encode(handlers.Doomed(deployment.run)),
        pickled.config.codec.encode(handlers.Solo(0, 0)),  # correctly signed, of another class
    ]
    signer = Signer((SECRET_KEY.encode(),))
    return Scene(deployment.kind, deployment.queues, sorted(bus.broker.actors), genuine, signer, others, keys)


class Writer:
    """Writes raw bodies onto queues, as another service would, over one connection.

    Parameters:
      kind(str): ``redis`` or ``rabbitmq``.
      url(str): The broker.
    """

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self._redis: redis.Redis | None = None
        self._channel: Any = None
        self._connection: pika.BlockingConnection | None = None

    def __enter__(self) -> Writer:
        if self.kind == "redis":
            self._redis = redis.Redis.from_url(self.url)
        else:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.url))
            self._channel = self._connection.channel()
        return self

    def __exit__(self, *_: object) -> None:
        if self._redis is not None:
            self._redis.close()
        if self._connection is not None and self._connection.is_open:
            self._connection.close()

    def write(self, queue: str, body: bytes | None) -> str | None:
        """Write ``body`` (None: a Redis id alone) onto ``queue``; return its Redis id."""
        if self._redis is not None:
            redis_id = str(uuid.uuid4())
            if body is not None:
                self._redis.hset(f"dramatiq:{queue}.msgs", redis_id, body)
            self._redis.rpush(f"dramatiq:{queue}", redis_id)
            return redis_id
        self._channel.basic_publish(
            exchange="", routing_key=queue, body=body or b"", properties=pika.BasicProperties(delivery_mode=2)
        )
        return None


# -- what the worker did ----------------------------------------------------------------------------


def interleaved(*sequences: list[Any]) -> list[Any]:
    """The items of each sequence in turn: a, b, a, b, then what remains."""
    longest = max(len(sequence) for sequence in sequences)
    return [sequence[i] for i in range(longest) for sequence in sequences if i < len(sequence)]


@dataclass(frozen=True)
class Line:
    text: str
    pid: int
    logger: str
    level: str
    message: str


def read_lines(log: str) -> tuple[list[Line], list[str]]:
    """The worker log's records, one per line; and the lines that are not a record (or hold a line break)."""
    lines, broken = [], []
    for text in log.split("\n"):
        if not text:
            continue
        match = RECORD.match(text)
        # str.splitlines() breaks at \r, \x0b, \x1c, \u2028 and others too: none may reach a log unescaped.
        if match is None or len(text.splitlines()) != 1:
            broken.append(text)
            continue
        lines.append(Line(text, int(match["pid"]), match["logger"], match["level"], match["message"]))
    return lines, broken


def dramatiq_extra(line: Line) -> bool:
    """A loud line Dramatiq's own worker or middleware adds about a refused message (see forgery.KNOWN_BUGS)."""
    if "Dramatiq's lines" not in forgery.KNOWN_BUGS:
        return False
    return line.level == "WARNING" and (
        (line.logger == "dramatiq.worker.WorkerThread" and line.message.endswith(" was skipped."))
        or (line.logger.endswith(".AgeLimit") and line.message.endswith(" has exceeded its age limit."))
    )


@dataclass
class Observed:
    """One look at what became of a batch."""

    runs: dict[int, int]  # forgery index -> handler runs of its event
    dead: set[int]  # forgery indexes found among the dead letters
    lines: dict[int, list[Line]]  # forgery index -> the lines about it
    unexplained: list[Line]  # loud lines about no forgery
    extras: int  # Dramatiq's own extra lines
    broken: list[str]
    idle: bool

    def outcome(self, forged: Forged) -> str | None:
        if self.runs[forged.index]:
            return "ran"
        if forged.index in self.dead:
            return "dead-lettered"
        if self.lines[forged.index]:
            return "dropped"
        return None


@dataclass
class Hostile:
    """A deployment under a hail of forged messages, and what it measured."""

    deployment: Deployment
    scene: Scene
    bus: EventBus
    worker: WorkerProcess | None = None
    redis_ids: dict[tuple[int, int], str] = field(default_factory=dict)  # (batch, index) -> Redis id
    log_offset: int = 0
    figures: Counter[str] = field(default_factory=Counter)
    kinds: set[str] = field(default_factory=set)

    @property
    def kind(self) -> str:
        return self.deployment.kind

    def queues(self) -> list[str]:
        return [name for queue in self.deployment.queues for name in (queue, f"{queue}.DQ")]

    def keys(self, batch: int, forged: Forged) -> list[str]:
        """What a line about ``forged`` shows: its token, its Redis id, or its body's start."""
        keys = [forged.token]
        redis_id = self.redis_ids.get((batch, forged.index))
        if redis_id is not None:
            keys.append(redis_id)
        if forged.body is not None and forged.token.encode() not in forged.body[:60]:
            keys.append(repr(forged.body[:60]))
        return keys

    def dead_letters(self) -> tuple[set[str], set[bytes], set[str]]:
        """The dead letters of both bus queues: Redis ids, bodies, and message ids."""
        ids: set[str] = set()
        bodies: set[bytes] = set()
        if self.kind == "redis":
            client = redis.Redis.from_url(self.deployment.broker_url)
            for queue in self.deployment.queues:
                found: Any = client.hkeys(f"dramatiq:{queue}.XQ.msgs")
                ids |= {key.decode() for key in found}
            client.close()
            return ids, bodies, set()
        for queue in self.deployment.queues:
            bodies |= set(Queue(self.kind, self.deployment.broker_url, queue).dead_letter_bodies())
        message_ids = set()
        for body in bodies:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                continue
            if isinstance(data, dict) and isinstance(data.get("message_id"), str):
                message_ids.add(data["message_id"])
        return ids, bodies, message_ids

    def observe(self, batch: int, forged: list[Forged]) -> Observed:
        assert self.worker is not None
        counts = self.deployment.counts()
        runs = {f.index: sum(counts.get(f"{name}|{f.n}", 0) for name in forgery.COUNTING_HANDLERS) for f in forged}
        ids, bodies, message_ids = self.dead_letters()
        dead = set()
        for f in forged:
            redis_id = self.redis_ids.get((batch, f.index))
            if (
                (redis_id is not None and redis_id in ids)
                or (f.body is not None and f.body in bodies)
                or any(m.startswith(f.token) for m in message_ids)
            ):
                dead.add(f.index)
        lines, broken = read_lines(self.worker.log()[self.log_offset :])
        about: dict[int, list[Line]] = {f.index: [] for f in forged}
        keys = {f.index: self.keys(batch, f) for f in forged}
        unexplained, extras = [], 0
        for line in lines:
            if dramatiq_extra(line):
                extras += 1
                continue
            owners = [index for index, its in keys.items() if any(key in line.text for key in its)]
            for index in owners:
                about[index].append(line)
            # Each worker sweeps every lane of its Redis, other tests' too: only this run's are its business.
            theirs = line.logger.endswith(".LaneSweeper") and self.deployment.run not in line.text
            if not owners and line.level in LOUD and not theirs:
                unexplained.append(line)
        idle = all(Queue(self.kind, self.deployment.broker_url, queue).ready() == 0 for queue in self.queues())
        if idle and self.kind == "redis":
            client = redis.Redis.from_url(self.deployment.broker_url)
            idle = all(not ack_sets(client, queue) for queue in self.deployment.queues)
            client.close()
        return Observed(runs, dead, about, unexplained, extras, broken, idle)

    def census(self, batch: int) -> dict[str, Any]:
        key = forgery.census_key(self.deployment.run)

        def found() -> dict[str, Any] | None:
            for raw in self.deployment.client().lrange(key, 0, -1):
                line = json.loads(raw)
                if line["n"] == batch:
                    return line
            return None

        return wait_for(
            found, timeout=BOUND, interval=0.2, describe=lambda: self.worker.log_tail() if self.worker else ""
        )

    # -- one batch ------------------------------------------------------------------------------

    def run_batch(self, batch: int, size: int) -> None:
        first = batch * 10_000
        forged = forgery.draw_batch(self.scene, size=size, seed_value=SEED + batch, batch=batch, first_n=first + 5_000)
        assert len(forged) >= size * 3 // 4, f"hypothesis drew only {len(forged)} usable forgeries"
        ticks = [handlers.Tick(self.deployment.run, first + i) for i in range(TICKS + AFTER)]
        keyed = [Keyed(self.deployment.run, first + 2_000 + i, self.scene.keys[i % 3]) for i in range(KEYED + AFTER)]
        with_batch, after = interleaved(ticks[:TICKS], keyed[:KEYED]), interleaved(ticks[TICKS:], keyed[KEYED:])
        # Genuine and forged alternate on the queues, so that the worker fetches them in mixed batches.
        self.bus.publish(with_batch[:2])  # declares the queues on RabbitMQ
        self.write(batch, forged, between=with_batch[2:])
        self.bus.publish(with_batch[2 + len(forged) :])
        if self.worker is None:
            self.worker = self.deployment.start_worker(threads=THREADS)
        started = time.monotonic()
        self.bus.publish(after)
        self.bus.publish(Census(self.deployment.run, batch))

        # Each queue's genuine events, handled within the bound of the last one published.
        tick_numbers = [tick.n for tick in ticks]
        keyed_numbers = [event.n for event in keyed]
        stalled = []
        for numbers, names in ((tick_numbers, handlers.TICK_HANDLERS), (keyed_numbers, forgery.KEYED_HANDLERS)):
            try:
                left = max(1.0, BOUND - (time.monotonic() - started))
                self.deployment.wait_until_processed(numbers, timeout=left, names=names)
            except AssertionError as exc:
                stalled.append(str(exc))
        self.figures["stalled"] += len(stalled)
        assert stalled == [], f"queue(s) stalled: {stalled}"
        handled_in = time.monotonic() - started
        census = self.census(batch)

        seen = self.settle(batch, forged)
        self.check(batch, forged, seen, census)

        # The genuine events: none ran twice.
        tally_ticks = self.deployment.tally(tick_numbers)
        tally_keyed = self.deployment.tally(keyed_numbers, forgery.KEYED_HANDLERS)
        assert tally_ticks.duplicated == 0 and tally_keyed.duplicated == 0, (tally_ticks, tally_keyed)

        outcomes = Counter(seen.outcome(f) for f in forged)
        if os.environ.get("HOSTILE_VERBOSE"):
            for f in forged:
                print(f"  {seen.outcome(f):>13} {f.verdict:>8} {f.describe()[:160]}")
                for line in seen.lines[f.index]:
                    print(f"      {line.text[:300]}")
        self.figures.update(
            forged=len(forged),
            refused=sum(f.verdict == REFUSED for f in forged),
            harmless=sum(f.verdict == HARMLESS for f in forged),
            signed_again=sum(f.recipe.signed_again for f in forged),
            dead=outcomes["dead-lettered"],
            dropped=outcomes["dropped"],
            ran=outcomes["ran"],
            extras=seen.extras,
            genuine=len(tick_numbers) * len(handlers.TICK_HANDLERS) + len(keyed_numbers),
            threads_lost=THREADS - census["workers"] + CONSUMERS - census["consumers"],
        )
        self.figures["slowest_ms"] = max(self.figures["slowest_ms"], int(handled_in * 1000))
        self.kinds |= {kind for f in forged for kind in f.kinds}
        self.log_offset = len(self.worker.log()) if self.worker else 0

    def write(self, batch: int, forged: Sequence[Forged], *, between: Sequence[object] = ()) -> None:
        """Write the forgeries onto their queues, publishing ``between[i]`` after the i-th."""
        with Writer(self.kind, self.deployment.broker_url) as writer:
            for position, f in enumerate(forged):
                redis_id = writer.write(f.queue, f.body)
                if redis_id is not None:
                    self.redis_ids[(batch, f.index)] = redis_id
                if position < len(between):
                    self.bus.publish(between[position])

    def settle(self, batch: int, forged: list[Forged]) -> Observed:
        """Wait until every forgery of the batch ran, was dead-lettered or dropped, and the queues are empty."""

        def settled() -> Observed | None:
            seen = self.observe(batch, forged)
            pending = [f for f in forged if seen.outcome(f) is None]
            return seen if not pending and seen.idle else None

        def pending() -> str:
            seen = self.observe(batch, forged)
            waiting = [f.describe()[:400] for f in forged if seen.outcome(f) is None]
            return f"idle={seen.idle}; not accounted for: {waiting}{self.worker.log_tail(20) if self.worker else ''}"

        wait_for(settled, timeout=BOUND, interval=0.3, describe=pending)
        time.sleep(0.5)  # a forgery run twice would show now
        return self.observe(batch, forged)

    def check(self, batch: int, forged: list[Forged], seen: Observed, census: dict[str, Any]) -> None:
        assert self.worker is not None
        log = self.worker.log()[self.log_offset :]
        tail = self.worker.log_tail(30)
        # Threads: none lost.
        assert census["workers"] == THREADS, f"worker threads alive: {census}{tail}"
        assert census["consumers"] == CONSUMERS, f"consumer threads alive: {census}{tail}"
        # Consumers: no error loop, no traceback, nothing CRITICAL.
        assert "Consumer encountered" not in log, tail
        assert "Traceback" not in log, tail
        critical = [line.text[:500] for lines in seen.lines.values() for line in lines if line.level == "CRITICAL"]
        assert critical == [], critical
        # Log lines: each one record, bounded, none started by a value from a message (a record of
        # a process that is not the worker's: forgery.FORGED_RECORD claims PID 1).
        assert seen.broken == [], [text[:300] for text in seen.broken[:5]]
        pids = {self.worker.pid, census["pid"]}
        strangers = [line.text[:300] for line in read_lines(log)[0] if line.pid not in pids]
        assert strangers == [], strangers[:5]
        long = [f"{text[:300]}… ({len(text)} characters)" for text in log.split("\n") if len(text) > LINE_LIMIT]
        assert long == [], long[:3]
        assert seen.unexplained == [], [line.text[:300] for line in seen.unexplained]
        # Each forgery: refused ones never ran, and were dead-lettered with one line at WARNING or
        # above, or dropped with one; genuine copies ran at most once, without a loud line, or were
        # refused or dropped as others are. (INFO lines are not counted: Dramatiq's about a failure,
        # the ordering's about a duplicate it skips, with Dramatiq's WARNING that it was skipped.)
        wrong = []
        for f in forged:
            runs, lines, outcome = seen.runs[f.index], seen.lines[f.index], seen.outcome(f)
            loud = [line for line in lines if line.level in LOUD]
            problem = None
            if runs > 1:
                problem = f"ran {runs} times"
            elif f.verdict == REFUSED and runs:
                problem = "ran, but must be refused"
            elif outcome == "ran" and loud:
                problem = f"ran, with {len(loud)} loud line(s)"
            elif outcome == "dead-lettered" and len(loud) != 1:
                problem = f"dead-lettered with {len(loud)} lines at WARNING or above, not one"
            elif outcome == "dead-lettered" and "Dead-lettered" not in loud[0].message:
                problem = "dead-lettered, but its line does not say so"
            elif outcome == "dropped" and len(loud) != 1:
                problem = f"dropped with {len(loud)} lines at WARNING or above, not one"
            if problem is not None:
                wrong.append(f"{problem}: {f.describe()[:600]}\n    " + "\n    ".join(x.text[:400] for x in lines))
        assert wrong == [], "\n".join(wrong)

    def report(self, batches: int, size: int) -> None:
        f = self.figures
        line = (
            f"[hostile] {self.kind}: {len(self.kinds)} kinds tried, {f['forged']} forged "
            f"({f['refused']} to refuse, {f['harmless']} genuine copies, {f['signed_again']} signed again), "
            f"{f['dead']} dead-lettered, {f['dropped']} dropped, {f['ran']} ran (copies of genuine messages), "
            f"threads lost {f['threads_lost']}, queues stalled {f['stalled']}; "
            f"{f['genuine']} genuine messages handled, "
            f"the slowest batch's within {f['slowest_ms'] / 1000:.1f} s (bound {BOUND} s); "
            f"{f['extras']} extra Dramatiq lines; seed {SEED}, {batches} batch(es) of {size}"
        )
        print(f"\n{line}", file=sys.stdout)
        genuine = f["genuine"]
        report(
            f"hostile messages, forged ({len(self.kinds)} kinds)",
            self.kind,
            Tally(sent=genuine, processed=genuine, lost=0, duplicated=0),
            f"{f['forged']} forged: {f['dead']} dead-lettered, {f['dropped']} dropped, {f['ran']} genuine copies ran, "
            f"{f['threads_lost']} threads lost, {f['stalled']} queues stalled",
        )


@pytest.fixture(params=BROKERS)
def hostile(request: pytest.FixtureRequest, deploy: list[Deployment], tmp_path: Path) -> Iterator[Hostile]:
    deployment = make_deployment(request.param, tmp_path)
    deploy.append(deployment)
    bus = deployment.publisher()
    yield Hostile(deployment, make_scene(deployment, bus), bus)
    deployment.client().delete(forgery.census_key(deployment.run))


def run(hostile: Hostile, batches: int, size: int) -> None:
    print(
        f"\n[hostile] {hostile.kind}: hypothesis seed {SEED}+batch, phases=generate, database=None, "
        f"{batches} batch(es) of {size}, {THREADS} worker threads; known bugs left out: {sorted(forgery.KNOWN_BUGS)}"
    )
    for batch in range(batches):
        hostile.run_batch(batch, size)
    hostile.report(batches, size)


def test_forged_messages_stop_nothing_and_run_nothing(hostile: Hostile) -> None:
    run(hostile, *NORMAL)


@pytest.mark.slow
def test_forged_messages_stop_nothing_and_run_nothing_many_batches(hostile: Hostile) -> None:
    run(hostile, *SLOW)


# -- the known bugs, reproduced ------------------------------------------------------------------


class KnownBugShown(AssertionError):
    """Raised only where a case sees its bug: any other failure of the case is a real one."""


def _forge(hostile: Hostile, batch: int, base: str, *mutations: forgery.Mutation) -> list[Forged]:
    made = [
        forgery.materialize(
            hostile.scene,
            forgery.Recipe(base, (mutation,)),
            index,
            batch * 10_000 + 5_000 + index,
            f"forged-{batch:02d}-{index:03d}-",
            avoid=(),
        )
        for index, mutation in enumerate(mutations)
    ]
    assert all(f is not None for f in made)
    return [f for f in made if f is not None]


def _known_bug_case(bug: str) -> Any:
    """A case of what the suite found: a strict xfail while the bug is in forgery.KNOWN_BUGS, a test once fixed."""
    if bug not in forgery.KNOWN_BUGS:
        return pytest.param(bug, id=bug)
    return pytest.param(
        bug, marks=pytest.mark.xfail(strict=True, raises=KnownBugShown, reason=forgery.KNOWN_BUGS[bug]), id=bug
    )


@pytest.fixture(scope="module", params=BROKERS)
def witness(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """One deployment per broker for the known-bug cases, its worker started by the first."""
    deployment = make_deployment(request.param, tmp_path_factory.mktemp("known-bugs"))
    try:
        bus = deployment.publisher()
        yield Hostile(deployment, make_scene(deployment, bus), bus)
    finally:
        deployment.tear_down()
        deployment.client().delete(forgery.census_key(deployment.run))


def _witness(hostile: Hostile, batch: int, forged: list[Forged]) -> tuple[Observed, list[Line]]:
    """Write ``forged`` in front of the worker, wait until each is accounted for; what was seen, and every line."""
    # Declares both queues on RabbitMQ.
    run = hostile.deployment.run
    hostile.bus.publish([handlers.Tick(run, batch * 10_000), Keyed(run, batch * 10_000, hostile.scene.keys[0])])
    hostile.write(batch, forged)
    if hostile.worker is None:
        hostile.worker = hostile.deployment.start_worker(threads=THREADS)
    seen = hostile.settle(batch, forged)
    assert hostile.worker is not None
    lines, _ = read_lines(hostile.worker.log()[hostile.log_offset :])
    hostile.log_offset = len(hostile.worker.log())
    return seen, lines


@pytest.mark.parametrize(
    "bug",
    [
        _known_bug_case(bug)
        # The broker priority last: it leaves the witness's delay queue consumer failing.
        for bug in ("Dramatiq's lines", "callback options", "broker priority")
    ],
)
def test_known_bug(bug: str, witness: Hostile) -> None:
    """Each bug the suite found, on a real worker: a strict xfail while it is in forgery.KNOWN_BUGS."""
    scene = witness.scene
    if bug == "Dramatiq's lines":
        # A forged payload, refused by the signature check: Dramatiq's worker logs it whole, as a second line.
        long_run = forgery.Mutation(
            "payload: a long run",
            REFUSED,
            forgery._payload(lambda payload: {**payload, "run": "bugmark-" + "x" * 100_000}),
        )
        forged = _forge(witness, 90, "TickA", long_run)
        seen, lines = _witness(witness, 90, forged)
        (f,) = forged
        assert seen.outcome(f) == "dead-lettered" and not seen.runs[f.index], seen
        about = [line for line in lines if line.level in LOUD and (f.token in line.text or "bugmark-" in line.text)]
        long = [len(line.text) for line in lines if len(line.text) > LINE_LIMIT]
        if len(about) != 1 or long:
            raise KnownBugShown(
                f"{len(about)} loud lines about one refused message, lines of {long} characters: "
                + " | ".join(line.text[:200] for line in about)
            )
    elif bug == "callback options":
        # Options the bus never writes, that the signature does not cover: Dramatiq's Callbacks and
        # Pipelines act on them after the handler ran. Refusing the message or ignoring them would do.
        forged = _forge(
            witness,
            91,
            "TickA",
            forgery.Mutation(
                "option on_success: another handler", REFUSED, forgery._option("on_success", scene.actor("TickB"))
            ),
            forgery.Mutation("option on_success: nobody", REFUSED, forgery._option("on_success", "nobody")),
            forgery.Mutation("option pipe_target: junk", REFUSED, forgery._option("pipe_target", {"x": 1})),
        )
        seen, lines = _witness(witness, 91, forged)
        for f in forged:
            loud = [line for line in seen.lines[f.index] if line.level in LOUD]
            assert seen.runs[f.index] <= 1 and len(loud) <= 1, (f.describe(), loud)
        sent = [line.text[:300] for line in seen.unexplained if line.level != "CRITICAL"]
        critical = [line.text[:300] for line in lines if line.level == "CRITICAL"]
        if sent or critical:
            raise KnownBugShown(f"lines about messages the worker sent on a forger's say: {sent}; CRITICAL: {critical}")
    elif bug == "broker priority":
        if witness.kind != "rabbitmq":
            pytest.skip("RabbitMQ only: the Redis broker has no priorities")
        # A genuine message, signed, on its delay queue, due in 0.2 s, with a broker_priority pika cannot write.
        queue = witness.deployment.queues[0]

        def delayed(priority: Any, kind: str) -> forgery.Mutation:
            def apply(draft: forgery.Draft) -> None:
                draft.placement = forgery.DELAY_QUEUE
                draft.envelope["queue_name"] = f"{queue}.DQ"
                draft.envelope["options"].update(eta=int(time.time() * 1000) + 200, broker_priority=priority)

            return forgery.Mutation("placement: its delay queue, eta near", kind, apply)

        # The first must be refused as it is read; the second, after it on the same delay queue, must run.
        high, five = forged = _forge(witness, 92, "TickA", delayed("high", REFUSED), delayed(5, HARMLESS))
        run = witness.deployment.run
        witness.bus.publish([handlers.Tick(run, 920_000), Keyed(run, 920_000, scene.keys[0])])
        witness.write(92, forged)
        if witness.worker is None:
            witness.worker = witness.deployment.start_worker(threads=THREADS)
        worker = witness.worker

        def settled() -> bool:
            seen = witness.observe(92, forged)
            return seen.runs[five.index] == 1 and high.index in seen.dead and not seen.runs[high.index]

        try:
            wait_for(settled, timeout=6, interval=0.3)
        except AssertionError:
            seen = witness.observe(92, forged)
            loops = worker.log()[witness.log_offset :].count("Consumer encountered an unexpected error")
            raise KnownBugShown(
                f"runs after 6 s: {list(seen.runs.values())}, dead-lettered: {sorted(seen.dead)}; the delay "
                f"queue's consumer failed {loops} time(s)"
            ) from None
        assert "Consumer encountered an unexpected error" not in worker.log()[witness.log_offset :]
