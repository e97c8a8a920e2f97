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
    # An inner run in this process finds dramatiq_eventbus imported already, and pytest warns
    # that it cannot rewrite its asserts: true only of inner runs, and noise in their output.
    # "-r N": the short summary repeats the failure's text (whole when $CI is set), and the
    # tests below count how often the report appears.
    return pytester.runpytest(
        "-p", "no:hypothesispytest", "-W", "ignore::pytest.PytestAssertRewriteWarning", "-r", "N", *args
    )


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


def test_the_stub_worker_fixture_and_the_mailbox_work_together_in_either_order(pytester: pytest.Pytester) -> None:
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
    set_event_bus_mode("strict")
    complete_call("c1")
    worker.drain()
    assert SEEN == [CallCompleted("c1")]
    assert published_events() == [CallCompleted("c1")]
    assert_event_published(CallCompleted, call_id="c1")


def test_an_unasserted_event_fails_a_stub_worker_test_too(event_bus, stub_worker):
    set_event_bus_mode("strict")
    complete_call("c2")
    stub_worker.drain()
""",
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_an_unasserted_event_fails_a_stub_worker_test_too*", "Unasserted events*"])


# -- the strict check, however event_bus was requested ------------------------------------------

FORGETFUL_TESTS = {
    "as_an_argument": """
def test_forgets(event_bus):
    set_event_bus_mode("strict")
    complete_call("c1")
""",
    "by_name_in_the_test": """
def test_forgets(request):
    request.getfixturevalue("event_bus")
    set_event_bus_mode("strict")
    complete_call("c1")
""",
    "by_name_in_a_fixture": """
@pytest.fixture
def strict_bus(request):
    request.getfixturevalue("event_bus")
    set_event_bus_mode("strict")


def test_forgets(strict_bus):
    complete_call("c1")
""",
    "by_a_fixture_that_names_it": """
@pytest.fixture
def strict_bus(event_bus):
    set_event_bus_mode("strict")


def test_forgets(strict_bus):
    complete_call("c1")
""",
}


@pytest.mark.parametrize("requested", FORGETFUL_TESTS)
def test_the_strict_check_runs_however_event_bus_was_requested_and_reports_once(
    pytester: pytest.Pytester, requested: str
) -> None:
    inner_module(pytester, FORGETFUL_TESTS[requested])
    result = run(pytester)
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert output.count("Unasserted events published in strict mode:") == 1, output
    assert output.count("CallCompleted(call_id='c1')") == 1, output
    assert "During handling of the above exception" not in output


# -- every test starts from the suite's configuration --------------------------------------------

SUITE_CONFIGURED = """
from dataclasses import dataclass

import pytest

import dramatiq_eventbus as eventbus
from dramatiq_eventbus.testing import set_event_bus_mode

SEEN = []


@dataclass(frozen=True)
class CallCompleted:
    call_id: str


class Billing:
    def handle_event(self, event):
        SEEN.append(("billing", event))


class Other:
    def handle_event(self, event):
        SEEN.append(("other", event))


@pytest.fixture(scope="session", autouse=True)
def suite_configuration():
    eventbus.configure(handlers={CallCompleted: [Billing]}, broker="stub", default_actor_options={"max_retries": 1})


def test_reconfigures_for_itself(event_bus):
    eventbus.configure(handlers={CallCompleted: [Other]}, broker="stub")
    set_event_bus_mode("inline")
    eventbus.publish(CallCompleted("c1"))
    assert SEEN == [("other", CallCompleted("c1"))]


def test_relies_on_the_suite_s_configuration(event_bus):
    SEEN.clear()
    set_event_bus_mode("inline")
    eventbus.publish(CallCompleted("c2"))
    assert SEEN == [("billing", CallCompleted("c2"))]
    assert eventbus.default_bus.config.arguments["default_actor_options"] == {"max_retries": 1}


def test_and_without_the_mailbox_too():
    assert eventbus.default_bus.config.registry.handlers_for(CallCompleted)[0].handler_class is Billing
"""


def test_a_configure_inside_a_test_does_not_reach_the_next_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE_CONFIGURED)
    run(pytester).assert_outcomes(passed=3)


# -- the stub worker fixture runs what this test published before it, not what earlier tests left --

EARLIER_PUBLISHES = """
from dataclasses import dataclass

import pytest

import dramatiq_eventbus as eventbus
from dramatiq_eventbus.testing import published_events

SEEN = []


@dataclass(frozen=True)
class CallCompleted:
    call_id: str


class Billing:
    def handle_event(self, event):
        SEEN.append(event.call_id)


@pytest.fixture(scope="session", autouse=True)
def suite_configuration():
    eventbus.configure(handlers={CallCompleted: [Billing]}, broker="stub")


@pytest.fixture(autouse=True)
def clear():
    SEEN.clear()


@pytest.fixture
def call():
    eventbus.publish(CallCompleted("setup"))


def test_leaves_a_message_on_the_suite_s_broker():
    eventbus.publish(CallCompleted("earlier"))


def test_runs_only_what_it_published(call, stub_worker):
    eventbus.publish(CallCompleted("test"))
    stub_worker.drain()
    assert SEEN == ["setup", "test"]


def test_with_the_mailbox_after_the_fixture(call, event_bus, stub_worker):
    eventbus.publish(CallCompleted("test"))
    stub_worker.drain()
    assert SEEN == ["setup", "test"]
    assert published_events() == [CallCompleted("test")]


def test_with_the_mailbox_before_the_fixture(event_bus, call, stub_worker):
    eventbus.publish(CallCompleted("test"))
    stub_worker.drain()
    assert SEEN == ["setup", "test"]
    assert published_events() == [CallCompleted("setup"), CallCompleted("test")]
"""


def test_the_stub_worker_runs_what_its_test_published_before_it_but_not_earlier_tests(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_earlier=EARLIER_PUBLISHES)
    run(pytester).assert_outcomes(passed=4)
