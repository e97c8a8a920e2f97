"""The ``eventbus`` command."""

from __future__ import annotations

import pytest

from dramatiq_eventbus.cli import main


def test_routes_lists_each_event_with_its_handlers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "--handlers", "tests.unit.handlers:HANDLERS"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "tests.unit.handlers.OrderCreated"
    assert out[1].startswith("  -> tests.unit.handlers.FinanceHandler  priority=3  max_retries=9")
    assert out[4] == "tests.unit.handlers.OrderShipped"


def test_routes_reports_a_bad_configuration_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTBUS_HANDLERS", raising=False)
    assert main(["routes"]) == 2
    assert capsys.readouterr().err == (
        "eventbus: EVENTBUS_HANDLERS is not set: "
        "set it to 'pkg.module:ATTR' naming your dict of event class to handlers\n"
    )
