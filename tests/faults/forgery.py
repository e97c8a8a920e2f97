"""Forged messages for the hostile-message suite, and the handlers its workers run.

The workers import ``tests.faults.forgery:HANDLERS``: the fault handlers, plus a keyed
event (so that lanes are in play) and a census that counts the worker's live threads.

A forgery starts from a genuine message, as the publisher would send it (signed), and
alters it: its body as a whole, or one to three of its envelope fields, options,
payload and placement (the queue it is written to). Hypothesis draws the alterations
(:func:`forgeries`); :func:`draw_batch` draws a batch of them deterministically from a seed,
outside any ``@given`` test, since one example per worker is far too slow.

Each alteration says what the bus must do with it:

- ``REFUSED``: never run it; dead-letter it (or drop it) with one line;
- ``SIGNED``: it changes what the signature covers, so a worker with the key refuses it;
  a forger that holds the key (a forgery "signed again") gets the checks behind the
  signature instead, and then it counts as harmless;
- ``HARMLESS``: it is a genuine message written again, as the README allows ("a genuine
  message written again runs again"): it may run once, or be dead-lettered or dropped
  with one line (a ``max_age`` it is already past, a lane it is not the head of).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import dramatiq.worker
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from dramatiq_eventbus import Handler
from dramatiq_eventbus.signing import Signer

from . import handlers
from .handlers import counter_key, records

#: What the workers load, and the publishers configure.
HANDLERS_PATH = "tests.faults.forgery:HANDLERS"


# -- what the workers run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Keyed:
    """A partitioned event: it goes through the partitioned queue and its lanes."""

    run: str
    n: int
    key: str

    def partition_key(self) -> str:
        return self.key


class KeyedCount(Handler):
    actor_options = {"max_retries": 3, "min_backoff": 50, "max_backoff": 500}

    def handle_event(self, event: Keyed) -> None:
        records().hincrby(counter_key(event.run, "finished"), f"KeyedCount|{event.n}", 1)


KEYED_HANDLERS = ("KeyedCount",)


@dataclass(frozen=True)
class Census:
    run: str
    n: int


def census_key(run: str) -> str:
    return f"faults:{run}:census"


# Dramatiq 2 names them WorkerThread and ConsumerThread; Dramatiq 1, _WorkerThread and _ConsumerThread.
_WORKER_THREAD = getattr(dramatiq.worker, "WorkerThread", None) or dramatiq.worker._WorkerThread
_CONSUMER_THREAD = getattr(dramatiq.worker, "ConsumerThread", None) or dramatiq.worker._ConsumerThread


class ThreadCensus(Handler):
    """Records how many of Dramatiq's worker and consumer threads are alive in its process.

    A thread that died (an exception outside any handler) is gone from ``threading.enumerate()``.
    """

    def handle_event(self, event: Census) -> None:
        alive = [thread for thread in threading.enumerate() if thread.is_alive()]
        line = {
            "n": event.n,
            "pid": os.getpid(),
            "workers": sum(isinstance(thread, _WORKER_THREAD) for thread in alive),
            "consumers": sum(isinstance(thread, _CONSUMER_THREAD) for thread in alive),
        }
        records().rpush(census_key(event.run), json.dumps(line))


HANDLERS: dict[type, list[type]] = {**handlers.HANDLERS, Keyed: [KeyedCount], Census: [ThreadCensus]}

#: Every handler that can count a run of a forged Tick or Keyed, by its short name.
COUNTING_HANDLERS = (*handlers.TICK_HANDLERS, *KEYED_HANDLERS)


# -- known bugs ---------------------------------------------------------------------------------

#: Forgeries the library mishandles today. Each is reproduced by a strict xfail case in
#: test_hostile_messages.py; the generator leaves it out while its name is here. Once the
#: library is fixed, that case passes (and fails as XPASS): remove its name here, and the case
#: stays as a test. Fixed so far: "Dramatiq's lines" (a second line quoting a refused payload
#: whole, or its id uncut), "broker priority" (a delay queue's consumer failing for good),
#: "callback options" (messages sent on a forger's say).
KNOWN_BUGS: dict[str, str] = {}


# -- forging ------------------------------------------------------------------------------------

REFUSED = "refused"
SIGNED = "signed"
HARMLESS = "harmless"

#: Where a forgery is written, besides its own queue.
OTHER_QUEUE = "other"
DELAY_QUEUE = "delay"

#: The envelope fields of a Dramatiq message, in a genuine body's order.
FIELDS = ("queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp")
REQUIRED = ("queue_name", "actor_name", "args", "kwargs", "options")

#: A log record a forged newline would start, were it not escaped: no worker has PID 1.
FORGED_RECORD = "[2020-01-01 00:00:00,000] [PID 1] [MainThread] [forged] [CRITICAL] FORGED-RECORD"

#: Option names Dramatiq's middleware reads.
DRAMATIQ_OPTIONS = (
    "eta",
    "retries",
    "max_retries",
    "min_backoff",
    "max_backoff",
    "time_limit",
    "max_age",
    "throws",
    "retry_when",
    "notify_shutdown",
    "traceback",
    "redis_message_id",
    "broker_priority",
    "delay",
    "pipe_ignore",
)
CALLBACK_OPTIONS = ("on_success", "on_failure", "pipe_target")
NUMERIC_OPTIONS = ("retries", "max_retries", "min_backoff", "max_backoff", "time_limit", "max_age", "eta")

#: The bases a forgery starts from: the message of one handler for one event.
TICK_BASES = ("TickA", "TickB", "TickC")
BASES = (*TICK_BASES, "KeyedCount")


def partition_keys(run: str) -> tuple[str, ...]:
    """The partition keys of one run's keyed events, genuine and forged, so that forgeries meet live lanes.

    A lane is named by its handler and key in the whole Redis: keys of their own keep runs apart.
    """
    return tuple(f"k{i}-{run}" for i in range(3))


class Raw:
    """JSON text written as is, for what json.dumps cannot write (a 5,000-digit number, deep nesting)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:20]!r}{'…' if len(self.text) > 20 else ''} [{len(self.text)}])"


