from django.urls import path
from finances.views import invoices
from orders.views import place_order, place_orders

urlpatterns = [
    path("orders/", place_order),
    path("orders/batch/", place_orders),
    path("invoices/", invoices),
]
