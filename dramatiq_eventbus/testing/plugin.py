"""The pytest plugin, loaded through the ``pytest11`` entry point: nothing to add to conftest.

Fixtures:
  event_bus: Records every publish() of the default bus in a fresh mailbox, in
    ``"default"`` mode, for the test's duration. A test that passes fails at its end if
    strict events were not asserted.
  stub_worker: A real Dramatiq Worker on a StubBroker for the configured handlers;
    call ``stub_worker.drain()``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .mailbox import EventMailbox, recording
from .stub_worker import StubWorker, stub_worker


@pytest.fixture
def event_bus() -> Iterator[EventMailbox]:
    """The test's mailbox: every publish() is recorded (or, in inline mode, handled) here."""
    # The strict check runs in pytest_runtest_call, so that it fails the test itself, and
    # only a test that passed: a failed one has its own error to show.
    with recording(check=False) as mailbox:
        yield mailbox


@pytest.fixture(name="stub_worker")
def stub_worker_fixture(request: pytest.FixtureRequest) -> Iterator[StubWorker]:
    """A real Dramatiq Worker on a StubBroker, running the configured handlers; see stub_worker()."""
    if "event_bus" in request.fixturenames:
        # Whatever order the test names them in, the mailbox starts first, so the worker's
        # redirect is the inner one and publish() reaches the broker.
        request.getfixturevalue("event_bus")
    with stub_worker() as worker:
        yield worker


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    mailbox = getattr(item, "funcargs", {}).get("event_bus")
    if isinstance(mailbox, EventMailbox):
        try:
            mailbox.assert_no_pending_strict_events()
        except AssertionError as failure:
            pytest.fail(str(failure), pytrace=False)
    return result