@dataclass
class Draft:
    """A forgery being made: its envelope, the queue it goes to (None: its own), and its token."""

    envelope: dict[str, Any]
    placement: str | None = None
    token: str = ""


@dataclass(frozen=True)
class Mutation:
    """One alteration of a genuine message.

    Parameters:
      kind(str): What it does, e.g. ``queue_name: the other bus queue``; the kinds a run tried are counted.
      verdict(str): REFUSED, SIGNED or HARMLESS.
      apply(Callable[[Draft], None]): Makes it, in place.
      envelope(bool): Refused while the envelope is read, so the line quotes the body's start.
      logs_id(bool): Harmless, but may be dead-lettered, so its line shows the message id (``max_age``).
    """

    kind: str
    verdict: str
    apply: Callable[[Draft], None] = field(repr=False)
    envelope: bool = False
    logs_id: bool = False

    def __repr__(self) -> str:
        return f"<{self.kind}: {self.verdict}>"

    @property
    def touches(self) -> frozenset[str]:
        """What it changes: two alterations that change one thing could undo each other's refusal."""
        subject = self.kind.split(":", 1)[0]
        words = [word for word in subject.split(" ") if word != "and"]
        if words[0] == "placement":
            return frozenset({"queue_name", "options.eta"})
        if self.kind.startswith("kwargs: the payload"):
            return frozenset({"args", "kwargs"})
        if words[0] in ("payload", "args"):
            return frozenset({"args"})
        if subject == "option":
            return frozenset()  # an unknown option: harmless, whatever else changes
        if words[0] in ("option", "options") and len(words) > 1:
            # A lane is checked against its key: they are one thing.
            return frozenset(
                "options.lane" if name in ("lane", "partition_key") else f"options.{name}" for name in words[1:]
            )
        return frozenset({words[0]})


def _conflict(mutations: Sequence[Mutation]) -> bool:
    seen: set[str] = set()
    for mutation in mutations:
        for target in mutation.touches:
            if any(t == target or t.startswith(target + ".") or target.startswith(t + ".") for t in seen):
                return True
        seen |= mutation.touches
    return False


@dataclass(frozen=True)
class BodyForm:
    """A body that is not a genuine envelope altered, but bytes of another shape.

    Parameters:
      kind(str): What it is.
      make(Callable[[bytes, str, int], bytes | None]): From the genuine body (its message id
        the token, first), the token and the forgery's index: the body, or None for a Redis id without one.
    """

    kind: str
    make: Callable[[bytes, str, int], bytes | None] = field(repr=False)

    def __repr__(self) -> str:
        return f"<{self.kind}>"


@dataclass(frozen=True)
class Recipe:
    """What hypothesis draws: a base, then a body form, or alterations (perhaps signed again)."""

    base: str
    mutations: tuple[Mutation, ...] = ()
    signed_again: bool = False
    body: BodyForm | None = None


@dataclass(frozen=True)
class Forged:
    """One forged message, ready to be written.

    Parameters:
      index(int): Its place in the batch.
      token(str): Carried by its message id, or at the start of its body: how its log line is found.
      n(int): The number of the event it was forged from; a handler that runs it counts ``<handler>|<n>``.
      queue(str): The queue it is written to.
      body(bytes | None): Its bytes; None for a Redis id without a body.
      kinds(tuple[str, ...]): What was altered.
      verdict(str): REFUSED or HARMLESS.
      recipe(Recipe): Where it came from.
    """

    index: int
    token: str
    n: int
    queue: str
    body: bytes | None
    kinds: tuple[str, ...]
    verdict: str
    recipe: Recipe = field(repr=False)

    def describe(self) -> str:
        shown = repr(self.body[:300]) if self.body is not None else "no body"
        return f"#{self.index} {self.token} {list(self.kinds)} signed again={self.recipe.signed_again}: {shown}"


