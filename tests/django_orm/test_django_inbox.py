"""The inbox on the Django ORM (``inbox_atomic()``), against PostgreSQL: a redelivered event changes nothing.

A real ``dramatiq`` worker of the Django project given a copy of a message; and, in one Django
process, runs under a set context: a redelivery, a failed run and its retry, another handler of
the same event, a block outside any handler, and two runs at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from sqlalchemy import Engine, text

from dramatiq_eventbus import EventBus
from tests.support.worker_process import wait_for
from tests.transactions.support import ACTOR_OPTIONS, BrokerView, Records, scratch_table

from .conftest import HANDLERS, Django, base_env
from .handlers import Credited

HANDLER = "tests.django_orm.handlers.Crediting"
DUPLICATE_LINE = "was already handled by"
EFFECTS = "id SERIAL PRIMARY KEY, account TEXT, event_id TEXT"


def effect_rows(engine: Engine, table: str) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return [(row.account, row.event_id) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))]


@pytest.fixture
def effects(engine: Engine, clean: str) -> Iterator[str]:
    with scratch_table(engine, clean, "effects", EFFECTS) as table:
        yield table


@pytest.fixture
def publisher(redis_url: str, queues: tuple[str, str], view: BrokerView) -> Iterator[EventBus]:
    """A bus outside Django, configured like the worker's."""
    import importlib

    module, name = HANDLERS.split(":")
    made = EventBus().configure(
        handlers=getattr(importlib.import_module(module), name),
        broker=redis_url,
        queue=queues[0],
        partitioned_queue=queues[1],
        default_actor_options=ACTOR_OPTIONS,
    )
    yield made
    made.broker.close()
    view.client.zrem("dramatiq:__heartbeats__", getattr(made.broker, "broker_id", ""))


def test_a_message_delivered_twice_to_a_django_worker_changes_the_database_once(
    django_env: Django,
    publisher: EventBus,
    effects: str,
    engine: Engine,
    view: BrokerView,
    records: Records,
    queues: tuple[str, str],
    tag: str,
    tmp_path: Path,
) -> None:
    event_id = publisher.publish(Credited(tag, effects, "a"))
    [queued] = view.queued()
    # The copy a broker may deliver again: the same message under another broker id.
    publisher.broker.enqueue(dramatiq.Message(**{**queued, "message_id": str(uuid.uuid4())}))
    assert len(view.queued()) == 2

    worker = django_env.worker(queues, tmp_path / "worker.log")
    try:
        records.wait_for(tag, 1, log=worker.log_tail())
        wait_for(lambda: DUPLICATE_LINE in worker.log() and view.queued() == [], describe=worker.log_tail)
    finally:
        worker.stop()
    assert [run["event_id"] for run in records.of(tag)] == [event_id]
    assert effect_rows(engine, effects) == [("a", event_id)]
    with engine.connect() as connection:
        schema = django_env.env["DJANGO_ORM_SCHEMA"]
        inbox = connection.execute(text(f'SELECT handler, event_id FROM "{schema}".eventbus_inbox'))
        assert [tuple(row) for row in inbox] == [(HANDLER, event_id)]
    log = worker.log()
    [line] = [line for line in log.splitlines() if DUPLICATE_LINE in line]
    assert "INFO" in line and repr(event_id) in line
    # Acknowledged as a success: neither retried nor dead-lettered.
    assert "Traceback" not in log and "dead" not in log.lower()


@pytest.fixture(scope="module")
def runs(engine: Engine, schema: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """Both in-process scenarios, in one Django process each, on an effects table of their own."""
    store = Records(redis_url)
    with (
        scratch_table(engine, schema, "effects", EFFECTS) as sequential,
        scratch_table(engine, schema, "effects", EFFECTS) as concurrent,
    ):
        django = Django(
            {
                **base_env(schema),
                "EVENTBUS_HANDLERS": HANDLERS,
                "EVENTBUS_BROKER_URL": redis_url,
                **store.env(),
            }
        )
        yield {
            "sequential": django.scenario("inbox_runs", tag="runs", table=sequential),
            "concurrent": django.scenario("inbox_concurrent", tag="concurrent", table=concurrent),
        }
    store.delete()


def test_a_redelivered_event_changes_nothing_and_a_failed_run_leaves_no_row(runs: dict[str, Any]) -> None:
    result = runs["sequential"]
    assert result["outcomes"]["first"] == "handled"
    assert result["outcomes"]["redelivered"] == "duplicate"
    # The failed run's insert and inbox row rolled back together: its retry is a first delivery.
    assert result["outcomes"]["failed"] == "RuntimeError"
    assert result["outcomes"]["retried"] == "handled"
    # Another handler of the same event has a row of its own.
    assert result["outcomes"]["other_handler"] == "handled"
    assert result["effects"] == [["a", "event-1"], ["b", "event-2"], ["a", "event-1"]]
    ours = [row for row in result["inbox"] if row[1] in ("event-1", "event-2")]
    assert ours == [[HANDLER, "event-1"], [HANDLER, "event-2"], ["tests.other.Handler", "event-1"]]


def test_inbox_atomic_outside_a_handler_says_where_it_belongs(runs: dict[str, Any]) -> None:
    assert "use it inside handle_event()" in runs["sequential"]["outcomes"]["outside"]


def test_two_concurrent_claims_one_wins_the_other_waits_and_is_a_duplicate(runs: dict[str, Any]) -> None:
    result = runs["concurrent"]
    first, second = result["outcomes"]["0.0"], result["outcomes"]["0.3"]
    assert (first[0], second[0]) == ("handled", "duplicate"), result
    # The second began 0.3 s after the first, whose block holds its claim 1 s: it waited on the key.
    assert second[1] >= 0.5, result
    assert result["effects"] == [["a", "event-c"]]
