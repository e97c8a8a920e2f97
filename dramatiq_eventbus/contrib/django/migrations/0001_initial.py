"""The outbox and inbox tables, as dramatiq_eventbus.transactions defines them, and the outbox's NOTIFY trigger."""

from typing import Any

import django.db.models.functions.datetime
from django.db import migrations, models

OUTBOX_TABLE = "eventbus_outbox"


def install_notify_trigger(apps: Any, schema_editor: Any) -> None:
    """On PostgreSQL, the trigger that wakes the relays at each commit of rows, as Outbox.create() installs it.

    It comes from the SQLAlchemy Outbox, which the relay needs anyway; without SQLAlchemy installed
    there is no trigger, and the relay polls (it says so when it starts).
    """
    if schema_editor.connection.vendor != "postgresql":
        return
    try:
        from dramatiq_eventbus.transactions.outbox import Outbox
    except ImportError:
        return
    schema_editor.execute(Outbox(OUTBOX_TABLE).notify_trigger_sql())


def drop_notify_trigger(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'DROP FUNCTION IF EXISTS "{OUTBOX_TABLE}_notify"() CASCADE')


class Migration(migrations.Migration):  # type: ignore[misc, unused-ignore]
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="InboxEntry",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "handler", "event_id", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("handler", models.CharField(max_length=255)),
                ("event_id", models.CharField(max_length=200)),
                ("handled_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                "db_table": "eventbus_inbox",
                "indexes": [models.Index(fields=["handled_at"], name="ix_eventbus_inbox_handled_at")],
            },
        ),
        migrations.CreateModel(
            name="OutboxMessage",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ("queue_name", models.CharField(max_length=255)),
                ("actor_name", models.CharField(max_length=255)),
                ("event_type", models.CharField(max_length=255, null=True)),
                ("partition_key", models.TextField(null=True)),
                ("message", models.BinaryField()),
                ("sent_at", models.DateTimeField(null=True)),
                ("failed_at", models.DateTimeField(null=True)),
                ("failure", models.TextField(null=True)),
            ],
            options={
                "db_table": "eventbus_outbox",
                "indexes": [
                    models.Index(
                        condition=models.Q(("sent_at__isnull", True)), fields=["id"], name="ix_eventbus_outbox_unsent"
                    ),
                    models.Index(fields=["sent_at"], name="ix_eventbus_outbox_sent_at"),
                ],
            },
        ),
        migrations.RunPython(install_notify_trigger, drop_notify_trigger),
    ]
