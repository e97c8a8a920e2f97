from django.apps import AppConfig


class FinancesConfig(AppConfig):
    name = "finances"