@dataclass
class Scene:
    """What forgeries are made from: one deployment's queues, actors, keys and genuine messages.

    Parameters:
      kind(str): ``redis`` or ``rabbitmq``.
      queues(tuple[str, str]): The bus's queue and partitioned queue.
      actors(Sequence[str]): The worker's actor names.
      genuine(Callable[[str, int], dict[str, Any]]): The envelope the publisher sends to handler
        ``base`` for the event numbered ``n`` (a Tick, or a Keyed for KeyedCount).
      signer(Signer): The deployment's key, for forgeries signed again.
      other_payloads(Sequence[Any]): Encoded events of other classes, a signed pickle among them.
      keys(tuple[str, ...]): The partition keys of the keyed events.
      max_message_bytes(int): The workers' limit.
    """

    kind: str
    queues: tuple[str, str]
    actors: Sequence[str]
    genuine: Callable[[str, int], dict[str, Any]]
    signer: Signer
    other_payloads: Sequence[Any]
    keys: tuple[str, ...]
    max_message_bytes: int = 1 << 20

    @property
    def signs_message_ids(self) -> bool:
        """Whether the signature covers the message id: then another id is another message."""
        one = SimpleNamespace(message_id="a", actor_name="x", queue_name="q", args=[], kwargs={}, options={})
        other = SimpleNamespace(**{**vars(one), "message_id": "b"})
        return bool(self.signer.sign(one) != self.signer.sign(other))

    def sign(self, envelope: dict[str, Any]) -> str:
        """The signature the bus's key gives the message ``envelope`` holds."""
        return self.signer.sign(SimpleNamespace(**{name: envelope.get(name) for name in FIELDS}))

    def actor(self, base: str) -> str:
        return next(name for name in self.actors if name.endswith(f".{base}"))

    def queue_of(self, base: str) -> str:
        return self.queues[1] if base in KEYED_HANDLERS else self.queues[0]


# -- values -------------------------------------------------------------------------------------


def _huge_text() -> st.SearchStrategy[str]:
    # Built from two small draws: hypothesis's own data would overrun drawing 100,000 characters.
    return st.builds(
        lambda char, size: char * size,
        st.sampled_from(["x", "\n", "é", "\u4e00", "\x00"]),
        st.sampled_from([1_000, 100_000]),
    )


def nasty_text() -> st.SearchStrategy[str]:
    """Strings a log line must escape and cut: empty, control characters, a forged record, huge."""
    special = st.sampled_from(
        ["", " ", "\n" + FORGED_RECORD, "\r\n" + FORGED_RECORD, "\x1b[31mred", "\u2028x", "\x00", "%s%(x)s%n", "{0}"]
    )
    return st.one_of(special, st.text(max_size=20), _huge_text())


JSON_SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)

_TYPES: dict[str, tuple[type, ...]] = {
    "queue_name": (str,),
    "actor_name": (str,),
    "args": (list,),
    "kwargs": (dict,),
    "options": (dict,),
    "message_id": (str,),
    "message_timestamp": (int, float),
}


