"""The pytest plugin, seen from inside: inner test runs with pytester and no conftest of their own."""

from __future__ import annotations

import pytest

INNER = """
from dataclasses import dataclass

import dramatiq_eventbus as eventbus
from dramatiq_eventbus.testing import assert_event_published, get_event_bus_mode, set_event_bus_mode


@dataclass(frozen=True)
class CallCompleted:
    call_id: str


class Billing:
    def handle_event(self, event):
        pass


def complete_call(call_id):
    eventbus.publish(CallCompleted(call_id))


@pytest.fixture(autouse=True)
def wiring():
    eventbus.configure(handlers={CallCompleted: [Billing]}, broker="stub")
"""


def inner_module(pytester: pytest.Pytester, body: str) -> None:
    pytester.makepyfile(test_calls="import pytest\n" + INNER + body)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # Hypothesis's plugin imports all of hypothesis again in each inner run: a second per run.
    return pytester.runpytest("-p", "no:hypothesispytest", *args)


def line_of(pytester: pytest.Pytester, text: str) -> int:
    source = (pytester.path / "test_calls.py").read_text().splitlines()
    (line,) = [number for number, content in enumerate(source, 1) if text in content]
    return line


def test_the_plugin_loads_from_its_entry_point_with_nothing_in_conftest(pytester: pytest.Pytester) -> None:
    inner_module(
        pytester,
        """
def test_completing_a_call_publishes(event_bus):
    assert get_event_bus_mode() == "default"
    set_event_bus_mode("strict")
    complete_call("c1")
    event = assert_event_published(CallCompleted, call_id="c1")
    assert event == CallCompleted("c1")
""",
    )
    run(pytester).assert_outcomes(passed=1)
    disabled = run(pytester, "-p", "no:dramatiq_eventbus")
    disabled.assert_outcomes(errors=1)
    disabled.stdout.fnmatch_lines(["*fixture 'event_bus' not found*"])


def test_unasserted_strict_events_fail_the_test_with_their_repr_and_stack(pytester: pytest.Pytester) -> None:
    inner_module(
        pytester,
        """
def test_forgets_an_event(event_bus):
    set_event_bus_mode("strict")
    complete_call("c1")  # the caller
    complete_call("c2")
    assert_event_published(CallCompleted, call_id="c2")
""",
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)  # a failure of the test itself, not an error in teardown
    result.stdout.fnmatch_lines(
        [
            "*test_forgets_an_event*",
            "Unasserted events published in strict mode:",
            "",
            "  CallCompleted(call_id='c1')",
            "    Published at:",
            f"      test_calls.py:{line_of(pytester, '# the caller')} in test_forgets_an_event",
            '        complete_call("c1")  # the caller',
            f"      test_calls.py:{line_of(pytester, 'eventbus.publish(CallCompleted(call_id))')} in complete_call",
            "        eventbus.publish(CallCompleted(call_id))",
        ]
    )
    assert "dramatiq_eventbus" not in result.stdout.str().split("Published at:")[1]
    assert "c2" not in result.stdout.str().split("Unasserted events")[1]


def test_a_test_that_fails_on_its_own_shows_only_its_own_failure(pytester: pytest.Pytester) -> None:
    inner_module(
        pytester,
        """
def test_fails_before_asserting(event_bus):
    set_event_bus_mode("strict")
    complete_call("c1")
    assert 1 == 2, "its own failure"
""",
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*its own failure*"])
    result.stdout.no_fnmatch_line("*Unasserted events*")


def test_each_test_gets_a_fresh_mailbox_in_default_mode(pytester: pytest.Pytester) -> None:
    inner_module(
        pytester,
        """
from dramatiq_eventbus.testing import published_events


def test_first(event_bus):
    set_event_bus_mode("inline")
    complete_call("c1")
    assert published_events() == []


def test_second(event_bus):
    assert get_event_bus_mode() == "default"
    complete_call("c2")
    assert published_events() == [CallCompleted("c2")]
""",
    )
    run(pytester).assert_outcomes(passed=2)


def test_the_stub_worker_fixture_wins_over_the_mailbox_in_either_order(pytester: pytest.Pytester) -> None:
    inner_module(
        pytester,
        """
from dramatiq_eventbus.testing import published_events

SEEN = []


class Recorder:
    def handle_event(self, event):
        SEEN.append(event)


@pytest.fixture
def recorder_wiring(wiring):
    eventbus.configure(handlers={CallCompleted: [Recorder]}, broker="stub")


def test_mailbox_first(recorder_wiring, event_bus, stub_worker):
    check(stub_worker)


def test_worker_first(recorder_wiring, stub_worker, event_bus):
    check(stub_worker)


def check(worker):
    SEEN.clear()
    complete_call("c1")
    worker.drain()
    assert SEEN == [CallCompleted("c1")]
    assert published_events() == []
""",
    )
    run(pytester).assert_outcomes(passed=2)
