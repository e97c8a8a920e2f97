"""The outbox and inbox tables on the Django ORM.

The same schema as :class:`dramatiq_eventbus.transactions.Outbox` and
:class:`~dramatiq_eventbus.transactions.Inbox` (names, types, nullability, indexes), so that
the SQLAlchemy :class:`~dramatiq_eventbus.transactions.OutboxRelay` sends what the ORM
writes: the tests compare the migrated tables with those definitions. Defined whether or not
``EVENTBUS["OUTBOX"]`` is on (a model cannot come and go with a setting); the tables stay
empty unless used. Needs Django 5.2 (``CompositePrimaryKey``, ``db_default``).
"""

from __future__ import annotations

import django
from django.db import models
from django.db.models.functions import Now

if django.VERSION < (5, 2):  # pragma: no cover - depends on the installation
    raise ImportError(
        f"dramatiq_eventbus.contrib.django needs Django 5.2 or later (its inbox's primary key is "
        f"composite); this is Django {django.get_version()}"
    )

#: The tables' names: those of the SQLAlchemy Outbox and Inbox when none is given.
OUTBOX_TABLE = "eventbus_outbox"
INBOX_TABLE = "eventbus_inbox"


class OutboxMessage(models.Model):  # type: ignore[misc, unused-ignore]
    """One Dramatiq message a committed transaction published, until a relay sends it.

    Written by the outbox of :func:`~dramatiq_eventbus.contrib.django.outbox.install_outbox`
    (one row per delivery, in the publishing transaction), read and marked by the relay.
    """

    # BIGINT, as the SQLAlchemy table's id (SQLite's auto-increment makes it an INTEGER there too).
    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(db_default=Now())
    queue_name = models.CharField(max_length=255)
    actor_name = models.CharField(max_length=255)
    event_type = models.CharField(max_length=255, null=True)
    partition_key = models.TextField(null=True)
    message = models.BinaryField()
    sent_at = models.DateTimeField(null=True)
    # Set, with why, on a row the relay cannot send (see OutboxRelay).
    failed_at = models.DateTimeField(null=True)
    failure = models.TextField(null=True)

    class Meta:
        db_table = OUTBOX_TABLE
        indexes = [
            # The relay's query: unsent rows in id order; partial, as small as the backlog.
            models.Index(fields=["id"], name=f"ix_{OUTBOX_TABLE}_unsent", condition=models.Q(sent_at__isnull=True)),
            models.Index(fields=["sent_at"], name=f"ix_{OUTBOX_TABLE}_sent_at"),
        ]

    def __str__(self) -> str:
        state = "sent" if self.sent_at else "set aside" if self.failed_at else "unsent"
        return f"outbox row {self.pk} for {self.actor_name} ({state})"


class InboxEntry(models.Model):  # type: ignore[misc, unused-ignore]
    """A handler handled an event in a transaction that committed; see :func:`.inbox.inbox_atomic`."""

    pk = models.CompositePrimaryKey("handler", "event_id")
    # The lengths of transactions.inbox's HANDLER_CHARACTERS and EVENT_ID_CHARACTERS.
    handler = models.CharField(max_length=255)
    event_id = models.CharField(max_length=200)
    handled_at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = INBOX_TABLE
        indexes = [models.Index(fields=["handled_at"], name=f"ix_{INBOX_TABLE}_handled_at")]

    def __str__(self) -> str:
        return f"{self.handler} handled {self.event_id}"
