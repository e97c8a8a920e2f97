"""The relay's settings from EVENTBUS_OUTBOX_* variables, and its middleware for the dramatiq worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from dramatiq_eventbus import ConfigurationError, EventBus
from dramatiq_eventbus.environment import OUTBOX_VARIABLES
from dramatiq_eventbus.middleware.outbox_relay import OutboxRelayMiddleware, install_from_env
from dramatiq_eventbus.transactions import RelaySettings

from .handlers import HANDLERS

URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_settings_come_from_the_variables_and_arguments_win() -> None:
    settings = RelaySettings.from_env(
        {
            "EVENTBUS_OUTBOX_URL": URL,
            "EVENTBUS_OUTBOX_TABLE": "app.outbox",
            "EVENTBUS_OUTBOX_BATCH_SIZE": "50",
            "EVENTBUS_OUTBOX_POLL_SECONDS": "0.5",
            "EVENTBUS_OUTBOX_PRUNE_AFTER_SECONDS": "0",
        },
        batch_size=7,
        table=None,
    )
    assert settings == RelaySettings(URL, "app.outbox", 7, 0.5, None)
    assert RelaySettings.from_env({"EVENTBUS_OUTBOX_URL": URL}) == RelaySettings(URL)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "set EVENTBUS_OUTBOX_URL \\(or --url\\)"),
        (
            {"EVENTBUS_OUTBOX_URL": URL, "EVENTBUS_OUTBOX_BATCH_SIZE": "many"},
            "EVENTBUS_OUTBOX_BATCH_SIZE must be a whole",
        ),
        (
            {"EVENTBUS_OUTBOX_URL": URL, "EVENTBUS_OUTBOX_POLL_SECONDS": "-1"},
            "EVENTBUS_OUTBOX_POLL_SECONDS must be more",
        ),
    ],
)
def test_wrong_settings_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RelaySettings.from_env(environ)


def test_every_outbox_variable_fills_a_setting_is_documented_and_states_its_default() -> None:
    # The relay's variables are in the manual's transactions guide.
    guide = (Path(__file__).parents[2] / "docs" / "guides" / "transactions.md").read_text()
    assert [v.name for v in OUTBOX_VARIABLES if f"`{v.name}`" not in guide] == []
    settings = RelaySettings(URL)
    for variable in OUTBOX_VARIABLES[1:]:  # the URL has no default
        default = getattr(settings, variable.argument)
        shown = repr(default) if isinstance(default, str) else f"{default:g}"
        assert f"Default {shown}." in variable.help


def test_the_worker_gets_a_relay_only_when_the_outbox_url_is_set() -> None:
    bus = EventBus().configure(handlers=HANDLERS, broker="stub")
    assert install_from_env(bus, {}) is None
    installed = install_from_env(bus, {"EVENTBUS_OUTBOX_URL": URL})
    assert isinstance(installed, OutboxRelayMiddleware)
    assert install_from_env(bus, {"EVENTBUS_OUTBOX_URL": URL}) is installed
    assert [m for m in bus.broker.middleware if isinstance(m, OutboxRelayMiddleware)] == [installed]
