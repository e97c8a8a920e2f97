"""The Django outbox and inbox (dramatiq_eventbus.contrib.django), against PostgreSQL, Redis and a dramatiq worker.

Django runs only in subprocesses (``python -m tests.django_orm.scenarios``, ``django-admin``, the
worker), configured by :mod:`.settings` from variables: its settings never reach the other tests.
"""
