"""Celery tasks: thin shells around ``fleet`` functions. They take ids, never objects,
and are idempotent, so a redelivered or duplicated task changes nothing twice."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_ready
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from bpfleet_api import fleet, notify
from bpfleet_api.db import get_engine
from bpfleet_api.models import ACTIVE_PHASES, Rollout, RolloutPhase, utcnow
from bpfleet_api.settings import get_settings

log = logging.getLogger(__name__)

settings = get_settings()
app = Celery("bpfleet", broker=settings.redis_url)
app.conf.update(
    task_acks_late=True,  # a task whose worker dies is delivered again...
    task_reject_on_worker_lost=True,  # ...instead of being lost
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
)


@app.task(
    name="bpfleet.advance_rollout",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=None,
)
def advance_rollout(rollout_id: int) -> None:
    with Session(get_engine()) as session:
        wait, changes = fleet.advance_rollout(
            session, rollout_id, utcnow(), settings.rollout_tick_seconds
        )
        session.commit()
    notify.publish(settings.redis_url, changes.nodes)
    if wait is not None:
        advance_rollout.apply_async((rollout_id,), countdown=wait)


@worker_ready.connect
def _resume_active_rollouts(**_: object) -> None:
    """A restarted worker picks up every rollout still in motion."""
    with Session(get_engine()) as session:
        active = session.exec(
            select(Rollout.id).where(col(Rollout.phase).in_(ACTIVE_PHASES - {RolloutPhase.PAUSED}))
        ).all()
    for rollout_id in active:
        if rollout_id is not None:
            advance_rollout.delay(rollout_id)
