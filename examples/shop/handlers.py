"""The wiring: which handlers each event goes to.

The Python twin of the reference's ``config/event_handlers.exs``. Strings keep the
contexts from importing each other; configure(handlers="examples.shop.handlers:HANDLERS").
"""

HANDLERS = {
    "examples.shop.orders.events:OrderCreated": [
        "examples.shop.finances.handlers:FinanceEventHandler",
        "examples.shop.notifications.handlers:NotificationHandler",
    ],
    "examples.shop.orders.events:OrderCancelled": [
        "examples.shop.finances.handlers:FinanceEventHandler",
        "examples.shop.notifications.handlers:NotificationHandler",
    ],
}
