"""The requests of test_django_shop.py, made in a process of their own (Django settings never reach the suite).

Run in examples/django_shop with DJANGO_SETTINGS_MODULE=shop_site.settings; prints one JSON
object: the order ids each request reported.
"""

from __future__ import annotations

import json

import django


def main() -> None:
    django.setup()
    from django.test import Client

    client = Client()

    def post(path: str, body: object, status: int) -> dict[str, object]:
        response = client.post(path, body, content_type="application/json")
        assert response.status_code == status, (path, response.status_code, response.content)
        return dict(response.json())

    committed = post("/orders/", {"customer": "ada", "amount_cents": 1200}, 201)["order_id"]
    post("/orders/", {"customer": "bob", "amount_cents": 500_000}, 422)  # over the limit: rolled back
    batch = post(
        "/orders/batch/",
        {
            "orders": [
                {"customer": "cy", "amount_cents": 300},
                {"customer": "di", "amount_cents": 900_000},  # its savepoint rolls back, with its event
                {"customer": "ed", "amount_cents": 700},
            ]
        },
        201,
    )
    last = post("/orders/", {"customer": "flo", "amount_cents": 100}, 201)["order_id"]
    print(json.dumps({"committed": committed, "batch": batch, "last": last}))


if __name__ == "__main__":
    main()