def _is_a(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def wrong_type(types: tuple[type, ...]) -> st.SearchStrategy[Any]:
    return JSON_VALUES.filter(lambda value: not _is_a(value, types))


# -- alterations --------------------------------------------------------------------------------


def _set(name: str, value: Any) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        draft.envelope[name] = value

    return apply


def _drop(name: str) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        draft.envelope.pop(name, None)

    return apply


def _option(name: str, value: Any) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        options = draft.envelope.get("options")
        if isinstance(options, dict):
            options[name] = value

    return apply


def _drop_option(name: str) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        options = draft.envelope.get("options")
        if isinstance(options, dict):
            options.pop(name, None)

    return apply


def _payload(change: Callable[[Any], Any]) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        args = draft.envelope.get("args")
        if isinstance(args, list) and args:
            args[0] = change(args[0])

    return apply


def _mutation(kind: str, verdict: str, apply: Callable[[Draft], None], **flags: bool) -> Mutation:
    return Mutation(kind, verdict, apply, **flags)


def envelope_mutations(scene: Scene, base: str) -> st.SearchStrategy[Mutation]:
    """Each envelope field missing, of a wrong type, empty, huge, another queue or actor; an unknown field."""
    queue, other_queue = scene.queue_of(base), next(q for q in scene.queues if q != scene.queue_of(base))
    me = scene.actor(base)
    siblings = [scene.actor(b) for b in TICK_BASES if b != base] if base in TICK_BASES else []
    strangers = [name for name in scene.actors if name != me and name not in siblings]
    choices: list[st.SearchStrategy[Mutation]] = []
    signed_ids = scene.signs_message_ids
    for name in FIELDS:
        verdict = REFUSED if name in REQUIRED or (name == "message_id" and signed_ids) else HARMLESS
        choices.append(st.just(_mutation(f"{name}: missing", verdict, _drop(name), envelope=name in REQUIRED)))
        choices.append(
            wrong_type(_TYPES[name]).map(
                lambda value, name=name: _mutation(f"{name}: wrong type", REFUSED, _set(name, value), envelope=True)
            )
        )
    choices.append(
        st.tuples(nasty_text().filter(lambda n: n not in FIELDS), JSON_VALUES).map(
            lambda pair: _mutation("envelope: an unknown field", REFUSED, _set(*pair), envelope=True)
        )
    )
    other_queues = st.one_of(
        st.sampled_from([other_queue, f"{queue}.DQ", f"{queue}.XQ", f"{other_queue}.DQ", "default", queue.upper()]),
        nasty_text().filter(lambda q: q != queue),
    )
    choices.append(other_queues.map(lambda q: _mutation("queue_name: another queue", REFUSED, _set("queue_name", q))))
    if siblings:
        choices.append(
            st.sampled_from(siblings).map(
                lambda a: _mutation("actor_name: another handler of its event", SIGNED, _set("actor_name", a))
            )
        )
    choices.append(
        st.sampled_from(strangers).map(
            lambda a: _mutation("actor_name: a handler of another event", REFUSED, _set("actor_name", a))
        )
    )
    choices.append(
        st.one_of(
            nasty_text(), st.sampled_from([me.upper(), me + " ", "dramatiq_eventbus.worker", "builtins.eval"])
        ).map(lambda a: _mutation("actor_name: an actor nobody declared", REFUSED, _set("actor_name", a)))
    )
    choices.append(st.just(_mutation("args: empty", REFUSED, _set("args", []))))
    choices.append(
        st.just(
            _mutation(
                "args: the payload twice", REFUSED, lambda d: d.envelope.__setitem__("args", d.envelope["args"] * 2)
            )
        )
    )
    choices.append(
        JSON_VALUES.map(
            lambda v: _mutation(
                "args: one more argument", REFUSED, lambda d: d.envelope.__setitem__("args", [*d.envelope["args"], v])
            )
        )
    )
    choices.append(
        st.just(
            _mutation(
                "kwargs: the payload by name, args empty",
                SIGNED,
                lambda d: d.envelope.update(kwargs={"payload": d.envelope["args"][0]}, args=[]),
            )
        )
    )
    choices.append(
        st.tuples(st.text(max_size=8).filter(lambda k: k != "payload"), JSON_VALUES).map(
            lambda pair: _mutation("kwargs: an unknown argument", REFUSED, _set("kwargs", dict([pair])))
        )
    )
    choices.append(
        st.just(
            _mutation(
                "options: emptied",
                SIGNED,
                lambda d: d.envelope.__setitem__("options", {"forged": d.envelope["options"]["forged"]}),
            )
        )
    )
    # A message id that is not plain runs, but any line about it would show it: see materialize().
    choices.append(
        st.one_of(st.just(""), nasty_text()).map(
            lambda s: _mutation("message_id: another string", SIGNED if signed_ids else HARMLESS, _suffix_id(s))
        )
    )
    choices.append(
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**63),
            st.floats(allow_nan=True, allow_infinity=True),
            st.just(Raw("1e400")),
        ).map(lambda t: _mutation("message_timestamp: another number", HARMLESS, _set("message_timestamp", t)))
    )
    return st.one_of(*choices)


def _suffix_id(suffix: str) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        draft.envelope["message_id"] = draft.token + suffix if suffix else ""

    return apply


