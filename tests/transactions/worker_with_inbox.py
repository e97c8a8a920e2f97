"""``dramatiq tests.transactions.worker_with_inbox``: the bus's worker, its handlers' sessions bound with an inbox.

``SessionLocal`` of :mod:`.inbox_handlers` is bound to ``TX_DATABASE_URL`` and to the bus,
with ``Inbox(TX_INBOX_TABLE)``: the lines an application adds to its own worker module.
"""

import os

from sqlalchemy import create_engine

from dramatiq_eventbus.transactions import Inbox, bind_session
from dramatiq_eventbus.worker import broker, bus

from .inbox_handlers import INBOX_TABLE_VAR, SessionLocal

SessionLocal.configure(bind=create_engine(os.environ["TX_DATABASE_URL"], pool_size=4))
bind_session(SessionLocal, bus=bus, inbox=Inbox(os.environ[INBOX_TABLE_VAR]))

__all__ = ["broker", "bus"]
