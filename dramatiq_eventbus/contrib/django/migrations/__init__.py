"""The migrations of the outbox and inbox tables (the same schema as dramatiq_eventbus.transactions)."""