def option_mutations(scene: Scene, base: str) -> st.SearchStrategy[Mutation]:
    """Each option the bus writes, and each Dramatiq reads, removed, of a wrong type, out of range; unknown ones."""
    keyed = base in KEYED_HANDLERS
    me = scene.actor(base)
    choices: list[st.SearchStrategy[Mutation]] = []
    # The bus's own options.
    choices.append(st.just(_mutation("option event_type: removed", SIGNED, _drop_option("event_type"))))
    choices.append(
        st.one_of(JSON_VALUES, nasty_text(), st.sampled_from(["tests.faults.handlers:Solo", "os:system"])).map(
            lambda v: _mutation("option event_type: another value", SIGNED, _option("event_type", v))
        )
    )
    choices.append(st.just(_mutation("option signature: removed", REFUSED, _drop_option("signature"))))
    choices.append(
        st.one_of(
            JSON_VALUES,
            nasty_text(),
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        ).map(lambda v: _mutation("option signature: another value", REFUSED, _option("signature", v)))
    )
    wrong_key = JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, str))
    choices.append(
        wrong_key.map(lambda v: _mutation("option partition_key: not a str", REFUSED, _option("partition_key", v)))
    )
    wrong_lane = JSON_VALUES.filter(lambda v: v is not None)
    choices.append(wrong_lane.map(lambda v: _mutation("option lane: not its lane", REFUSED, _option("lane", v))))
    choices.append(
        st.sampled_from(
            [f"{scene.actor(b)}:{k}" for b in BASES for k in scene.keys] + [f"{me}:", ":", f"{me}:k0:x"]
        ).map(lambda v: _mutation("option lane: another lane", REFUSED, _lanes_differ(v)))
    )
    if keyed:
        choices.append(st.just(_mutation("option lane: removed", SIGNED, _drop_option("lane"))))
        choices.append(
            st.sampled_from(scene.keys).map(
                lambda k: _mutation("option partition_key: another key, lane kept", REFUSED, _key_only(k))
            )
        )
        choices.append(
            st.sampled_from(scene.keys).map(
                lambda k: _mutation("options partition_key and lane: another key", SIGNED, _rekeyed(me, k, scene.keys))
            )
        )
        choices.append(st.just(_mutation("option partition_key: removed", REFUSED, _drop_option("partition_key"))))
    else:
        choices.append(
            nasty_text().map(
                lambda k: _mutation("option partition_key: a key, no lane", SIGNED, _option("partition_key", k))
            )
        )
        choices.append(
            st.sampled_from(scene.keys).map(
                lambda k: _mutation(
                    "options partition_key and lane: a lane of its own", SIGNED, _rekeyed(me, k, scene.keys)
                )
            )
        )
    # Dramatiq's options, of a wrong type.
    for name in NUMERIC_OPTIONS:
        choices.append(
            JSON_VALUES.filter(lambda v: v is not None and not _is_number(v)).map(
                lambda v, name=name: _mutation(f"option {name}: not a number", REFUSED, _option(name, v))
            )
        )
    # Out of range, or in range.
    huge = st.one_of(st.integers(min_value=10**15, max_value=10**30), st.just(Raw("1e400")), st.just(Raw("NaN")))
    choices.append(
        st.one_of(st.integers(min_value=-(10**12), max_value=10**15), huge, st.floats()).map(
            lambda v: _mutation("option eta: on a queue of undelayed messages", REFUSED, _option("eta", v))
        )
    )
    choices.append(
        st.one_of(
            st.integers(max_value=-1), st.integers(min_value=100_001), st.just(Raw("NaN")), st.just(Raw("-Infinity"))
        ).map(lambda v: _mutation("option retries: not a count", REFUSED, _option("retries", v)))
    )
    choices.append(
        st.integers(min_value=0, max_value=100_000).map(
            lambda v: _mutation("option retries: a count", HARMLESS, _option("retries", v))
        )
    )
    # time_limit stays above a second: a handler past its limit fails and is retried, which a forgery may well
    # cause, but the suite would then count the retries' lines.
    in_range = {
        "max_retries": st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.floats()),
        "min_backoff": st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.floats()),
        "max_backoff": st.one_of(st.integers(min_value=-(2**40), max_value=2**40), st.floats()),
        "time_limit": st.one_of(st.integers(min_value=1_000, max_value=2**40), st.just(1e300)),
        "max_age": st.one_of(st.integers(min_value=1, max_value=2**40), st.just(1e300)),
    }
    for name, values in in_range.items():
        choices.append(
            values.map(
                lambda v, name=name: _mutation(
                    f"option {name}: a number", HARMLESS, _option(name, v), logs_id=name == "max_age"
                )
            )
        )
    choices.append(
        JSON_VALUES.filter(lambda v: v is not None).map(
            lambda v: _mutation("option throws: not exception classes", REFUSED, _option("throws", v))
        )
    )
    for name in ("notify_shutdown", "traceback", "redis_message_id", "broker_priority", "delay", "pipe_ignore"):
        choices.append(
            st.one_of(JSON_VALUES, nasty_text()).map(
                lambda v, name=name: _mutation(f"option {name}: any value", HARMLESS, _option(name, v))
            )
        )
    if "callback options" not in KNOWN_BUGS:
        # Refused, or ignored: either way the worker must send nothing on their say (the suite sees
        # what it would send as lines about no forgery, or a CRITICAL line).
        for name in CALLBACK_OPTIONS:
            choices.append(
                st.one_of(JSON_VALUES, st.sampled_from(scene.actors)).map(
                    lambda v, name=name: _mutation(f"option {name}: any value", HARMLESS, _option(name, v))
                )
            )
    choices.append(
        st.tuples(
            st.one_of(nasty_text(), st.text(max_size=10)).filter(
                lambda n: (
                    n
                    not in (
                        *DRAMATIQ_OPTIONS,
                        *CALLBACK_OPTIONS,
                        "event_type",
                        "partition_key",
                        "lane",
                        "signature",
                        "forged",
                    )
                )
            ),
            st.one_of(JSON_VALUES, nasty_text()),
        ).map(lambda pair: _mutation("option: an unknown one", HARMLESS, _option(*pair)))
    )
    return st.one_of(*choices)


def _lanes_differ(lane: str) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        options = draft.envelope.get("options")
        if isinstance(options, dict):
            key = options.get("partition_key")
            mine = f"{draft.envelope.get('actor_name')}:{key}"
            options["lane"] = lane if lane != mine else lane + "x"

    return apply


def _key_only(key: str) -> Callable[[Draft], None]:
    def apply(draft: Draft) -> None:
        options = draft.envelope.get("options")
        if isinstance(options, dict):
            options["partition_key"] = key if key != options.get("partition_key") else key + "x"

    return apply


def _rekeyed(actor: str, key: str, keys: Sequence[str]) -> Callable[[Draft], None]:
    """Another partition key, and the lane that goes with it: never the key the message had."""

    def apply(draft: Draft) -> None:
        options = draft.envelope.get("options")
        if isinstance(options, dict):
            new = key if key != options.get("partition_key") else keys[(keys.index(key) + 1) % len(keys)]
            options["partition_key"] = new
            options["lane"] = f"{actor}:{new}"

    return apply


