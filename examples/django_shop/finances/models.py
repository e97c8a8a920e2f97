from django.db import models


class Invoice(models.Model):
    order_id = models.BigIntegerField(unique=True)
    customer = models.CharField(max_length=100)
    amount_cents = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
