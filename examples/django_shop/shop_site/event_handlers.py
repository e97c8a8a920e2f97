"""Which handlers each event goes to (settings.EVENTBUS["HANDLERS"]). Strings keep the apps apart."""

HANDLERS = {
    "orders.events:OrderPlaced": ["finances.handlers:CreateInvoice"],
}