def payload_mutations(scene: Scene, base: str) -> st.SearchStrategy[Mutation]:
    """The payload: another event class's (a signed pickle among them), malformed typed JSON, fields of a wrong type."""
    tick = base in TICK_BASES
    own_fields = ("run", "n") if tick else ("run", "n", "key")
    # Values that a worker must refuse in a payload; Dramatiq logs a refused payload whole (see KNOWN_BUGS).
    junk = st.one_of(
        # Not a bool: the codec takes true for an int, as Python does (bool is an int).
        JSON_VALUES.filter(lambda v: not _is_number(v) and not isinstance(v, str | bool)),
        st.sampled_from(
            [
                {"$type": "os:system", "command": "touch /tmp/forged"},
                {"$type": 7},
                {"$fraction": ["1", "0"]},
                {"$fraction": ["f" * 5000, "1"]},
                {"$decimal": "1e999999999"},
                {"$set": [1, 1]},
                {"$pickle": "gASVAAAA", "hmac": "0" * 64},
                {"$bytes": "not base64!"},
                {"$datetime": "yesterday"},
                Raw("9" * 5000),
            ]
        ),
    )

    def field_as(name: str, value: Any) -> Callable[[Any], Any]:
        def change(payload: Any) -> Any:
            return {**payload, name: value} if isinstance(payload, dict) else payload

        return change

    def without(name: str) -> Callable[[Any], Any]:
        def change(payload: Any) -> Any:
            return {k: v for k, v in payload.items() if k != name} if isinstance(payload, dict) else payload

        return change

    choices: list[st.SearchStrategy[Mutation]] = [
        st.sampled_from(list(range(len(scene.other_payloads)))).map(
            lambda i: _mutation(
                "payload: another event class's", REFUSED, _payload(lambda _p, i=i: scene.other_payloads[i])
            )
        ),
        st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=3), st.just({})).map(
            lambda v: _mutation("payload: not a typed event", REFUSED, _payload(lambda _p, v=v: v))
        ),
        st.tuples(st.sampled_from(own_fields), junk).map(
            lambda pair: _mutation("payload: a field of the wrong type", REFUSED, _payload(field_as(*pair)))
        ),
        st.sampled_from(own_fields).map(
            lambda name: _mutation("payload: a field missing", REFUSED, _payload(without(name)))
        ),
        st.tuples(
            st.text(min_size=1, max_size=12).filter(lambda k: k not in own_fields and k != "$type"), JSON_SCALARS
        ).map(lambda pair: _mutation("payload: an unknown field", REFUSED, _payload(field_as(*pair)))),
        st.sampled_from(
            ["tests.faults.handlers:Solo", "tests.faults.forgery:Census", "builtins:dict", "", "os:system"]
        ).map(lambda t: _mutation("payload: another $type", REFUSED, _payload(field_as("$type", t)))),
        st.integers(min_value=2, max_value=12).map(
            lambda depth: _mutation(
                "payload: nested typed values", REFUSED, _payload(lambda p, depth=depth: _nested(p, depth))
            )
        ),
    ]
    return st.one_of(*choices)


def _nested(payload: Any, depth: int) -> Any:
    value: Any = payload
    for _ in range(depth):
        value = {"$type": "tests.faults.handlers:Tick", "run": value, "n": 0}
    return value


def placement_mutations(scene: Scene, base: str) -> st.SearchStrategy[Mutation]:
    """Written to the other bus queue, or to its own delay queue with an eta near, far, absent or wrong."""

    def to_delay(eta: Any) -> Callable[[Draft], None]:
        def apply(draft: Draft) -> None:
            draft.placement = DELAY_QUEUE
            draft.envelope["queue_name"] = scene.queue_of(base) + ".DQ"
            options = draft.envelope.get("options")
            if isinstance(options, dict) and eta is not None:
                options["eta"] = eta() if callable(eta) else eta

        return apply

    def soon(ms: int) -> Callable[[], int]:
        return lambda: int(time.time() * 1000) + ms

    return st.one_of(
        st.just(_mutation("placement: the other bus queue", REFUSED, lambda d: setattr(d, "placement", OTHER_QUEUE))),
        st.just(_mutation("placement: its delay queue, no eta", HARMLESS, to_delay(None))),
        st.integers(min_value=0, max_value=1_500).map(
            lambda ms: _mutation("placement: its delay queue, eta near", HARMLESS, to_delay(soon(ms)))
        ),
        st.one_of(st.integers(min_value=4_000_000, max_value=10**15).map(soon), st.just(Raw("Infinity"))).map(
            lambda eta: _mutation("placement: its delay queue, eta far", REFUSED, to_delay(eta))
        ),
        wrong_type((int, float))
        .filter(lambda v: v is not None)
        .map(lambda eta: _mutation("placement: its delay queue, eta not a number", REFUSED, to_delay(eta))),
    )


