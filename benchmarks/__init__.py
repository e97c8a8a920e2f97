"""Benchmarks of issue 6: the bus against raw Dramatiq (and Celery), side by side, on real brokers.

``make bench`` (``python -m benchmarks``) runs the scenarios of :mod:`benchmarks.scenarios`
and writes ``benchmarks/results/latest.json``; ``--smoke`` runs each at a tiny size (part of
``make test``). Single measurements live beside it: ``python -m benchmarks.codec``.

runner.py      sizes, side-by-side rounds, the table, the JSON, the machine
workload.py    the events, no-op handlers and raw actors both sides run, and their stats
deploy.py      a bus and a raw baseline on one broker, the workers, the clean-up
workers.py     ``dramatiq``/``celery`` CLI workers: start, pause, resume, drain rate, CPU time
raw_worker.py  the baseline's worker module; celery_app.py the Celery one
scenarios/     one module per scenario (1-4 share one)
"""
