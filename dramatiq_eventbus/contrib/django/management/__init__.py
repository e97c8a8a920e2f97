"""Management commands of the Django app: eventbus, eventbus_outbox_relay."""