def body_forms(scene: Scene) -> st.SearchStrategy[BodyForm]:
    """Bodies that are not an envelope: cut short, not UTF-8, JSON of another shape, empty, too large, too deep."""

    def cut(fraction: float) -> Callable[[bytes, str, int], bytes]:
        return lambda body, _token, _i: body[: max(60, int(len(body) * fraction))]

    def not_utf8(bad: bytes) -> Callable[[bytes, str, int], bytes]:
        return lambda body, _token, _i: body[:60] + bad + body[60:]

    def spaced(text: str) -> Callable[[bytes, str, int], bytes]:
        # JSON allows whitespace around a value: its pattern (the index in binary) tells the bodies apart.
        return lambda _body, _token, i: (format(i, "012b").replace("0", " ").replace("1", "\t") + text).encode()

    def oversize(body: bytes, token: str, _i: int) -> bytes:
        padding = b"p" * (scene.max_message_bytes + 1)
        return body[:-1] + b',"padding":"' + padding + b'"}'

    def deep(body: bytes, token: str, _i: int) -> bytes:
        return json.dumps({"message_id": token}).encode()[:-1] + b',"args":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    def long_number(body: bytes, token: str, _i: int) -> bytes:
        return body[:-1] + b',"message_timestamp":' + b"9" * 5000 + b"}"

    def duplicated(body: bytes, token: str, _i: int) -> bytes:
        # The last value of a key wins in Python's json: the first says another queue.
        return body[:-1] + b',"queue_name":"elsewhere"}'

    return st.one_of(
        st.floats(min_value=0.0, max_value=0.95).map(lambda f: BodyForm("body: cut short", cut(f))),
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]).map(
            lambda bad: BodyForm("body: not UTF-8", not_utf8(bad))
        ),
        st.sampled_from(["null", "true", "0", "-1e999", '"a string"', "[]", '[{"queue_name": "q"}]', "NaN"]).map(
            lambda text: BodyForm("body: JSON, not an object", spaced(text))
        ),
        st.just(BodyForm("body: whitespace only", spaced(""))),
        st.just(BodyForm("body: empty", lambda _b, _t, _i: b"")),
        st.just(BodyForm("body: over max_message_bytes", oversize)),
        st.just(BodyForm("body: nested 100,000 deep", deep)),
        st.just(BodyForm("body: a 5,000-digit number", long_number)),
        st.just(BodyForm("body: a field given twice", duplicated)),
        st.just(BodyForm("body: none, only a Redis id", lambda _b, _t, _i: None)),
    )


def forgeries(scene: Scene) -> st.SearchStrategy[Recipe]:
    """A recipe: a genuine message written again, a body of another shape, or one to three alterations
    (a third of them signed again)."""

    def altered(base: str) -> st.SearchStrategy[Recipe]:
        one = st.one_of(
            envelope_mutations(scene, base),
            option_mutations(scene, base),
            payload_mutations(scene, base),
            placement_mutations(scene, base),
        )
        return st.builds(
            Recipe,
            base=st.just(base),
            mutations=st.lists(one, min_size=1, max_size=3).map(tuple),
            signed_again=st.integers(0, 2).map(lambda k: k == 0),
        )

    # Built once per base: flatmap would build them again for every draw. Of six, one writes the genuine
    # message again, one is a body of another shape, four alter it.
    by_base = {
        base: st.one_of(
            st.just(Recipe(base)),
            st.builds(Recipe, base=st.just(base), body=body_forms(scene)),
            *[altered(base)] * 4,
        )
        for base in BASES
    }
    return st.sampled_from(BASES).flatmap(by_base.__getitem__)


# -- making the bytes ----------------------------------------------------------------------------


