"""A worker module that configures the bus with a plain Dramatiq RedisBroker made outside it,
as django_dramatiq or flask-dramatiq make theirs: ``dramatiq tests.ordering.plain_broker_worker``."""

from __future__ import annotations

import os

from dramatiq.brokers.redis import RedisBroker

import dramatiq_eventbus as eventbus
from dramatiq_eventbus.environment import arguments_from_env

broker = RedisBroker(url=os.environ["EVENTBUS_BROKER_URL"])
eventbus.configure(**{**arguments_from_env(), "broker": broker})
