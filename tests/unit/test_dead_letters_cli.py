"""``eventbus dead-letters``: its exit statuses, its refusals, and lines that escape what a message says."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from dramatiq_eventbus.brokers.rabbitmq.dead_letters import _dead_lettered_at, digest
from dramatiq_eventbus.cli import main
from dramatiq_eventbus.dead_letters import DeadLetter, _line


@pytest.fixture
def stub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_HANDLERS", "tests.unit.handlers:HANDLERS")
    monkeypatch.setenv("EVENTBUS_BROKER_URL", "stub")


def test_nothing_found_is_success(stub_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dead-letters", "list"]) == 0
    assert capsys.readouterr().out == "no dead letter found\n"
    assert main(["dead-letters", "replay", "--all", "--dry-run"]) == 0
    assert capsys.readouterr().out == "0 would replay, 0 refused\n"
    assert main(["dead-letters", "purge", "--handler", "FinanceHandler"]) == 0
    assert capsys.readouterr().out == "0 purged\n"


@pytest.mark.parametrize("action", ["replay", "purge"])
def test_replay_and_purge_without_a_filter_ask_for_all(
    stub_env: None, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert main(["dead-letters", action]) == 2
    assert capsys.readouterr().err == (
        f"eventbus: {action} needs a filter (--handler, --event-type, --older-than, --message-id) or --all\n"
    )


def test_show_of_an_unknown_id_is_an_error(stub_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dead-letters", "show", "nope\x1b[2J"]) == 2
    assert capsys.readouterr().err == "eventbus: no dead letter 'nope\\x1b[2J' in events, events_partitioned\n"


def test_a_configuration_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("EVENTBUS_HANDLERS", raising=False)
    assert main(["dead-letters", "list"]) == 2
    assert capsys.readouterr().err.startswith("eventbus: EVENTBUS_HANDLERS is not set")


def test_a_broker_that_does_not_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVENTBUS_HANDLERS", "tests.unit.handlers:HANDLERS")
    monkeypatch.setenv("EVENTBUS_BROKER_URL", "redis://127.0.0.1:1/0")
    assert main(["dead-letters", "list"]) == 2
    assert capsys.readouterr().err.startswith("eventbus: the broker failed: ConnectionError")


def test_a_line_escapes_every_value_the_message_gave() -> None:
    letter = DeadLetter(
        message_id="id\n[CRITICAL] forged",
        queue_name="events",
        location="r1",
        handler="tests.unit.handlers.FinanceHandler",
        event_type="x\x1b[31m",
        partition_key="k\x07",
        event_id="e",
        age_seconds=12.34,
        attempts=3,
        last_failure="RuntimeError: boom",
    )
    first, second = _line(letter).splitlines()
    assert "\x1b" not in first and "\x07" not in first and "\\x1b[31m" in first and "'id\\n[CRITICAL] forged'" in first
    assert first.startswith("    12.3s  attempts 3   events")
    assert second.strip() == "last failure: RuntimeError: boom"


def test_an_unreadable_dead_letter_says_so_with_where_it_is() -> None:
    letter = DeadLetter(message_id=None, queue_name="events", location="r\x1b", problem="its envelope lacks args")
    first, second = _line(letter).splitlines()
    assert first == "        ?  unreadable  events None at 'r\\x1b'"
    assert second.strip() == "its envelope lacks args"


def test_rabbitmq_dead_letters_are_known_by_their_body_and_dated_by_x_death() -> None:
    when = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    properties = SimpleNamespace(headers={"x-death": [{"time": when, "queue": "events"}]})
    assert _dead_lettered_at(properties) == when.timestamp()
    assert _dead_lettered_at(SimpleNamespace(headers=None)) is None
    assert _dead_lettered_at(SimpleNamespace(headers={"x-death": "forged"})) is None
    assert digest(b"body") == digest(b"body") != digest(b"body ")