def _dumps(envelope: dict[str, Any]) -> bytes:
    """Compact JSON, as Dramatiq writes it, with each Raw written as is."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"@@raw{len(raws) - 1}@@"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(envelope), separators=(",", ":"), ensure_ascii=False)
    for position, raw in enumerate(raws):
        text = text.replace(f'"@@raw{position}@@"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def _signable(envelope: dict[str, Any]) -> bool:
    options = envelope.get("options")
    return (
        isinstance(envelope.get("queue_name"), str)
        and isinstance(envelope.get("actor_name"), str)
        and isinstance(envelope.get("args"), list)
        and isinstance(envelope.get("kwargs"), dict)
        and isinstance(options, dict)
        and not _holds_raw(envelope)
    )


def _holds_raw(value: Any) -> bool:
    if isinstance(value, Raw):
        return True
    if isinstance(value, dict):
        return any(_holds_raw(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_raw(v) for v in value)
    return False


def materialize(
    scene: Scene, recipe: Recipe, index: int, n: int, token: str, *, avoid: Collection[str] = KNOWN_BUGS
) -> Forged | None:
    """The forged message of ``recipe``, or None when its line could not be told from the others', or
    it would show one of the known bugs named in ``avoid``."""
    base = recipe.base
    genuine = scene.genuine(base, n)
    # The message id carries the token, first in the body: every line about it quotes one or the other.
    envelope: dict[str, Any] = {"message_id": token}
    envelope.update({name: value for name, value in genuine.items() if name != "message_id"})
    envelope["options"] = {"forged": token, **genuine["options"]}
    # As the publisher would have sent it, had it picked the token for its id.
    envelope["options"]["signature"] = scene.sign(envelope)
    draft = Draft(envelope, token=token)
    own, other = scene.queue_of(base), next(q for q in scene.queues if q != scene.queue_of(base))

    if recipe.body is not None:
        body = recipe.body.make(_dumps(envelope), token, index)
        if body is None and scene.kind != "redis":
            return None  # only Redis keeps an id apart from its body
        return Forged(index, token, n, own, body, (recipe.body.kind,), REFUSED, recipe)

    kinds = tuple(m.kind for m in recipe.mutations) or ("replay: a genuine message written again",)
    if _conflict(recipe.mutations):
        return None
    try:
        for mutation in recipe.mutations:
            mutation.apply(draft)
    except (KeyError, IndexError, TypeError, AttributeError):
        return None  # an earlier alteration left nothing for this one to alter
    verdicts = {m.verdict for m in recipe.mutations}
    signed_again = recipe.signed_again and "option signature: removed" not in kinds
    signed_again = signed_again and not any(k.startswith("option signature") for k in kinds)
    if signed_again and _signable(envelope):
        try:
            envelope["options"]["signature"] = scene.sign(envelope)
        except (TypeError, ValueError):
            signed_again = False
    else:
        signed_again = False
    # Refused if any alteration must be, or one the signature covers was not signed again.
    verdict = REFUSED if REFUSED in verdicts or (SIGNED in verdicts and not signed_again) else HARMLESS

    message_id = envelope.get("message_id")
    options = envelope.get("options")
    tokened_id = isinstance(message_id, str) and message_id.startswith(token)
    if not tokened_id:
        at_envelope = any(m.envelope for m in recipe.mutations)
        quiet = verdict == HARMLESS and base in TICK_BASES and not any(m.logs_id for m in recipe.mutations)
        if not ((at_envelope and isinstance(options, dict)) or quiet):
            return None  # its line would name a message id that is not its token
        # The body's start, which the line of a refused envelope quotes, shows the token.
        envelope = {"options": envelope.pop("options"), **envelope} if isinstance(options, dict) else envelope
    if isinstance(message_id, str) and not (message_id.isprintable() and len(message_id) <= 80):
        logged = verdict != HARMLESS or base not in TICK_BASES or any(m.logs_id for m in recipe.mutations)
        if "message id in log lines" in avoid and logged:
            return None  # see KNOWN_BUGS: only as a message that runs without a line
        if "Dramatiq's lines" in avoid and len(message_id) > 1_000 and any(m.logs_id for m in recipe.mutations):
            return None  # see KNOWN_BUGS: AgeLimit's line shows the id uncut
    priority = options.get("broker_priority") if isinstance(options, dict) else None
    if (
        "broker priority" in avoid
        and scene.kind == "rabbitmq"
        and draft.placement == DELAY_QUEUE
        and not (priority is None or (isinstance(priority, int) and 0 <= priority <= 255))
    ):
        return None  # see KNOWN_BUGS
    if "Dramatiq's lines" in avoid and len(repr(envelope.get("args"))) > 1_500:
        return None  # see KNOWN_BUGS: a refused payload is logged whole
    queue = {None: own, OTHER_QUEUE: other, DELAY_QUEUE: own + ".DQ"}[draft.placement]
    body = _dumps(envelope)
    if len(body) > scene.max_message_bytes:
        verdict = REFUSED
    return Forged(index, token, n, queue, body, kinds, verdict, recipe)


#: Hypothesis draws this many examples per forgery kept.
STRIDE = 6


def draw_batch(scene: Scene, *, size: int, seed_value: int, batch: int, first_n: int) -> list[Forged]:
    """``size`` forgeries drawn by hypothesis from ``seed_value``: the same ones on every run."""
    recipes: list[Recipe] = []

    @settings(
        max_examples=size * STRIDE,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(forgeries(scene))
    def collect(recipe: Recipe) -> None:
        recipes.append(recipe)

    collect()
    batch_of: list[Forged] = []
    starts: set[bytes] = set()
    seen: Counter[tuple[str, ...]] = Counter()
    # Hypothesis draws each example near the last: taking every STRIDE-th first spreads the kinds.
    for position in sorted(range(len(recipes)), key=lambda i: (i % STRIDE, i)):
        recipe = recipes[position]
        if len(batch_of) == size:
            break
        index = len(batch_of)
        token = f"forged-{batch:02d}-{index:03d}-"
        made = materialize(scene, recipe, index, first_n + index, token)
        if made is None or seen[made.kinds] >= 2:
            continue  # hypothesis dwells on what it drew last: two of a kind are enough
        if made.body is not None and token.encode() not in made.body[:60]:
            # Its line quotes the body's start: it must differ from every other's.
            if made.body[:60] in starts:
                continue
            starts.add(made.body[:60])
        seen[made.kinds] += 1
        batch_of.append(made)
    return batch_of
