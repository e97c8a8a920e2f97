"""The pytest plugin, loaded through the ``pytest11`` entry point: nothing to add to conftest.

Fixtures:
  event_bus: Records every publish() of the default bus in a fresh mailbox, in
    ``"default"`` mode, for the test's duration. A test that passes fails at its end if
    strict events were not asserted, however it requested the fixture. At teardown, the
    bus gets back the configuration it had when the fixture started.
  stub_worker: A real Dramatiq Worker on a StubBroker for the configured handlers;
    call ``stub_worker.drain()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..bus import EventBus
from .mailbox import EventMailbox, recording
from .stub_worker import StubWorker, WaitingMark, mark_waiting, run_stub_worker

#: The test's mailbox, kept on the test item by the fixture: whoever requested it, by argument
#: or with request.getfixturevalue(), the strict check finds it there.
MAILBOX = pytest.StashKey[EventMailbox]()

#: The messages that waited on the default bus's StubBroker when the test's setup began:
#: left there by earlier tests, they are not this test's to run.
EARLIER_MESSAGES = pytest.StashKey[WaitingMark | None]()


def _default_bus() -> EventBus:
    from .. import default_bus

    return default_bus


@pytest.fixture
def event_bus(request: pytest.FixtureRequest) -> Iterator[EventMailbox]:
    """The test's mailbox: every publish() is recorded (or, in inline mode, handled) here.

    At teardown the default bus is configured again as it was when the fixture started,
    if the test (or a fixture after this one) called configure().
    """
    bus = _default_bus()
    config_at_start = bus.config if bus.is_configured else None
    try:
        # The strict check runs in pytest_runtest_call, so that it fails the test itself, and
        # only a test that passed: a failed one has its own error to show.
        with recording(bus, check=False) as mailbox:
            request.node.stash[MAILBOX] = mailbox
            yield mailbox
    finally:
        # A configure() inside the test would otherwise hold for every test after it.
        # (Before any configure() there is nothing to go back to: a bus cannot be unconfigured.)
        if config_at_start is not None and bus.config is not config_at_start:
            bus.configure(**config_at_start.arguments)


@pytest.fixture(name="stub_worker")
def stub_worker_fixture(request: pytest.FixtureRequest) -> Iterator[StubWorker]:
    """A real Dramatiq Worker on a StubBroker, running the configured handlers; see stub_worker().

    Messages that earlier tests left on the bus's StubBroker are not run; those published
    since this test's setup began are.
    """
    if "event_bus" in request.fixturenames:
        # Whatever order the test names them in, the mailbox starts first, so that the worker
        # finds it and both records and delivers every publish().
        request.getfixturevalue("event_bus")
    with run_stub_worker(_default_bus(), after=request.node.stash.get(EARLIER_MESSAGES, None)) as worker:
        yield worker


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[EARLIER_MESSAGES] = mark_waiting(_default_bus())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    mailbox = item.stash.get(MAILBOX, None)
    if mailbox is not None:
        try:
            mailbox.assert_no_pending_strict_events()
        except AssertionError as failure:
            report = str(failure)
        else:
            return result
        # Raised outside the except block: inside it, pytest would show the AssertionError
        # and then, "during handling" of it, the same text again.
        pytest.fail(report, pytrace=False)
    return result
