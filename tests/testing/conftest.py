"""The testing toolkit's own tests: every test starts with the default bus configured on a stub broker."""

from __future__ import annotations

import pytest

import dramatiq_eventbus as eventbus

from .events import HANDLERS, JOURNAL


def pytest_configure(config: pytest.Config) -> None:
    # pytester, for the plugin's inner test runs. Not `pytest_plugins = ["pytester"]`: pytest
    # refuses that in a conftest below the rootdir whenever it is loaded late, as under `pytest .`.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture(autouse=True)
def configured() -> eventbus.EventBus:
    """Configured before any other fixture, so a mailbox sees a configuration made before it started."""
    JOURNAL.clear()
    return eventbus.configure(handlers=HANDLERS, broker="stub")
