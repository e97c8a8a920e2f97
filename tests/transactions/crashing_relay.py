"""``python -m tests.transactions.crashing_relay``: a relay that is SIGKILLed after sending, before marking.

Configured from the same EVENTBUS_* variables as the ``outbox-relay`` command. It runs one pass.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

from sqlalchemy.engine import Connection

from dramatiq_eventbus import EventBus
from dramatiq_eventbus.environment import arguments_from_env
from dramatiq_eventbus.transactions import OutboxRelay, RelaySettings


class CrashingRelay(OutboxRelay):
    def _mark_sent(self, connection: Connection, ids: Sequence[int]) -> None:
        print(f"sent {len(ids)} row(s); dying before marking them", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    bus = EventBus().configure(**arguments_from_env())
    CrashingRelay.from_settings(RelaySettings.from_env(), bus=bus).relay_once()
    raise SystemExit("the relay was meant to die before marking")


if __name__ == "__main__":
    main()
