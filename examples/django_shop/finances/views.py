from django.http import HttpRequest, JsonResponse

from .models import Invoice


def invoices(request: HttpRequest) -> JsonResponse:
    """GET: every invoice, oldest first."""
    rows = Invoice.objects.order_by("id").values("order_id", "customer", "amount_cents")
    return JsonResponse({"invoices": list(rows)})
