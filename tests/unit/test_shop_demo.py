"""``make demo``: the shop example shows each order's events in order, and no warning a user cannot act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def run_demo() -> list[str]:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("EVENTBUS_")}
    done = subprocess.run(
        [sys.executable, "-m", "examples.shop.demo"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stderr == ""
    return done.stdout.splitlines()


def test_the_demo_shows_each_orders_events_in_order_per_handler() -> None:
    lines = run_demo()
    finances = [line for line in lines if line.startswith("shop.finances ") and "A-1" in line]
    notifications = [line for line in lines if line.startswith("shop.notifications ") and "A-1" in line]
    # Each handler sees order A-1 created, then cancelled: the refund is the invoiced amount.
    assert [line.split(None, 1)[1] for line in finances] == [
        "invoice for order A-1: 26.99 (2 lines)",
        "order A-1 cancelled (changed my mind); refund 26.99",
    ]
    assert [line.split(None, 1)[1] for line in notifications] == [
        "e-mailed alice about order A-1",
        "told the customer order A-1 is cancelled",
    ]
    # The retry still shows, on the order that is not cancelled.
    assert any("will retry" in line and "A-2" in line for line in lines)
    assert lines[-1].startswith("done:")


def test_the_demo_prints_no_warning_a_user_cannot_act_on() -> None:
    lines = run_demo()
    # Only the demonstrated retry's one line comes from the bus; the rest is the shop's own story.
    from_the_library = [line for line in lines if line.startswith(("dramatiq", "setuptools", "py.warnings"))]
    assert from_the_library == ["dramatiq_eventbus.actors NotificationHandler.handle_event failed: mail server busy"]
